"""PNG plots of what the logbook recorded: the monitor timeline, the Day 4 sweep
(throughput and latency against concurrency), TTFT/TPOT distributions per level, and the
Day 5 offline batch sizes.

matplotlib is imported inside the functions (Agg backend, no pyplot), so `invoke --list`
never pays for it. Every function takes rows read from the logbook and returns the path it
wrote, or None when there is nothing to plot: a plot is never drawn from made-up numbers.

Labels are Chinese only when matplotlib has a CJK font; otherwise English (a zh report
then shows English axis labels rather than empty boxes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.record.values import BatchRow, LatencyStats, LevelSummary

if TYPE_CHECKING:
    import numpy as np

    from lab.deliver.gather import Sample

#: Fonts that carry CJK glyphs, in order of preference.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "AR PL UMing CN",
    "Droid Sans Fallback",
)

#: File names under the logbook directory.
FILES = {
    "timeline": "plot-monitor-timeline.png",
    "sweep": "plot-sweep.png",
    "latency": "plot-latency-distribution.png",
    "offline": "plot-offline-batches.png",
}

DPI = 100


def _figure(rows: int, cols: int = 1, size: tuple[float, float] = (9.0, 6.0)):
    """A new Figure on the Agg canvas (no pyplot: no global state, thread-safe)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def cjk_font() -> str | None:
    """The first CJK-capable font matplotlib knows, or None."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in CJK_FONTS if n in names), None)


class _Labels:
    """t(zh, en): zh only when a CJK font can draw it."""

    def __init__(self, lang: str):
        self.font = cjk_font() if lang == "zh" else None
        self.zh = self.font is not None

    def __call__(self, zh: str, en: str) -> str:
        return zh if self.zh else en

    def apply(self, fig) -> None:
        if self.font:
            for text in fig.findobj(lambda o: hasattr(o, "set_fontfamily")):
                text.set_fontfamily([self.font, "DejaVu Sans"])


def _save(fig, labels: _Labels, path: Path) -> Path:
    labels.apply(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


# ----------------------------------------------------------------------------- timeline
def _series(samples: Iterable[Sample]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """{(field, device): [(t, value), ...]} from long-form sample rows."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in samples:
        if row.value is None or row.t is None:
            continue
        out[(row.field, str(row.device))].append((float(row.t), float(row.value)))
    for points in out.values():
        points.sort()
    return out


def timeline(
    samples: Sequence[Sample], path: Path, lang: str = "zh", caption: str = ""
) -> Path | None:
    """The monitor step's timeline. NVML samples: memory used (with the total dashed) and
    GPU utilisation per GPU. Process samples (CPU profile): RSS and CPU % of the vLLM
    process tree, titled as such."""
    series = _series(samples)
    if not series:
        return None
    t0 = min(p[0][0] for p in series.values() if p)
    source = next((r.source for r in samples if r.source), "nvml")
    t = _Labels(lang)
    fig, (top, bottom) = _figure(2, size=(9.0, 6.0))
    if source == "process":
        fig.suptitle(
            t(
                "vLLM 进程树（CPU 配置，无 GPU）：内存 RSS 与 CPU 占用",
                "vLLM process tree (CPU profile, no GPU): RSS and CPU %",
            )
            + caption
        )
        top_fields: tuple[str, ...] = ("rss_mib",)
        bottom_fields: tuple[str, ...] = ("cpu_pct",)
        top.set_ylabel("RSS (MiB)")
        bottom.set_ylabel(t("CPU 占用 (%，100 = 1 核)", "CPU (%, 100 = one core)"))
    else:
        fig.suptitle(t("GPU 显存与利用率（NVML）", "GPU memory and utilisation (NVML)") + caption)
        top_fields, bottom_fields = ("mem_used_mib",), ("util_pct", "mem_util_pct")
        top.set_ylabel(t("显存已用 (MiB)", "memory used (MiB)"))
        bottom.set_ylabel(t("利用率 (%)", "utilisation (%)"))
        bottom.set_ylim(0, 105)
    for ax, fields in ((top, top_fields), (bottom, bottom_fields)):
        for (field, device), points in sorted(series.items()):
            if field not in fields:
                continue
            name = (
                f"GPU{device}"
                if source != "process"
                else (t("整个进程树", "whole process tree") if device == "tree" else device)
            )
            style = ":" if field == "mem_util_pct" else "-"
            suffix = {
                "util_pct": t(" GPU 利用率", " GPU utilisation"),
                "mem_util_pct": t(" 显存读写繁忙度", " memory read/write busy"),
                "mem_used_mib": t(" 已用", " used"),
            }.get(field, "")
            ax.plot(
                [p[0] - t0 for p in points],
                [p[1] for p in points],
                style,
                marker=".",
                label=f"{name}{suffix}",
            )
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(t("时间 (s，自第一个样本起)", "time (s since the first sample)"))
    for (field, device), points in sorted(series.items()):
        if field == "mem_total_mib" and source != "process":
            top.axhline(
                max(p[1] for p in points),
                linestyle="--",
                color="grey",
                label=t(f"GPU{device} 总显存", f"GPU{device} total"),
            )
    if source != "process":
        highest = max(
            (
                p[1]
                for (f, _), pts in series.items()
                if f in ("mem_used_mib", "mem_total_mib")
                for p in pts
            ),
            default=0,
        )
        top.set_ylim(0, highest * 1.08 or 1)
    for ax in (top, bottom):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    return _save(fig, t, path)


