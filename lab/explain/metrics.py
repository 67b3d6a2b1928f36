"""What the key `vllm:` series mean, the names the seeds cite for them and what vLLM exports
instead today, and what the figures a server counted during a benchmark mean in plain words:
bilingual explanations as data (zh, en).

Names, types and units follow vLLM 0.32's `vllm/v1/metrics/loggers.py` (PrometheusStatLogger).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.fmt import fixed, num
from lab.core.lang import pick


@dataclass(frozen=True)
class SeriesInfo:
    """A key series for the Day 3/4 "关键指标解读" (key metrics explained)."""

    name: str
    kind: str  # gauge | counter | histogram
    unit: str
    zh: str
    en: str
    #: The name the seeds cite for it, if any (see OLD_NAMES).
    old_name: str | None = None
    #: How label sets combine for a gauge: "sum" for counts, "mean" for fractions.
    how: str = "sum"

    def meaning(self, lang: str) -> str:
        return pick(lang, self.zh, self.en)


KEY_SERIES: tuple[SeriesInfo, ...] = (
    SeriesInfo(
        "vllm:num_requests_running",
        "gauge",
        "requests",
        "正在引擎批次里执行（预填充或解码）的请求数",
        "Requests in the engine's running batch (prefill or decode) right now",
    ),
    SeriesInfo(
        "vllm:num_requests_waiting",
        "gauge",
        "requests",
        "排队等待调度的请求数；持续大于 0 说明服务已饱和",
        "Requests queued for scheduling; staying above 0 means the server is saturated",
    ),
    SeriesInfo(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "fraction 0-1",
        "KV Cache 块的占用比例（0–1，1 = 100%）；接近 1 时请求会被抢占",
        "Fraction of KV-cache blocks in use (0-1, 1 = 100 %); near 1, requests get preempted",
        old_name="vllm:gpu_cache_usage_perc",
        how="mean",
    ),
    SeriesInfo(
        "vllm:time_to_first_token_seconds",
        "histogram",
        "s (mean)",
        "首 token 延迟 TTFT：请求到达到第一个输出 token 的时间",
        "Time to first token (TTFT): from arrival to the first output token",
        old_name="vllm:time_to_first_token_ms",
    ),
    SeriesInfo(
        "vllm:inter_token_latency_seconds",
        "histogram",
        "s (mean)",
        "相邻两次输出之间的间隔（ITL），所有请求合并统计",
        "Inter-token latency (ITL): the gap between successive outputs, pooled over requests",
        old_name="vllm:time_per_output_token_ms",
    ),
    SeriesInfo(
        "vllm:request_time_per_output_token_seconds",
        "histogram",
        "s (mean)",
        "每个请求的平均每 token 解码时间（TPOT）= 解码时间 / (输出 token 数 − 1)",
        "Time per output token (TPOT) of each request = decode time / (output tokens - 1)",
        old_name="vllm:time_per_output_token_ms",
    ),
    SeriesInfo(
        "vllm:e2e_request_latency_seconds",
        "histogram",
        "s (mean)",
        "端到端请求延迟：从到达到最后一个 token",
        "End-to-end request latency: from arrival to the last token",
    ),
    SeriesInfo(
        "vllm:request_queue_time_seconds",
        "histogram",
        "s (mean)",
        "请求在 WAITING 队列里等待调度的时间",
        "Time a request spent waiting in the queue before it was scheduled",
    ),
    SeriesInfo(
        "vllm:prompt_tokens_total",
        "counter",
        "tokens",
        "累计处理的 prompt（预填充）token 数",
        "Prompt (prefill) tokens processed since startup",
    ),
    SeriesInfo(
        "vllm:generation_tokens_total",
        "counter",
        "tokens",
        "累计生成的输出 token 数",
        "Output tokens generated since startup",
    ),
    SeriesInfo(
        "vllm:num_preemptions_total",
        "counter",
        "preemptions",
        "累计抢占次数：KV Cache 不够时把请求踢回队列、之后重算",
        "Preemptions since startup: requests evicted when the KV cache ran out, recomputed later",
    ),
    SeriesInfo(
        "vllm:request_success_total",
        "counter",
        "requests",
        "已完成的请求数（标签 finished_reason：stop、length、abort…）",
        "Finished requests since startup (label finished_reason: stop, length, abort, …)",
    ),
)


@dataclass(frozen=True)
class OldName:
    """A metric name the seeds cite, and what vLLM exports instead today."""

    #: Today's series (empty: removed, no replacement).
    current: tuple[str, ...]
    zh: str
    en: str

    def note(self, lang: str) -> str:
        return pick(lang, self.zh, self.en)


OLD_NAMES: dict[str, OldName] = {
    "vllm:gpu_cache_usage_perc": OldName(
        ("vllm:kv_cache_usage_perc",),
        "V1 引擎改名为 vllm:kv_cache_usage_perc（vLLM PR #18354 弃用旧名），vLLM 0.32 已不再导出旧名；"
        "含义不变：0–1 的比例，不是百分数。",
        "Renamed vllm:kv_cache_usage_perc in the V1 engine (old name deprecated by vLLM PR #18354) "
        "and no longer exported by vLLM 0.32; same meaning: a 0-1 fraction, not a percentage.",
    ),
    "vllm:cpu_cache_usage_perc": OldName(
        (),
        "V1 引擎已删除，没有替代：V1 不再把 KV 交换到 CPU。CPU 后端的 KV 占用也记在 "
        "vllm:kv_cache_usage_perc；开启 KV offloading 时看 vllm:kv_offload_cpu_cache_usage_perc。",
        "Removed in the V1 engine with no replacement: V1 no longer swaps KV blocks to CPU. On the "
        "CPU backend the KV usage is vllm:kv_cache_usage_perc; with KV offloading, see "
        "vllm:kv_offload_cpu_cache_usage_perc.",
    ),
    "vllm:time_to_first_token_ms": OldName(
        ("vllm:time_to_first_token_seconds",),
        "vLLM 0.32 源码里没有 _ms 版本，TTFT 是以秒为单位的直方图 vllm:time_to_first_token_seconds；"
        "报告里 ×1000 换算成毫秒。",
        "vLLM 0.32's source has no _ms series: TTFT is the histogram vllm:time_to_first_token_seconds, "
        "in seconds; the report multiplies by 1000 for ms.",
    ),
    "vllm:time_per_output_token_ms": OldName(
        ("vllm:request_time_per_output_token_seconds", "vllm:inter_token_latency_seconds"),
        "单位是秒，不是毫秒。每请求的 TPOT 是 vllm:request_time_per_output_token_seconds（与 vllm bench "
        "serve 的 TPOT 同定义）；相邻 token 间隔是 vllm:inter_token_latency_seconds（0.11 之前叫 "
        "vllm:time_per_output_token_seconds，之后移除）。",
        "Seconds, not ms. Per-request TPOT is vllm:request_time_per_output_token_seconds (the same "
        "definition as vllm bench serve's TPOT); the gap between tokens is "
        "vllm:inter_token_latency_seconds (called vllm:time_per_output_token_seconds until 0.11, "
        "since removed).",
    ),
    "vllm:time_per_output_token_seconds": OldName(
        ("vllm:inter_token_latency_seconds",),
        "0.11 起弃用并改名为 vllm:inter_token_latency_seconds（测的是相邻输出的间隔），后来移除。",
        "Deprecated in 0.11 and renamed vllm:inter_token_latency_seconds (it measures the gap "
        "between outputs); removed later.",
    ),
}


# --------------------------------------------------------------------------- a benchmark, read


@dataclass(frozen=True)
class BenchFigures:
    """What the server counted during one benchmark (/metrics deltas, the polled KV-cache
    usage) and what the client sent, as plain numbers (None: not measured)."""

    requests_finished: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    preemptions: float | None = None
    mean_queue_time_s: float | None = None
    mean_ttft_s: float | None = None
    mean_tpot_s: float | None = None
    peak_kv_usage_frac: float | None = None
    kv_interval_s: float | None = None
    kv_samples: int | None = None
    client_requests: int | None = None
    client_prompt_tokens: int | None = None
    client_output_tokens: int | None = None


@dataclass(frozen=True)
class Reading:
    """One figure of the seed's "关键指标解读", in one language."""

    key: str
    label: str
    series: str
    value: float | None
    unit: str
    meaning: str


