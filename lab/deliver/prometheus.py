"""`logbook/prometheus.yml`: a Prometheus scrape config for the vLLM servers the learner started
(the `servers` table). Command line equivalent: `prometheus --config.file=logbook/prometheus.yml`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lab.core.net import host_port
from lab.deliver.gather import LabData

_HOST_OK = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")


def scrape_targets(data: LabData, default_target: str) -> list[dict]:
    """[{target, model, server_id}] for every distinct host:port a server was started on,
    newest first. A wildcard bind is scraped on loopback (lab.core.net). With no server recorded, the
    configured address, marked as such."""
    seen: dict[str, dict] = {}
    for server in reversed(data.records.servers):
        host, port = str(server.host or ""), server.port
        if not isinstance(port, int) or not _HOST_OK.match(host or "0.0.0.0"):
            continue
        target = host_port(host, port)  # a wildcard bind is scraped on loopback
        seen.setdefault(
            target, {"target": target, "model": str(server.model or ""), "server_id": server.id}
        )
    if not seen:
        return [{"target": default_target, "model": "", "server_id": None}]
    return list(seen.values())


def prometheus_yaml(data: LabData, default_target: str = "127.0.0.1:8000") -> str:
    """The scrape config text. Strings are JSON-quoted, which YAML reads as-is."""
    targets = scrape_targets(data, default_target)
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
        lines.append(
            "# No server recorded yet (run `invoke serve`): this is the configured address."
        )
    lines += [
        "global:",
        "  scrape_interval: 5s",
        "  evaluation_interval: 15s",
        "scrape_configs:",
        '  - job_name: "vllm"',
        '    metrics_path: "/metrics"',
        "    static_configs:",
    ]
    for t in targets:
        lines.append(f"      - targets: [{json.dumps(t['target'])}]")
        if t["model"]:
            lines += [
                "        labels:",
                f"          model: {json.dumps(t['model'], ensure_ascii=False)}",
            ]
    return "\n".join(lines) + "\n"


def write_prometheus(data: LabData, out_dir: Path, default_target: str = "127.0.0.1:8000") -> Path:
    """Write `logbook/prometheus.yml` (Command line equivalent: `invoke report`)."""
    path = out_dir / "prometheus.yml"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(prometheus_yaml(data, default_target), encoding="utf-8")
    return path
