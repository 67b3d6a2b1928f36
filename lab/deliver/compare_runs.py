"""`invoke compare-runs A B`: what changed between two runs of the same day: run facts, each
step's status and duration, and each step's key figures (read from its typed values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.core.errors import LabError
from lab.deliver.gather import LabData
from lab.record.queries import Run, Step
from lab.record.values import (
    ApiTestValues,
    BalanceValues,
    BenchValues,
    CompareTpValues,
    CompareValues,
    GpusValues,
    InstallValues,
    KvCacheValues,
    MemoryValues,
    MetricsValues,
    MonitorValues,
    OfflineValues,
    ParamsValues,
    ServeValues,
    StepValues,
    ToolsValues,
)


@dataclass
class Figure:
    """One key figure of a step: its value, unit, and which way is better (or None)."""

    label: str
    value: float | int | str | None
    unit: str = ""
    better: str | None = None  # "higher", "lower" or None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _figures(v: StepValues) -> list[Figure]:
    """The key figures of one step's values, by its type."""
    if isinstance(v, GpusValues):
        return [Figure("GPUs with enough free memory", v.free_gpus, "", "higher")]
    if isinstance(v, InstallValues):
        ver = v.versions
        return [
            Figure("vLLM", ver.vllm if ver else None),
            Figure("torch", ver.torch if ver else None),
            Figure("install time", v.install_s, "s", "lower"),
        ]
    if isinstance(v, ToolsValues):
        return [Figure("nvitop", v.versions.get("nvitop"))]
    if isinstance(v, ServeValues):
        return [
            Figure("startup (until /health = 200)", v.ready_s, "s", "lower"),
            Figure("KV-cache capacity", v.kv_cache_tokens, "tokens", "higher"),
            Figure("max concurrency", v.max_concurrency_x, "x", "higher"),
            Figure("model load", v.model_load_gib, "GiB"),
            Figure("model load time", v.model_load_s, "s", "lower"),
            Figure("engine init", v.engine_init_s, "s", "lower"),
        ]
    if isinstance(v, MonitorValues):
        return [
            Figure("peak GPU memory used", v.peak_mem_used_pct, "%"),
            Figure("peak GPU utilisation", v.peak_util_pct, "%"),
            Figure("peak process-tree RSS", v.peak_rss_mib, "MiB"),
            Figure("peak process-tree CPU", v.peak_cpu_pct, "%"),
            Figure(
                "load output throughput", v.load.output_tok_s if v.load else None, "tok/s", "higher"
            ),
        ]
    if isinstance(v, ApiTestValues):
        return [
            Figure("chat latency", _ms(v.latency_s), "ms", "lower"),
            Figure("chat tokens/s", v.output_tok_s, "tok/s", "higher"),
            Figure("stream TTFT", _ms(v.stream.ttft_s if v.stream else None), "ms", "lower"),
        ]
    if isinstance(v, MetricsValues):
        return [Figure("vllm: series exported", v.vllm_series)]
    if isinstance(v, BalanceValues):
        return [Figure("memory spread between GPUs", v.spread_pct, "%", "lower")]
    if isinstance(v, BenchValues):
        kv, delta = v.metrics.kv, v.metrics.delta
        peak = kv.peak_kv_usage_frac if kv else None
        out = [
            Figure(
                "latency loop mean", v.latency.avg_latency_ms if v.latency else None, "ms", "lower"
            ),
            Figure("peak KV-cache usage", None if peak is None else peak * 100, "%"),
            Figure("preemptions", delta.preemptions if delta else None, "", "lower"),
        ]
        for lv in v.levels:
            c = lv.concurrency
            out += [
                Figure(f"c{c} output throughput", lv.output_tok_s, "tok/s", "higher"),
                Figure(f"c{c} TTFT median", lv.ttft_ms.median, "ms", "lower"),
                Figure(f"c{c} TPOT median", lv.tpot_ms.median, "ms", "lower"),
            ]
        return out
    if isinstance(v, CompareTpValues):
        r = v.ratios
        return [
            Figure("TP=2 ÷ TP=1 output throughput", r.output_tok_s if r else None, "x", "higher"),
            Figure("TP=2 ÷ TP=1 TPOT median", r.tpot_median if r else None, "x", "lower"),
        ]
    if isinstance(v, CompareValues):
        hf, vl = v.hf, v.vllm
        up = v.speedup
        return [
            Figure("vLLM output throughput", vl.output_tok_s if vl else None, "tok/s", "higher"),
            Figure("HF output throughput", hf.output_tok_s if hf else None, "tok/s", "higher"),
            Figure("vLLM mean latency", vl.latency_ms if vl else None, "ms", "lower"),
            Figure("HF mean latency", hf.latency_ms if hf else None, "ms", "lower"),
        ] + (
            [
                Figure("speedup latency_x", up.latency_x, "x", "higher"),
                Figure("speedup samples_x", up.samples_x, "x", "higher"),
                Figure("speedup throughput_x", up.throughput_x, "x", "higher"),
            ]
            if hf and vl
            else []
        )
    if isinstance(v, OfflineValues):
        return [
            Figure(f"batch {b.batch_size} throughput", b.output_tok_s, "tok/s", "higher")
            for b in v.batches
        ]
    if isinstance(v, KvCacheValues):
        return [
            Figure("KV-cache blocks", v.num_gpu_blocks, "", "higher"),
            Figure("block size", v.block_size, "tokens"),
            Figure("KV-cache tokens (startup log)", v.kv_cache_tokens_log, "tokens", "higher"),
            Figure("engine init", v.engine_init_s, "s", "lower"),
        ]
    if isinstance(v, MemoryValues):
        return [
            Figure("peak process-tree RSS", v.peak_tree_rss_mib, "MiB"),
            Figure("peak GPU memory used of vLLM's budget", v.used_of_budget_pct, "%"),
        ]
    if isinstance(v, ParamsValues):
        return [Figure("parameters read from the engine", sum(r.present for r in v.rows))]
    return []


