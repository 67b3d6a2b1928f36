"""Offline inference with vLLM's `LLM.generate`, run by the vLLM env's python.

One engine load, then a list of timed runs (Day 5's seed example and batch-size sweep, or
`invoke compare`'s vLLM side). Prints ONE JSON line on stdout; vLLM's own log goes to stderr
when the caller sets `VLLM_LOGGING_STREAM=ext://sys.stderr` (the lab does), where
`lab.vllm.logparse` reads the startup facts from it.

The runs file (JSON):

    {"warmup": true,
     "runs": [{"name": "batch-4", "prompts": ["Hello, my name is", ...]      # text, or
               "prompt_ids": [[id, ...], ...],                             # token ids
               "sampling": {"temperature": 0.8, "max_tokens": 100, ...},   # SamplingParams
               "model_defaults": false,   # start from the model's generation_config first
               "keep_text": false}]}      # put the generated text in the output

Per run it reports: wall time of the `generate` call (`elapsed_s`), prompt and output tokens
(`len(output.token_ids)`: token ids, as the HF side counts them), `output_tok_s` =
output_tokens / elapsed_s, and per request the engine's timestamps turned into TTFT and
end-to-end latency from the start of the call (every request arrives at that moment).

Engine facts: the KV-cache block count and block size the engine allocated, and the effective
values of the seed's key parameters (Day 5 §4), read from the engine's config objects.

Memory: a thread samples, every 0.2 s, the RSS of this process and all its children (the
EngineCore and worker processes; shared pages count in each) and, on CUDA, NVML's used memory
of the visible GPUs (device-wide: other processes included).

    python offline_generate.py --model DIR --runs-file runs.json [--load-format dummy] \
        [--tp 1] [--max-model-len 2048] [--gpu-memory-utilization 0.9] [--deadline-s 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

from script_common import MIB, deadline

# Seed 002 §4's key parameters -> where the engine keeps the effective value.
PARAMS = {
    "model": ("model_config", "model"),
    "tensor_parallel_size": ("parallel_config", "tensor_parallel_size"),
    "pipeline_parallel_size": ("parallel_config", "pipeline_parallel_size"),
    "gpu_memory_utilization": ("cache_config", "gpu_memory_utilization"),
    "max_model_len": ("model_config", "max_model_len"),
    "block_size": ("cache_config", "block_size"),
    "swap_space": ("cache_config", "swap_space"),
    "max_num_batched_tokens": ("scheduler_config", "max_num_batched_tokens"),
    "max_num_seqs": ("scheduler_config", "max_num_seqs"),
    "enable_prefix_caching": ("cache_config", "enable_prefix_caching"),
    "dtype": ("model_config", "dtype"),
}


class MemorySampler(threading.Thread):
    """Peak RSS of this process tree and, on CUDA, peak NVML used memory per GPU."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.peak_tree_rss_mib = 0.0
        self.peak_gpu_used_mib: dict[str, float] = {}
        self.gpu_total_mib: dict[str, float] = {}
        self.samples = 0
        self._nvml = None
        self._handles: dict[str, object] = {}

    def use_gpus(self, indices: list[int]) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = {str(i): pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices}
        except Exception as err:
            print(f"NVML unavailable: {err}", file=sys.stderr)

    def sample(self) -> None:
        import psutil

        try:
            me = psutil.Process()
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0.0
        for p in procs:
            try:
                rss += p.memory_info().rss / MIB
            except psutil.Error:
                continue
        self.peak_tree_rss_mib = max(self.peak_tree_rss_mib, rss)
        for key, handle in self._handles.items():
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                continue
            self.peak_gpu_used_mib[key] = max(self.peak_gpu_used_mib.get(key, 0.0), mem.used / MIB)
            self.gpu_total_mib[key] = mem.total / MIB
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
        self.sample()


def visible_gpus(tp: int) -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [int(v) for v in visible.split(",") if v.strip().isdigit()]
    return ids[:tp] if ids else list(range(tp))


def engine_facts(llm) -> dict:
    """KV-cache blocks and the seed's key parameters, from the engine's config objects."""
    cfg = llm.llm_engine.vllm_config
    params, missing = {}, []
    for name, (part, attr) in PARAMS.items():
        obj = getattr(cfg, part, None)
        if obj is None or not hasattr(obj, attr):
            missing.append(name)  # not a field of this vLLM version
            continue
        value = getattr(obj, attr)
        params[name] = (
            value if isinstance(value, (int, float, bool, str, type(None))) else str(value)
        )
    cache = cfg.cache_config
    return {
        "params": params,
        "params_missing": missing,
        "num_gpu_blocks": getattr(cache, "num_gpu_blocks", None),
        "num_cpu_blocks": getattr(cache, "num_cpu_blocks", None),
        "block_size": getattr(cache, "block_size", None),
        "kv_cache_memory_bytes": getattr(cache, "kv_cache_memory_bytes", None),
        "device": str(getattr(getattr(cfg, "device_config", None), "device_type", "") or ""),
    }


