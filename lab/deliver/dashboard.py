"""The monitoring dashboard (seed 000's optional "监控 Dashboard 截图" deliverable):
`logbook/dashboard.html`, one self-contained page — the plots embedded as base64 PNG data
URIs, tables, inline CSS, no external resource — drawn from the logbook only, and
`logbook/prometheus.yml`, a scrape config for the servers the learner started.

The page is rendered with Jinja autoescaping, so model output and any other text from the
database is HTML-escaped.

Command line equivalent: `prometheus --config.file=logbook/prometheus.yml`, then Grafana.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from lab.deliver import prometheus
from lab.record.logbook import Logbook
from lab.vllm.launch import shell_line



# ------------------------------------------------------------------------------------ dashboard


def data_uri(path: Path) -> str:
    """A PNG file as a data: URI (the page then needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def sample_summary(samples: list[dict]) -> list[dict]:
    """[{source, device, field, peak, mean, n}] from the monitor step's sample rows."""
    groups: dict[tuple, list[float]] = {}
    for row in samples:
        groups.setdefault((row["source"], row["device"], row["field"]), []).append(row["value"])
    return [{"source": s, "device": d, "field": f, "peak": max(v), "mean": sum(v) / len(v),
             "n": len(v)} for (s, d, f), v in sorted(groups.items())]


def dashboard_context(book: Logbook, lang: str, run_id: int | None = None,
                      data: dict | None = None, plots: dict[str, Path] | None = None) -> dict:
    from lab.deliver import progress
    from lab.deliver import report
    data = data or report.gather(book, run_id)
    ctx = report.report_context(book, lang, run_id, plots, data)
    metrics_step = data["rec"].latest(
        "metrics", where=lambda st: bool((st.get("values") or {}).get("series"))) or data["metrics"]
    metrics_values = (metrics_step or {}).get("values") or {}
    groups = progress.checklist_state(book, lang)
    servers = [{"id": s["id"], "model": s.get("model"), "tp": s.get("tp"), "host": s.get("host"),
                "port": s.get("port"), "ready_s": s.get("ready_s"), "started_at": s.get("started_at"),
                "command": shell_line(s.get("argv") or [], s.get("env"))}
               for s in reversed(book.servers())][:5]
    ctx.update(report.lenient({
        "images": [{"key": k, "uri": data_uri(p)} for k, p in (plots or {}).items() if p.exists()],
        "series": metrics_values.get("series") or [],
        "metrics_step": metrics_step,
        "monitor_summary": sample_summary(data["samples"]),
        "groups": [{"title": g["title"], "done": g["done"], "total": g["total"], "id": g["id"]}
                   for g in groups],
        "acceptance": [i for g in groups if g["id"].endswith("acceptance") for i in g["entries"]],
        "servers": servers,
        "best_level": max((lv for lv in data["levels"]
                           if lv["summary"].get("output_throughput") is not None),
                          key=lambda lv: lv["summary"]["output_throughput"], default=None),
        "prometheus": prometheus.prometheus_yaml(book),
        "generated_at": ctx["generated_at"],
    }))
    return ctx


def render_dashboard(book: Logbook, lang: str, out_dir: Path, run_id: int | None = None,
                     data: dict | None = None, plots: dict[str, Path] | None = None) -> Path:
    """Render `logbook/dashboard.html` (Command line equivalent: `invoke report`)."""
    from lab.deliver import report
    out_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = report.gather(book, run_id)
    if plots is None:
        plots = report.make_plots(data, out_dir, lang)
    html = render_html("dashboard.html.j2", **dashboard_context(book, lang, run_id, data, plots))
    path = out_dir / "dashboard.html"
    path.write_text(html, encoding="utf-8")
    return path


def render_html(name: str, **context: Any) -> str:
    """Render an HTML template with autoescaping on (unlike the markdown templates)."""
    from lab.deliver.jinja import environment
    env = environment(html=True)
    lang = context["lang"]
    env.globals["t"] = lambda zh, en: zh if lang == "zh" else en
    return env.get_template(name).render(**context)
