"""Seed 002 §4's key-parameter table: each flag, the engine field vLLM keeps it in, what it
means (zh, en) and the seed's default; and where this vLLM and profile differ from the seed."""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.lang import pick

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class SeedParam:
    flag: str
    name: str  # the engine field (LLM(...) keyword)
    meaning_zh: str
    meaning_en: str
    seed_default: str | int | float | bool

    def meaning(self, lang: str) -> str:
        return pick(lang, self.meaning_zh, self.meaning_en)


# Seed 002 §4: flag, engine field, meaning (zh, en), the seed's default.
SEED_PARAMS: tuple[SeedParam, ...] = tuple(
    SeedParam(*row)
    for row in (
        (
            "--model",
            "model",
            "模型路径或HuggingFace ID",
            "model path or Hugging Face id",
            "必填 / required",
        ),
        (
            "--tensor-parallel-size",
            "tensor_parallel_size",
            "TP并行GPU数量",
            "GPUs for tensor parallelism",
            1,
        ),
        (
            "--pipeline-parallel-size",
            "pipeline_parallel_size",
            "PP并行阶段数",
            "pipeline-parallel stages",
            1,
        ),
        (
            "--gpu-memory-utilization",
            "gpu_memory_utilization",
            "GPU显存使用比例（0-1）",
            "fraction of GPU memory vLLM may use (0-1)",
            0.9,
        ),
        (
            "--max-model-len",
            "max_model_len",
            "最大序列长度（影响KV Cache预分配）",
            "longest sequence (sizes the KV-cache preallocation)",
            "模型默认 / model default",
        ),
        (
            "--block-size",
            "block_size",
            "PagedAttention的Block大小",
            "PagedAttention block size (tokens)",
            16,
        ),
        ("--swap-space", "swap_space", "CPU swap空间大小（GB）", "CPU swap space (GB)", 4),
        (
            "--max-num-batched-tokens",
            "max_num_batched_tokens",
            "每步最大batch token数",
            "most tokens batched per step",
            "自动 / auto",
        ),
        ("--max-num-seqs", "max_num_seqs", "最大并发序列数", "most concurrent sequences", 256),
        (
            "--enable-prefix-caching",
            "enable_prefix_caching",
            "启用Prefix Cache",
            "prefix caching on",
            False,
        ),
        ("--dtype", "dtype", "数据类型（auto/half/float16/bfloat16）", "data type", "auto"),
    )
)

BY_NAME: dict[str, SeedParam] = {p.name: p for p in SEED_PARAMS}


def note(name: str, value: Scalar, present: bool, on_gpu: bool, lang: str) -> str:
    """Where this vLLM and profile differ from what the seed says about `name`."""
    zh = pick(lang, True, False)
    if not present:
        return (
            "此版本 vLLM 已无此参数（V1 引擎不再使用 CPU swap）"
            if zh
            else "not a parameter of this vLLM (the V1 engine has no CPU swap)"
        )
    if name == "gpu_memory_utilization" and not on_gpu:
        return (
            "CPU 上不起作用：KV cache 大小由 VLLM_CPU_KVCACHE_SPACE 决定"
            if zh
            else "no effect on CPU: VLLM_CPU_KVCACHE_SPACE sizes the KV cache"
        )
    if name == "block_size" and value != 16:
        where = (
            ("；CPU 后端的默认值" if zh else "; the CPU backend's default") if not on_gpu else ""
        )
        return (
            f"本次为 {value}（种子说默认 16{where}）"
            if zh
            else f"{value} here (the seed says 16{where})"
        )
    if name == "enable_prefix_caching" and value is True:
        return (
            "V1 引擎默认开启（种子写的是 False）"
            if zh
            else "on by default in the V1 engine (the seed says False)"
        )
    return ""