def make_prompts(run: dict) -> list:
    if "prompt_ids" in run:
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=[int(i) for i in ids]) for ids in run["prompt_ids"]]
    return list(run["prompts"])


def sampling_params(llm, run: dict):
    from vllm import SamplingParams

    base = (
        dict(llm.llm_engine.vllm_config.model_config.get_diff_sampling_param())
        if run.get("model_defaults")
        else {}
    )
    base.pop("max_tokens", None)
    merged = {**base, **run.get("sampling", {})}
    return SamplingParams(**merged), merged


def timed_run(llm, run: dict) -> dict:
    prompts = make_prompts(run)
    params, effective = sampling_params(llm, run)
    t0 = time.monotonic()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.monotonic() - t0
    requests = []
    for out in outputs:
        comp = out.outputs[0]
        m = out.metrics  # engine timestamps (time.monotonic, the same clock across processes)
        req = {
            "prompt_tokens": len(out.prompt_token_ids or []),
            "output_tokens": len(comp.token_ids),
            "finish_reason": comp.finish_reason,
            "ttft_s": None,
            "e2el_s": None,
        }
        if m is not None and getattr(m, "last_token_ts", 0):
            req["ttft_s"] = m.first_token_ts - t0
            req["e2el_s"] = m.last_token_ts - t0
        if run.get("keep_text"):
            req["prompt"] = out.prompt
            req["text"] = comp.text
        requests.append(req)
    tokens = sum(r["output_tokens"] for r in requests)
    e2el = [r["e2el_s"] for r in requests if r["e2el_s"] is not None]
    return {
        "name": run.get("name"),
        "n": len(requests),
        "elapsed_s": elapsed,
        "prompt_tokens": sum(r["prompt_tokens"] for r in requests),
        "output_tokens": tokens,
        "output_tok_s": tokens / elapsed if elapsed > 0 else None,
        "samples_per_min": len(requests) / elapsed * 60 if elapsed > 0 else None,
        "latency_s": sum(e2el) / len(e2el) if len(e2el) == len(requests) and e2el else None,
        "latency_basis": "engine timestamps" if e2el else None,
        "sampling": {k: v for k, v in effective.items() if isinstance(v, (int, float, bool, str))},
        "requests": requests,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs-file", required=True, type=Path)
    ap.add_argument("--load-format", default=None, help="dummy: random weights (rehearsal)")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--gpu-memory-utilization", type=float, default=None)
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--deadline-s", type=float, default=0)
    args = ap.parse_args(argv)
    deadline(args.deadline_s, "offline_generate.py")
    spec = json.loads(args.runs_file.read_text(encoding="utf-8"))

    sampler = MemorySampler()
    sampler.start()
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    on_cuda = current_platform.is_cuda()
    if on_cuda:
        sampler.use_gpus(visible_gpus(args.tp))
    kwargs = {
        "model": args.model,
        "tensor_parallel_size": args.tp,
        "max_model_len": args.max_model_len,
        "disable_log_stats": False,
    }  # keeps per-request timestamps in RequestOutput.metrics
    if args.load_format:
        kwargs["load_format"] = args.load_format
    if args.gpu_memory_utilization is not None and on_cuda:
        kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
    if args.served_model_name:
        kwargs["served_model_name"] = args.served_model_name
    started = time.monotonic()
    llm = LLM(**kwargs)
    load_s = time.monotonic() - started
    facts = engine_facts(llm)
    warmup_s = None
    if spec.get("warmup", True):
        t0 = time.monotonic()
        llm.generate(["Hello"], SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)
        warmup_s = time.monotonic() - t0
    runs = [timed_run(llm, run) for run in spec["runs"]]
    sampler.stop()
    memory = {
        "peak_tree_rss_mib": sampler.peak_tree_rss_mib,
        "samples": sampler.samples,
        "ru_maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB,
    }
    if on_cuda:
        util = facts["params"].get("gpu_memory_utilization")
        memory["gpus"] = [
            {
                "index": k,
                "peak_used_mib": sampler.peak_gpu_used_mib.get(k),
                "total_mib": total,
                "reserved_budget_mib": total * util if util else None,
            }
            for k, total in sampler.gpu_total_mib.items()
        ]
    print(
        json.dumps(
            {
                "ok": True,
                "side": "vllm",
                "vllm": vllm.__version__,
                "cuda": on_cuda,
                "load_s": load_s,
                "warmup_s": warmup_s,
                "engine": facts,
                "runs": runs,
                "memory": memory,
            }
        ),
        flush=True,
    )
    del llm  # shut the engine processes down before exiting
    return 0


if __name__ == "__main__":  # required: vLLM starts its engine with multiprocessing (spawn)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
