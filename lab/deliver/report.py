"""性能对比报告 (the performance comparison report): `logbook/report.md` and its PNG plots,
from the gathered data only (lab.deliver.gather): the Day 4 `bench` and `compare`, the
`serve` that was benchmarked, the `gpus` query, the `monitor` timeline, Day 5 `offline`. The
sweep is the one gather recomputed from the `requests` table where it could. A piece that was
never recorded renders as "not measured yet — run `invoke X`".

`report_view` decides what the template shows; templates/report.md.j2 only loops and formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.checklist.roadmap import run_hint
from lab.core.escape import md_inline
from lab.core.lang import pick
from lab.core.units import GB, GIB, mib_to_gib, ratio
from lab.deliver.gather import LabData, Level
from lab.deliver.jinja import fmt_ts, render_to
from lab.explain import bench as definitions
from lab.explain import metrics as meanings
from lab.explain.notes import note
from lab.measure.nvml import GpuInfo
from lab.record.queries import Step
from lab.record.values import (
    COST_SAMPLES,
    BenchValues,
    CompareSide,
    CompareValues,
    CostSide,
    GpusValues,
    InstallValues,
    MonitorValues,
    OfflineValues,
    ServeValues,
    VllmVersions,
    cost_side,
)


# ------------------------------------------------------------------------------------ figures
def serve_values(data: LabData) -> ServeValues | None:
    v = data.serve.values if data.serve else None
    return v if isinstance(v, ServeValues) else None


def served_tp(data: LabData) -> int:
    v = serve_values(data)
    return v.tp if v else 1


def gpu_for(data: LabData) -> list[GpuInfo]:
    """The GPUs the benchmarked server used, as the gpus step recorded them: its
    CUDA_VISIBLE_DEVICES (from the servers table), else the first `tp` GPUs. None on CPU."""
    v = data.gpus.values if data.gpus else None
    found = v.gpus if isinstance(v, GpusValues) else []
    if not found or data.profile == "cpu":
        return []
    tp = served_tp(data)
    visible = str((data.server.env if data.server else {}).get("CUDA_VISIBLE_DEVICES") or "")
    wanted = [int(x) for x in visible.split(",") if x.strip().isdigit()] or list(range(tp))
    chosen = [g for g in found if g.index in wanted]
    return chosen or found[:tp]


@dataclass
class Roofline:
    """Single-stream decode against the memory-bandwidth bound. bound = weight bytes (the
    serve step's model_load_gib) / peak bandwidth (NVML, GpuInfo.peak_memory_bandwidth_gbps):
    the least time one token can take at batch 1, since each decode step reads every weight
    once. Compared with the measured median TPOT at concurrency 1: pct = bound / TPOT × 100."""

    applies: bool
    missing: list[tuple[str, str]] = field(default_factory=list)  # (what, task to run)
    weights_gib: float | None = None
    tpot_ms: float | None = None
    tp: int = 1
    gpu: GpuInfo | None = None
    bandwidth_gbps: float | None = None
    bound_ms: float | None = None
    pct: float | None = None


def roofline(data: LabData) -> Roofline:
    if data.profile == "cpu":
        return Roofline(applies=False)
    out = Roofline(applies=True)
    gpus = gpu_for(data)
    if not gpus:
        out.missing.append(("gpus", "invoke gpus"))
    sv = serve_values(data)
    weights = sv.model_load_gib if sv else None
    if weights is None:
        out.missing.append(("model_load_gib", "invoke serve"))
    c1 = next((lv for lv in data.levels if lv.concurrency == 1), None)
    tpot = c1.summary.tpot_ms.median if c1 else None
    if tpot is None:
        out.missing.append(("tpot_c1", "invoke bench"))
    bws = [bw for bw in (g.peak_memory_bandwidth_gbps for g in gpus) if bw]
    if gpus and not bws:
        out.missing.append(("bandwidth", "invoke gpus"))
    out.weights_gib, out.tpot_ms, out.tp = weights, tpot, served_tp(data)
    out.gpu, out.bandwidth_gbps = (gpus[0] if gpus else None), (min(bws) if bws else None)
    if weights is not None and bws:
        out.bound_ms = weights * GIB / (min(bws) * GB) * 1000
        if tpot:
            out.pct = out.bound_ms / tpot * 100
    return out


@dataclass
class Memory:
    gib: float | None
    pct: float | None


@dataclass
class Comparison:
    """Seed 000's table (memory, mean latency, throughput, speedup) and seed 004's cost
    view, from the compare step."""

    step: Step
    source: str | None
    workload: list[tuple[str, Any]]
    measured: bool  # both sides recorded figures
    memory: tuple[Memory, Memory, float | None] = (Memory(None, None), Memory(None, None), None)
    latency_ms: tuple[float | None, float | None, float | None] = (None, None, None)
    output_tok_s: tuple[float | None, float | None, float | None] = (None, None, None)
    samples_per_min: tuple[float | None, float | None, float | None] = (None, None, None)
    cost: list[tuple[str, CostSide]] = field(default_factory=list)
    saving_x: float | None = None


def comparison(data: LabData) -> Comparison | None:
    step = data.compare
    if step is None:
        return None
    v = step.values if isinstance(step.values, CompareValues) else CompareValues()
    work = [(f.name, getattr(v.workload, f.name)) for f in fields(v.workload)] if v.workload else []
    out = Comparison(
        step,
        v.source,
        sorted((k, x) for k, x in work if x is not None),
        v.hf is not None or v.vllm is not None,
    )
    h, m = v.hf or CompareSide(), v.vllm or CompareSide()
    gpus = gpu_for(data)
    total_gib = mib_to_gib(gpus[0].memory_total_mib or 0) if gpus else None

    def memory(side: CompareSide) -> Memory:
        gib, pct = side.peak_mem_gib, side.peak_mem_pct
        if pct is None and gib is not None and total_gib:
            pct = gib / total_gib * 100
        return Memory(gib, pct)

    mv, mh = memory(m), memory(h)
    out.memory = (mv, mh, ratio(mv.gib, mh.gib))
    out.latency_ms = (m.latency_ms, h.latency_ms, ratio(h.latency_ms, m.latency_ms))
    out.output_tok_s = (m.output_tok_s, h.output_tok_s, ratio(m.output_tok_s, h.output_tok_s))
    out.samples_per_min = (
        m.samples_per_min,
        h.samples_per_min,
        ratio(m.samples_per_min, h.samples_per_min),
    )
    # Seed 004: minutes and GPU-minutes for COST_SAMPLES samples, extrapolated from the
    # measured samples/min. GPUs: as compare recorded them, else (vLLM) the served TP; none
    # on the CPU profile (CPU-minutes are in the Day 4 log).
    for name, side in (("hf", h), ("vllm", m)):
        gpus_used = side.gpus
        if gpus_used is None and name == "vllm" and data.profile != "cpu":
            gpus_used = served_tp(data)
        if data.profile == "cpu":
            gpus_used = None
        out.cost.append((name, cost_side(side.samples_per_min, gpus_used)))
    out.saving_x = ratio(out.cost[0][1].device_minutes, out.cost[1][1].device_minutes)
    return out


def versions(data: LabData) -> VllmVersions:
    """vLLM and its libraries, as install recorded them (else the version serve logged)."""
    iv = data.install.values if data.install else None
    found = iv.versions if isinstance(iv, InstallValues) and iv.versions else VllmVersions()
    sv = serve_values(data)
    return VllmVersions(
        vllm=found.vllm or (sv.vllm_version if sv else None),
        dist=found.dist,
        torch=found.torch,
        transformers=found.transformers,
    )


def interpretation(data: LabData, lang: str) -> list[meanings.Reading]:
    """What /metrics counted during the reported benchmark, explained (lab.explain)."""
    v = data.bench.values if data.bench else None
    if not isinstance(v, BenchValues) or v.metrics.delta is None:
        return []
    return meanings.interpret(v.figures(), lang)


# ------------------------------------------------------------------------------------ plots
def make_plots(data: LabData, lang: str, out_dir: Path) -> dict[str, Path]:
    """Draw every plot the data allows; returns {key: path} of those written. Old plots of
    a key that has no data now are removed, so nothing stale is embedded."""
    from lab.deliver import plots

    out: dict[str, Path] = {}
    caption = f" — run #{data.monitor.run_id}" if data.monitor else ""
    offline = data.offline.values if data.offline else None
    by_level = {
        lv.concurrency: (lv.ttft_ms, lv.tpot_ms)
        for lv in data.levels
        if lv.ttft_ms is not None and lv.tpot_ms is not None
    }
    made = {
        "timeline": plots.timeline(data.samples, out_dir / plots.FILES["timeline"], lang, caption),
        "sweep": plots.sweep(
            [lv.summary for lv in data.levels], out_dir / plots.FILES["sweep"], lang
        ),
        "latency": plots.latency_distribution(by_level, out_dir / plots.FILES["latency"], lang),
        "offline": plots.offline(
            offline.batches if isinstance(offline, OfflineValues) else [],
            out_dir / plots.FILES["offline"],
            lang,
        ),
    }
    for key, path in made.items():
        if path:
            out[key] = path
        else:
            (out_dir / plots.FILES[key]).unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------ view
@dataclass
class PlotNames:
    """The file names of the plots drawn (None: not drawn: nothing to plot)."""

    timeline: str | None = None
    sweep: str | None = None
    latency: str | None = None
    offline: str | None = None

    @classmethod
    def of(cls, plots: dict[str, Path] | None) -> PlotNames:
        found = plots or {}
        return cls(**{f.name: found[f.name].name for f in fields(cls) if f.name in found})


_ROOFLINE_MISSING = {
    "gpus": ("GPU 的显存频率与位宽", "the GPU's memory clock and bus width"),
    "bandwidth": (
        "GPU 的显存频率与位宽（NVML 未提供）",
        "the GPU's memory clock and bus width (NVML gave none)",
    ),
    "model_load_gib": (
        "权重大小（服务日志的 model_load_gib）",
        "the weight size (the server log's model_load_gib)",
    ),
    "tpot_c1": ("并发 1 的 TPOT 中位数", "the median TPOT at concurrency 1"),
}


def _source_text(data: LabData, lang: str) -> str:
    """What the vLLM side of the compare step was, in words (DB text is escaped)."""
    v = data.compare.values if data.compare else None
    source = v.source if isinstance(v, CompareValues) else None
    if source == "server":
        return pick(lang, "OpenAI 服务（流式请求）", "the OpenAI server (streamed requests)")
    if source == "offline":
        return pick(lang, "离线 LLM.generate", "offline LLM.generate")
    return md_inline(source) if source else ""


def report_view(data: LabData, lang: str, plots: dict[str, Path] | None = None) -> dict[str, Any]:
    """What templates/report.md.j2 shows."""
    gpus_step = data.gpus.values if data.gpus else None
    rf = roofline(data)
    mv = data.monitor.values if data.monitor else None
    ov = data.offline.values if data.offline else None
    levels: list[Level] = data.levels
    return {
        "lang": lang,
        "run_id": data.report_run_id,
        "generated_at": fmt_ts(data.now),
        "profile": data.profile,
        "runs": data.runs,
        "gpus": gpu_for(data),
        "all_gpus": gpus_step.gpus if isinstance(gpus_step, GpusValues) else [],
        "host": data.runs[-1].host if data.runs else None,
        "versions": versions(data),
        "serve": data.serve,
        "sv": serve_values(data) or ServeValues(),
        "bench": data.bench,
        "compare": comparison(data),
        "compare_source": _source_text(data, lang),
        "latency": data.latency,
        "levels": levels,
        "sweep_note": (
            note("sweep_recomputed", lang)
            if levels and levels[0].source == "requests"
            else pick(
                lang,
                "取自 bench 步骤记录的汇总（requests 表里没有逐请求记录）。",
                "As the bench step summarised it (the requests table has no per-request rows).",
            )
        ),
        "interpretation": interpretation(data, lang),
        "roofline": rf,
        "roofline_missing": [
            (pick(lang, *_ROOFLINE_MISSING[what]), run_hint(command, lang))
            for what, command in rf.missing
        ],
        "monitor": data.monitor,
        "mv": mv if isinstance(mv, MonitorValues) else MonitorValues(),
        "monitor_interval_s": mv.sampler.interval_s
        if isinstance(mv, MonitorValues) and mv.sampler
        else None,
        "offline": data.offline,
        "batches": ov.batches if isinstance(ov, OfflineValues) else [],
        "plots": PlotNames.of(plots),
        "definitions": definitions.definitions(lang),
        "naming": definitions.naming(lang),
        "old_names": [
            (old, list(info.current), info.note(lang)) for old, info in meanings.OLD_NAMES.items()
        ],
        "samples_for_cost": COST_SAMPLES,
        "hint": lambda command: run_hint(command, lang),
    }


def render_report(
    data: LabData, lang: str, out_dir: Path, plots: dict[str, Path] | None = None
) -> Path:
    """Render `logbook/report.md` (and its plots, unless given) (Command line equivalent:
    `invoke report`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots is None:
        plots = make_plots(data, lang, out_dir)
    return render_to(out_dir, "report.md", "report.md.j2", **report_view(data, lang, plots))
