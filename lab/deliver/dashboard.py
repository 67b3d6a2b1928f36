"""The monitoring dashboard (seed 000's optional "监控 Dashboard 截图" deliverable):
`logbook/dashboard.html`, one self-contained page — the plots embedded as base64 PNG data
URIs, tables, inline CSS, no external resource — drawn from the gathered data only.

The page is rendered with Jinja autoescaping (templates/*.html.j2), so model output and any
other text from the database is HTML-escaped.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.core.lang import pick
from lab.deliver import progress, prometheus, report
from lab.deliver.day_log import metrics_series
from lab.deliver.gather import LabData, Level
from lab.deliver.jinja import render_to
from lab.record.values import MetricsValues
from lab.vllm.launch import shell_line


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI (the page then needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass
class ServerRow:
    id: int
    model: str | None
    tp: int | None
    host: str | None
    port: int | None
    ready_s: float | None
    started_at: float | None
    command: str


def _best(levels: list[Level]) -> Level | None:
    measured = [lv for lv in levels if lv.summary.output_tok_s is not None]
    return max(measured, key=lambda lv: lv.summary.output_tok_s or 0, default=None)


def dashboard_view(data: LabData, lang: str, plots: dict[str, Path]) -> dict[str, Any]:
    """What templates/dashboard.html.j2 shows: the report's figures, plus the key series,
    the monitor samples, progress, the servers started and prometheus.yml."""
    ctx = report.report_view(data, lang, plots)
    rec = data.records
    metrics_step = (
        rec.latest(
            "metrics", where=lambda s: isinstance(s.values, MetricsValues) and bool(s.values.series)
        )
        or data.metrics
    )
    groups = progress.checklist_state(rec, lang)
    ctx.update(
        images=[(k, data_uri(p)) for k, p in plots.items() if p.exists()],
        series=metrics_series(metrics_step, lang),
        metrics_step=metrics_step,
        monitor_summary=data.sample_stats,
        groups=groups,
        acceptance=[i for g in groups if g.id.endswith("acceptance") for i in g.entries],
        servers=[
            ServerRow(
                s.id,
                s.model,
                s.tp,
                s.host,
                s.port,
                s.ready_s,
                s.started_at,
                shell_line(s.argv, s.env),
            )
            for s in reversed(rec.servers)
        ][:5],
        best_level=_best(data.levels),
        prometheus=prometheus.prometheus_yaml(data),
        plot_titles=_plot_titles(lang),
        compare_rows=_compare_rows(ctx["compare"], lang),
    )
    return ctx


def _plot_titles(lang: str) -> dict[str, str]:
    return {
        "timeline": pick(lang, "监控时间线", "Monitoring timeline"),
        "sweep": pick(lang, "吞吐量与延迟 vs 并发数", "Throughput and latency vs concurrency"),
        "latency": pick(lang, "TTFT / TPOT 分布", "TTFT / TPOT distribution"),
        "offline": pick(lang, "离线 batch size 与吞吐", "Offline batch size vs throughput"),
    }


def _compare_rows(c: report.Comparison | None, lang: str) -> list[tuple[str, Any, Any, Any, int]]:
    """(label, vLLM, HF, ratio, digits) of the seed's table."""
    if c is None or not c.measured:
        return []
    mv, mh, mr = c.memory
    return [
        (pick(lang, "显存峰值 GiB", "peak memory GiB"), mv.gib, mh.gib, mr, 2),
        (pick(lang, "平均延迟 ms", "mean latency ms"), *c.latency_ms, 1),
        (pick(lang, "吞吐 tok/s", "throughput tok/s"), *c.output_tok_s, 1),
        ("samples/min", *c.samples_per_min, 1),
    ]


def render_dashboard(
    data: LabData, lang: str, out_dir: Path, plots: dict[str, Path] | None = None
) -> Path:
    """Render `logbook/dashboard.html` (Command line equivalent: `invoke report`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots is None:
        plots = report.make_plots(data, lang, out_dir)
    return render_to(
        out_dir,
        "dashboard.html",
        "dashboard.html.j2",
        **dashboard_view(data, lang, plots),
        experiments=experiment_entries(data, lang, out_dir),
    )


def experiment_entries(data: LabData, lang: str, out_dir: Path) -> list[Any]:
    """experiments.md's entries (lab.deliver.experiments), each plot inlined as a data URI."""
    from lab.deliver import experiments

    found = experiments.entries(data, lang, out_dir)
    for e in found:
        path = out_dir / e.plot if e.plot else None
        e.plot_uri = data_uri(path) if path and path.exists() else None
    return found
