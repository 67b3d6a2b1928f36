"""Ready-made metrics: each reads one figure from an arm's values (ArmValues)."""

from __future__ import annotations

from collections.abc import Callable

from lab.checklist.experiments.model import Metric
from lab.core.units import ratio
from lab.record.values import ArmValues, LatencyStats, LevelSummary

_LABELS = {
    "ttft_ms": ("TTFT", "TTFT"),
    "tpot_ms": ("TPOT", "TPOT"),
    "itl_ms": ("ITL", "ITL"),
    "e2el_ms": ("端到端延迟", "E2EL"),
}
_STATS = {
    "median": ("中位数", "median"),
    "p99": ("p99", "p99"),
    "mean": ("均值", "mean"),
    "p90": ("p90", "p90"),
}


def _summary(v: ArmValues, cls: str | None) -> LevelSummary | None:
    return v.classes.get(cls) if cls else v.load


def latency(field: str, stat: str, cls: str | None = None) -> Metric:
    """A latency statistic (`field` ttft_ms/tpot_ms/itl_ms/e2el_ms, `stat` median/p99/…) of
    the load, or of one request class (`cls`: "long", "short", "c64", …)."""
    zh, en = _LABELS[field]
    szh, sen = _STATS[stat]
    suffix = f"_{cls.replace(':', '_')}" if cls else ""

    def read(v: ArmValues) -> float | None:
        s = _summary(v, cls)
        stats: LatencyStats | None = getattr(s, field) if s is not None else None
        return getattr(stats, stat) if stats is not None else None

    where_zh, where_en = (f"（{cls}）", f" ({cls})") if cls else ("", "")
    return Metric(
        f"{field.removesuffix('_ms')}_{stat}{suffix}_ms",
        f"{zh} {szh}{where_zh}",
        f"{en} {sen}{where_en}",
        "ms",
        read,
        better="lower",
    )


def throughput(cls: str | None = None) -> Metric:
    """Output tokens per second of the load (or of one class)."""

    def read(v: ArmValues) -> float | None:
        s = _summary(v, cls)
        return s.output_tok_s if s is not None else None

    suffix = f"_{cls}" if cls else ""
    where = f" ({cls})" if cls else ""
    return Metric(
        f"output_tok_s{suffix}",
        f"输出吞吐{where}",
        f"output throughput{where}",
        "tok/s",
        read,
        better="higher",
    )


def counter(key: str, label_zh: str, label_en: str, better: str = "") -> Metric:
    """A /metrics counter over the load (runner.COUNTERS keys)."""
    return Metric(key, label_zh, label_en, "", lambda v: v.counters.get(key), better)


def serve_fact(
    key: str, field: str, label_zh: str, label_en: str, unit: str, better: str = ""
) -> Metric:
    """A startup figure of the arm's server (ServeValues field)."""

    def read(v: ArmValues) -> float | None:
        value = getattr(v.serve, field) if v.serve is not None else None
        return float(value) if value is not None else None

    return Metric(key, label_zh, label_en, unit, read, better)


def derived(
    key: str,
    label_zh: str,
    label_en: str,
    unit: str,
    fn: Callable[[ArmValues], float | None],
    better: str = "",
) -> Metric:
    """Any figure computed from the arm's values."""
    return Metric(key, label_zh, label_en, unit, fn, better)


def _hit_rate(v: ArmValues) -> float | None:
    rate = ratio(v.counters.get("prefix_cache_hits"), v.counters.get("prefix_cache_queries"))
    return rate * 100 if rate is not None else None


TTFT_MEDIAN = latency("ttft_ms", "median")
TTFT_P99 = latency("ttft_ms", "p99")
TPOT_MEDIAN = latency("tpot_ms", "median")
ITL_P99 = latency("itl_ms", "p99")
OUTPUT_TOK_S = throughput()
PREFIX_HIT_RATE = derived(
    "prefix_hit_rate_pct",
    "前缀缓存命中率",
    "prefix-cache hit rate",
    "%",
    _hit_rate,
    better="higher",
)
PREEMPTIONS = counter(
    "preemptions",
    "抢占次数（vllm:num_preemptions）",
    "preemptions (vllm:num_preemptions)",
    better="lower",
)
READY_S = serve_fact("ready_s", "ready_s", "启动耗时", "startup time", "s", better="lower")
KV_TOKENS = serve_fact(
    "kv_cache_tokens",
    "kv_cache_tokens",
    "KV 缓存容量",
    "KV-cache capacity",
    "tokens",
    better="higher",
)
KV_BLOCKS = serve_fact("kv_blocks", "num_gpu_blocks", "KV 块数", "KV blocks", "", better="higher")
BLOCK_SIZE = serve_fact("block_size", "block_size", "块大小", "block size", "tokens")
MAX_CONCURRENCY = serve_fact(
    "max_concurrency_x",
    "max_concurrency_x",
    "最大并发（按 max-model-len）",
    "max concurrency (at max-model-len)",
    "×",
    better="higher",
)
MODEL_GIB = serve_fact("model_load_gib", "model_load_gib", "模型显存", "model memory", "GiB")
GRAPH_GIB = derived(
    "graph_capture_gib",
    "CUDA Graph 显存",
    "CUDA-graph memory",
    "GiB",
    lambda v: v.graph_capture_gib,
    better="lower",
)
