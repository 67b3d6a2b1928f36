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
import json
import re
from pathlib import Path
from typing import Any

from lab.record.logbook import Logbook
from lab.vllm.launch import shell_line

_WILDCARD = {"", "0.0.0.0", "::", "[::]", "*"}
_HOST_OK = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")


# ------------------------------------------------------------------------------------ prometheus


def scrape_targets(book: Logbook, default_target: str) -> list[dict]:
    """[{target, model, server_id}] for every distinct host:port a server was started on,
    newest first. A wildcard bind is scraped on 127.0.0.1. With no server recorded, the
    configured address, marked as such."""
    seen: dict[str, dict] = {}
    for server in reversed(book.servers()):
        host, port = str(server.get("host") or ""), server.get("port")
        if not isinstance(port, int) or not _HOST_OK.match(host or "0.0.0.0"):
            continue
        host = "127.0.0.1" if host in _WILDCARD else host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        target = f"{host}:{port}"
        seen.setdefault(target, {"target": target, "model": str(server.get("model") or ""),
                                 "server_id": server["id"]})
    if not seen:
        return [{"target": default_target, "model": "", "server_id": None}]
    return list(seen.values())


def prometheus_yaml(book: Logbook, default_target: str = "127.0.0.1:8000") -> str:
    """The scrape config text. Strings are JSON-quoted, which YAML reads as-is."""
    targets = scrape_targets(book, default_target)
    lines = [
        "# Prometheus scrape config for vLLM, written by `invoke report` from logbook/lab.db",
        "# (the servers table). vLLM serves Prometheus text at /metrics; its --api-key guards",
        "# only the /v1 routes, so no credentials are needed here.",
        "#   prometheus --config.file=logbook/prometheus.yml      # then http://localhost:9090",
        "# Grafana: add this Prometheus as a data source and plot, for example,",
        "#   vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc,",
        "#   rate(vllm:generation_tokens_total[1m]),",
        "#   histogram_quantile(0.99, rate(vllm:time_to_first_token_seconds_bucket[1m])).",
    ]
    if targets[0]["server_id"] is None:
        lines.append("# No server recorded yet (run `invoke serve`): this is the configured address.")
    lines += ["global:", "  scrape_interval: 5s", "  evaluation_interval: 15s", "scrape_configs:",
              '  - job_name: "vllm"', '    metrics_path: "/metrics"', "    static_configs:"]
    for t in targets:
        lines.append(f"      - targets: [{json.dumps(t['target'])}]")
        if t["model"]:
            lines += ["        labels:", f"          model: {json.dumps(t['model'], ensure_ascii=False)}"]
    return "\n".join(lines) + "\n"


def write_prometheus(book: Logbook, out_dir: Path, default_target: str = "127.0.0.1:8000") -> Path:
    path = out_dir / "prometheus.yml"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(prometheus_yaml(book, default_target), encoding="utf-8")
    return path


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
    from lab.deliver import deploy_notes
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
        "prometheus": prometheus_yaml(book),
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