# ----------------------------------------------------------------------------- sweep
def sweep(levels: Sequence[LevelSummary], path: Path, lang: str = "zh") -> Path | None:
    """Throughput and latency against concurrency, one point per level summary."""
    levels = sorted((lv for lv in levels if lv.concurrency), key=lambda lv: lv.concurrency or 0)
    if not levels:
        return None
    t = _Labels(lang)
    xs = [lv.concurrency for lv in levels]
    fig, (thr, lat) = _figure(1, 2, size=(11.0, 4.5))
    fig.suptitle(t("并发扫描：吞吐量与延迟", "Concurrency sweep: throughput and latency"))
    rates: tuple[tuple[Callable[[LevelSummary], float | None], str, str], ...] = (
        (lambda s: s.output_tok_s, t("输出 tok/s", "output tok/s"), "o-"),
        (lambda s: s.total_tok_s, t("总 tok/s（输入+输出）", "total tok/s (in + out)"), "s--"),
    )
    for rate, label, style in rates:
        thr.plot(xs, _nan(rate(lv) for lv in levels), style, label=label)
    for x, lv in zip(xs, levels, strict=True):
        if lv.requests_per_s is not None:
            thr.annotate(
                f"{lv.requests_per_s:.2f} req/s",
                (x, lv.output_tok_s or 0),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize="x-small",
            )
    thr.set_ylabel(t("吞吐 (tok/s)", "throughput (tok/s)"))
    thr.set_ylim(bottom=0)
    thr.legend(loc="upper left", fontsize="small")
    latencies: tuple[tuple[Callable[[LevelSummary], LatencyStats], str, str], ...] = (
        (lambda s: s.ttft_ms, "TTFT", "o-"),
        (lambda s: s.tpot_ms, "TPOT", "s-"),
        (lambda s: s.itl_ms, "ITL", "^-"),
    )
    stats: tuple[tuple[Callable[[LatencyStats], float | None], str, str], ...] = (
        (lambda st: st.median, "median", ""),
        (lambda st: st.p99, "p99", "--"),
    )
    for figure, label, style in latencies:
        for stat, name, dash in stats:
            ys = [stat(figure(lv)) for lv in levels]
            if any(y is not None for y in ys):
                lat.plot(xs, _nan(ys), style[:1] + (dash or style[1:]), label=f"{label} {name}")
    lat.set_ylabel(t("毫秒（对数坐标）", "ms (log scale)"))
    _log_y(lat)
    lat.legend(loc="best", fontsize="small")
    for ax in (thr, lat):
        ax.set_xlabel(t("并发数", "concurrency"))
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, alpha=0.3)
    return _save(fig, t, path)


