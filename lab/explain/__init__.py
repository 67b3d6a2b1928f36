"""The bilingual explanations as data (zh, en), in one place: what the key `vllm:` series
mean and the seeds' old names for them (`metrics`), what each vLLM flag and environment
variable does (`flags`), seed 002's key-parameter table (`params`), how the benchmark
figures are defined (`bench`), and the longer notes the deliverables print (`notes`).

The lowest layer above lab.core: everything may read it; it reads nothing of the lab."""
