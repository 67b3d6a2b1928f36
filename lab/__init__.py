"""vllm-lab: the vLLM learning checklist, done, verified and recorded.

Nothing in this package imports vllm, torch or transformers: those run as subprocesses
of the vLLM env's python (see lab.vllm.env), so `invoke --list` stays fast.
"""
