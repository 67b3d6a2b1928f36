"""How the benchmark figures are defined, and where tools name them differently (zh, en):
the report's definitions section and the Day 4 log's notes."""

from __future__ import annotations

from lab.core.lang import pick

#: (term, zh, en): the same definitions as `vllm bench serve`, so the numbers compare directly.
DEFINITIONS = (
    (
        "TTFT",
        "首 token 延迟：发出 POST 前开始计时，到第一个带 choices 的流式块。",
        "Time to first token: from just before the POST to the first streamed chunk with choices.",
    ),
    (
        "TPOT",
        "每请求：(E2EL − TTFT) / (输出 token 数 − 1)，只算输出 > 1 的请求。",
        "Per request: (E2EL - TTFT) / (output tokens - 1), for outputs of more than one token.",
    ),
    (
        "ITL",
        "相邻两个流式块之间的间隔，所有请求合并统计。",
        "The gaps between successive chunks, pooled across requests.",
    ),
    (
        "E2EL",
        "端到端延迟：到最后一个带 choices 的块。",
        "End-to-end latency: until the last chunk with choices.",
    ),
    (
        "tok/s · req/s",
        "输出 token 取自 usage.completion_tokens；吞吐 = 总量 ÷ 从第一个发送到最后一个完成的墙钟时间。",
        "Output tokens come from usage.completion_tokens; throughput = total ÷ the wall time "
        "from the first send to the last finish.",
    ),
    (
        "mean · median · p90 · p99",
        "numpy.percentile（线性插值）；只统计成功且非预热的请求。",
        "numpy.percentile (linear); successful, non-warm-up requests only.",
    ),
    (
        "concurrency",
        "由信号量限制；等待并发名额的时间单独记录，不计入 TTFT。",
        "Capped by a semaphore; time spent waiting for a slot is recorded apart, not added to TTFT.",
    ),
    (
        "workload",
        "固定长度的合成 prompt、ignore_eos，每个并发级别前先预热。",
        "Synthetic prompts of a fixed token length, ignore_eos, a warm-up before each level.",
    ),
)

#: (zh, en): names that differ between tools.
NAMING = (
    (
        "GuideLLM 的 “ITL” ≈ 这里（和 vLLM）的 TPOT；llmperf 的 ITL 包含 TTFT。比较不同工具的数字前先对齐定义。",
        "GuideLLM's \"ITL\" ≈ TPOT here (and in vLLM); llmperf's ITL includes TTFT. Align the "
        "definitions before comparing numbers from different tools.",
    ),
    (
        "种子脚本的“平均延迟”是非流式请求的端到端时间（含全部输出 token），不是 TTFT。",
        "The seed script's \"average latency\" is a non-streamed request's end-to-end time (all "
        "output tokens included), not TTFT.",
    ),
)


def definitions(lang: str) -> list[tuple[str, str]]:
    return [(term, pick(lang, zh, en)) for term, zh, en in DEFINITIONS]


def naming(lang: str) -> list[str]:
    return [pick(lang, zh, en) for zh, en in NAMING]