#: Each figure's label (zh, en).
LABELS = {
    "requests_finished": ("完成的请求数", "requests finished"),
    "prompt_tokens": ("输入（prompt）token 数", "prompt tokens"),
    "generation_tokens": ("生成的输出 token 数", "output tokens generated"),
    "preemptions": ("抢占次数", "preemptions"),
    "peak_kv_cache_usage": ("KV Cache 使用率峰值", "peak KV-cache usage"),
    "mean_queue_time": ("平均排队时间", "mean queue time"),
    "mean_ttft": ("TTFT 均值（服务端）", "mean TTFT (server)"),
    "mean_tpot": ("TPOT 均值（服务端）", "mean TPOT (server)"),
}


def count(value: float | None) -> str:
    """A count: 4,608 (rounded); None -> "n/a"."""
    return num(None if value is None else round(value))


def interpret(f: BenchFigures, lang: str) -> list[Reading]:
    """The seed's "关键指标解读" for one recorded bench: each figure the server counted
    during the benchmark, with a plain-language meaning drawn from its value."""
    zh = pick(lang, True, False)
    rows: list[Reading] = []

    def add(
        key: str, series: str, value: float | None, unit: str, text_zh: str, text_en: str
    ) -> None:
        rows.append(
            Reading(key, pick(lang, *LABELS[key]), series, value, unit, text_zh if zh else text_en)
        )

    n, sent = f.requests_finished, f.client_requests
    add(
        "requests_finished",
        "Δ vllm:e2e_request_latency_seconds_count",
        n,
        "requests",
        f"基准测试期间服务端完成了 {count(n)} 个请求（客户端发出 {count(sent)} 个，含预热和延迟循环）",
        f"The server finished {count(n)} requests during the benchmark (the client sent "
        f"{count(sent)}, warm-ups and the latency loop included)",
    )
    p, cp = f.prompt_tokens, f.client_prompt_tokens
    add(
        "prompt_tokens",
        "Δ vllm:prompt_tokens_total",
        p,
        "tokens",
        f"预填充（prefill）阶段处理了 {count(p)} 个输入 token（客户端按 usage 统计 {count(cp)}）",
        f"{count(p)} prompt tokens went through prefill (the client's usage total: {count(cp)})",
    )
    g, cg = f.generation_tokens, f.client_output_tokens
    same = g is not None and cg is not None and round(g) == cg
    add(
        "generation_tokens",
        "Δ vllm:generation_tokens_total",
        g,
        "tokens",
        f"解码阶段生成了 {count(g)} 个输出 token；客户端 usage 合计 {count(cg)}，"
        + ("两边一致：吞吐数字可信" if same else "两边不一致：有请求失败或别的客户端在用这台服务"),
        f"Decode generated {count(g)} output tokens; the client's usage total is {count(cg)}: "
        + (
            "they agree, so the throughput figures hold"
            if same
            else "they differ: requests failed or another client used this server"
        ),
    )
    pre = f.preemptions
    add(
        "preemptions",
        "Δ vllm:num_preemptions_total",
        pre,
        "preemptions",
        "没有请求被抢占：KV Cache 一直够用"
        if pre == 0
        else f"{count(pre)} 次抢占：KV Cache 不够时请求被踢回队列、之后重算，延迟会变高；"
        "可降低并发或提高 --gpu-memory-utilization",
        "No request was preempted: the KV cache always had room"
        if pre == 0
        else f"{count(pre)} preemptions: when the KV cache ran out, requests were evicted and "
        "recomputed later, which raises latency; lower the concurrency or raise "
        "--gpu-memory-utilization",
    )
    pct = None if f.peak_kv_usage_frac is None else f.peak_kv_usage_frac * 100
    add(
        "peak_kv_cache_usage",
        "max vllm:kv_cache_usage_perc (polled)",
        pct,
        "%",
        _kv_zh(pct, f),
        _kv_en(pct, f),
    )
    q, step = f.mean_queue_time_s, f.mean_tpot_s
    qms = None if q is None else q * 1000
    qzh, qen = _queue_meaning(q, step)
    add(
        "mean_queue_time",
        "Δsum/Δcount vllm:request_queue_time_seconds",
        qms,
        "ms",
        f"请求平均在调度队列里等了 {fixed(qms, 2)} ms 才开始执行；{qzh}",
        f"Requests waited {fixed(qms, 2)} ms on average in the scheduler's queue before "
        f"running; {qen}",
    )
    for key, name, value, text_zh, text_en in (
        (
            "mean_ttft",
            "vllm:time_to_first_token_seconds",
            f.mean_ttft_s,
            "服务端测的首 token 延迟（从请求到达算起，含排队和预填充）",
            "The server's time to first token (from arrival: queueing and prefill included)",
        ),
        (
            "mean_tpot",
            "vllm:request_time_per_output_token_seconds",
            f.mean_tpot_s,
            "服务端测的每个输出 token 的解码时间，即 TPOT",
            "The server's decode time per output token, i.e. TPOT",
        ),
    ):
        ms = None if value is None else value * 1000
        add(
            key,
            f"Δsum/Δcount {name}",
            ms,
            "ms",
            f"{text_zh}，均值 {fixed(ms, 2)} ms；可与客户端表格里的同名数字对照（客户端还多了网络和流式传输）",
            f"{text_en}, mean {fixed(ms, 2)} ms; compare with the client's table above (the "
            "client adds the network and streaming)",
        )
    return rows