def _log_y(ax) -> None:
    """A log y axis labelled with plain numbers (5, 10, 20) instead of 5×10⁰."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    axis = ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _nan(values: Iterable[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


# ----------------------------------------------------------------------------- distributions
def latency_distribution(
    by_level: Mapping[int, tuple[np.ndarray, np.ndarray]], path: Path, lang: str = "zh"
) -> Path | None:
    """Boxplots of per-request TTFT and TPOT (ms) for each concurrency level. `by_level`:
    concurrency -> (TTFT ms, TPOT ms) of its successful, non-warm-up requests (as in the
    statistics), read from the requests table."""
    data = {}
    for conc, (ttft, tpot) in sorted(by_level.items()):
        if len(ttft) or len(tpot):
            data[conc] = (list(ttft), list(tpot))
    if not data:
        return None
    t = _Labels(lang)
    fig, axes = _figure(1, 2, size=(11.0, 4.5))
    fig.suptitle(t("每请求 TTFT / TPOT 分布（按并发数）", "Per-request TTFT / TPOT by concurrency"))
    labels = [f"c{c}" for c in data]
    for ax, idx, name in ((axes[0], 0, "TTFT (ms)"), (axes[1], 1, "TPOT (ms)")):
        values = [v[idx] or [float("nan")] for v in data.values()]
        ax.boxplot(values, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels)  # `tick_labels=` needs matplotlib 3.9
        ax.set_ylabel(name)
        ax.set_xlabel(t("并发数", "concurrency"))
        counts = [len(v[idx]) for v in data.values()]
        ax.set_title(
            t("每个箱体的请求数: ", "requests per box: ") + ", ".join(map(str, counts)),
            fontsize="small",
        )
        ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, t, path)


# ----------------------------------------------------------------------------- offline
def offline(batches: Sequence[BatchRow], path: Path, lang: str = "zh") -> Path | None:
    """Day 5: offline LLM.generate throughput against batch size."""
    rows = sorted(
        (b for b in batches if b.batch_size and b.output_tok_s is not None),
        key=lambda b: b.batch_size,
    )
    if not rows:
        return None
    t = _Labels(lang)
    fig, (ax,) = _figure(1, size=(7.0, 4.0))
    xs = [b.batch_size for b in rows]
    ax.plot(xs, [b.output_tok_s for b in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("batch size")
    ax.set_ylabel(t("生成吞吐 (tok/s)", "generation throughput (tok/s)"))
    ax.set_title(
        t("离线 LLM.generate：batch size 与吞吐", "Offline LLM.generate: throughput by batch size")
    )
    ax.grid(True, alpha=0.3)
    return _save(fig, t, path)


# ----------------------------------------------------------------------------- experiments
def experiment_arms(
    panels: Sequence[
        tuple[str, str, str, Sequence[tuple[str, float | None, float | None, float | None]]]
    ],
    path: Path,
    lang: str = "zh",
) -> Path | None:
    """One panel per metric: a bar per arm at its median over rounds, the min–max as an
    error bar. `panels`: (label zh, label en, unit, [(arm, median, min, max), ...]).
    None when no arm measured anything."""
    panels = [p for p in panels if any(m is not None for _, m, _, _ in p[3])]
    if not panels:
        return None
    labels = _Labels(lang)
    fig, axes = _figure(1, len(panels), size=(4.0 * len(panels), 3.6))
    for ax, (zh, en, unit, rows) in zip(axes, panels, strict=False):
        names = [r[0] for r in rows]
        med = _nan(r[1] for r in rows)
        lo = [m - (r[2] if r[2] is not None else m) for m, r in zip(med, rows, strict=True)]
        hi = [(r[3] if r[3] is not None else m) - m for m, r in zip(med, rows, strict=True)]
        ax.bar(names, med, yerr=[lo, hi], capsize=4, color="#4c72b0")
        ax.set_title(labels(zh, en) + (f" ({unit})" if unit else ""), fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    return _save(fig, labels, path)