def key_figures(step: Step) -> list[Figure]:
    """A step's key figures (only those recorded)."""
    if step.values is None:
        return []
    return [f for f in _figures(step.values) if f.value is not None]


def _change(a: Any, b: Any, better: str | None) -> str:
    if a is None or b is None:
        return "—"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if a == b:
            return "="
        delta = b - a
        pct = f" ({delta / a * 100:+.1f} %)" if a else ""
        mark = ""
        if better:
            improved = delta > 0 if better == "higher" else delta < 0
            mark = " ▲ better" if improved else " ▼ worse"
        return f"{_fmt(delta, signed=True)}{pct}{mark}"
    return "=" if a == b else "changed"


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed else ""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{value:{sign},.0f}"
    return f"{value:{sign},.2f}"


def _run_version(data: LabData, run_id: int) -> str | None:
    rec = data.records
    step = rec.latest("install", run_id=run_id) or rec.latest("serve", run_id=run_id)
    v = step.values if step else None
    if isinstance(v, InstallValues):
        return v.versions.vllm if v.versions else None
    return v.vllm_version if isinstance(v, ServeValues) else None


@dataclass
class ChangeRow:
    section: str
    item: str
    a: str
    b: str
    change: str


@dataclass
class RunComparison:
    a: Run
    b: Run
    rows: list[ChangeRow]


def compare_runs(data: LabData, a: int, b: int) -> RunComparison:
    """What changed between runs `a` and `b` of the same day: run facts, each step's status
    and duration, and each step's key figures."""
    rec = data.records
    ra, rb = rec.run(a), rec.run(b)
    if ra.day != rb.day:
        raise LabError(
            f"run #{a} is {ra.day} and run #{b} is {rb.day}: compare two runs of the same day"
        )
    rows: list[ChangeRow] = []

    def add(
        section: str, item: str, va: Any, vb: Any, unit: str = "", better: str | None = None
    ) -> None:
        rows.append(
            ChangeRow(
                section,
                item + (f" ({unit})" if unit else ""),
                _fmt(va),
                _fmt(vb),
                _change(va, vb, better),
            )
        )

    for label, va, vb in (
        ("task", ra.task, rb.task),
        ("profile", ra.profile, rb.profile),
        ("host", ra.host, rb.host),
        ("status", ra.status, rb.status),
    ):
        add("run", label, va, vb)
    add("run", "vLLM", _run_version(data, a), _run_version(data, b))
    add("run", "duration", ra.duration_s, rb.duration_s, "s", "lower")
    steps_a = {s.key: s for s in rec.steps if s.run_id == a}
    steps_b = {s.key: s for s in rec.steps if s.run_id == b}
    for key in list(steps_a) + [k for k in steps_b if k not in steps_a]:
        sa, sb = steps_a.get(key), steps_b.get(key)
        add(key, "status", sa.status if sa else "not run", sb.status if sb else "not run")
        add(
            key,
            "duration",
            sa.duration_s if sa else None,
            sb.duration_s if sb else None,
            "s",
            "lower",
        )
        figs_a = {f.label: f for f in key_figures(sa)} if sa else {}
        figs_b = {f.label: f for f in key_figures(sb)} if sb else {}
        for label in list(figs_a) + [k for k in figs_b if k not in figs_a]:
            fa, fb = figs_a.get(label), figs_b.get(label)
            f = fa or fb
            assert f is not None
            add(key, label, fa.value if fa else None, fb.value if fb else None, f.unit, f.better)
    return RunComparison(ra, rb, rows)