def _queue_meaning(queue_s: float | None, step_s: float | None) -> tuple[str, str]:
    """Queue time against one decode step (the mean TPOT): shorter means a request simply
    joined the batch at the next step; several steps mean it waited for room."""
    if queue_s is None or not step_s:
        return "没有测到", "not measured"
    steps = queue_s / step_s
    if steps < 1:
        return (
            f"不到一个解码步（TPOT {step_s * 1000:.2f} ms）：下一步就进了批次，没有真正排队",
            f"less than one decode step (TPOT {step_s * 1000:.2f} ms): requests joined the "
            "batch at the next step, no real queue",
        )
    return (
        f"约 {steps:.0f} 个解码步：请求在等空位，负载超过了引擎一次能跑的量",
        f"about {steps:.0f} decode steps: requests waited for room; the load exceeded what "
        "the engine runs at once",
    )


def _kv_zh(pct: float | None, f: BenchFigures) -> str:
    if pct is None:
        return "没有采到 KV Cache 使用率（/metrics 读取失败）"
    level = (
        "远未用满，还能承受更高并发"
        if pct < 50
        else "较满，再加并发就接近上限"
        if pct < 90
        else "接近用满，继续加压会出现抢占"
    )
    return (
        f"压测中 KV Cache 最高用了 {pct:.2f}%（每 {f.kv_interval_s or 0:g} s 采样，"
        f"共 {count(f.kv_samples)} 次）：{level}"
    )


def _kv_en(pct: float | None, f: BenchFigures) -> str:
    if pct is None:
        return "No KV-cache usage was sampled (/metrics could not be read)"
    level = (
        "far from full: room for more concurrency"
        if pct < 50
        else "fairly full: more concurrency nears the limit"
        if pct < 90
        else "nearly full: more load will cause preemptions"
    )
    return (
        f"The KV cache peaked at {pct:.2f} % during the load (sampled every "
        f"{f.kv_interval_s or 0:g} s, {count(f.kv_samples)} samples): {level}"
    )


def series_info(name: str) -> SeriesInfo | None:
    """The KEY_SERIES entry of `name`."""
    return _BY_NAME.get(name)


_BY_NAME = {info.name: info for info in KEY_SERIES}
