"""Step 7 (Day 3) and Day 4's metrics step: the key `vllm:` series as the server exports
them, and what the server counted during the recorded benchmark. What they mean is
lab.explain.metrics'."""

from __future__ import annotations

from typing import Any

from lab.core.fmt import num
from lab.explain.metrics import count, interpret
from lab.record.runner import Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.record.values import (
    BenchValues,
    ClientTotals,
    MetricsDelta,
    MetricsValues,
    OldNameReading,
    SeriesReading,
)
from lab.vllm import process as server


def metrics_step(lab: Lab, ctx: StepContext) -> Outcome:
    """Scrape /metrics and check the key `vllm:` series are present, with their values."""
    from lab.vllm import metrics

    server.require_running(lab.state_path)
    text = metrics.scrape(lab.url, api_key=lab.api_key)
    snap = metrics.parse(text)
    rows = metrics.key_series_rows(snap, lab.lang)
    present = [r for r in rows if r["present"]]
    missing = [r["name"] for r in rows if not r["present"]]
    crit = check(
        "key_series",
        "关键 vllm: 指标齐全",
        "key vllm: series present",
        len(present),
        ">=",
        len(rows),
    )
    if missing:
        crit.reason = "missing: " + ", ".join(missing)
    values = MetricsValues(
        series=[
            SeriesReading(r["name"], r["present"], r["value"], r["count"], r["found_as"])
            for r in rows
        ],
        old_names=[
            OldNameReading(
                r["old_name"], r.get("old_present"), list(r.get("current_present") or [])
            )
            for r in metrics.old_name_rows(snap, lab.lang)
        ],
        vllm_series=sum(1 for line in text.splitlines() if line.startswith("vllm:")),
    )
    actual = f"{len(present)}/{len(rows)} key series present; " + "; ".join(
        f"{r['name']} = {_fmt_value(r['value'])}" for r in present[:6]
    )
    evidence = "\n".join(
        line for line in text.splitlines() if line.startswith(tuple(r["name"] for r in present[:4]))
    )[:1200]
    return Outcome([crit], actual, values, evidence=evidence, command=f"curl {lab.url}/metrics")


def _fmt_value(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def metrics_after_bench(lab: Lab, ctx: StepContext) -> Outcome:
    """The key series now (as Day 3, with meanings and the seed's old names), plus what the
    server counted during the recorded benchmark: deltas, peak KV-cache usage, queue time."""
    out = metrics_step(lab, ctx)
    assert isinstance(out.values, MetricsValues)
    row = _bench_record(lab, ctx)
    if row is None:
        out.criteria.append(
            require(
                "bench_deltas",
                "基准测试前后的 /metrics 增量",
                "/metrics deltas around the benchmark",
                False,
                reason="no benchmark recorded: run `invoke bench` first",
            )
        )
        return out
    bench_values = row["values"]
    assert isinstance(bench_values, BenchValues)
    delta = bench_values.metrics.delta or MetricsDelta()
    client = bench_values.client or ClientTotals()
    finished = delta.requests_finished
    out.criteria.append(
        check(
            "bench_deltas",
            "基准测试期间服务端完成的请求数（/metrics 增量）",
            "requests the server finished during the benchmark (/metrics delta)",
            finished,
            ">",
            0,
        )
    )
    label = (
        "服务端生成 token 数（Δ vllm:generation_tokens_total）= 客户端 usage 合计",
        "server-counted output tokens (Δ vllm:generation_tokens_total) = the client's usage total",
    )
    gen = delta.generation_tokens
    if client.failed:
        out.criteria.append(
            skip(
                "tokens_match",
                *label,
                f"{client.failed} requests failed: the two counts may differ",
                measured=gen,
            )
        )
    else:
        out.criteria.append(
            require(
                "tokens_match",
                *label,
                gen is not None and round(gen) == client.output_tokens,
                f"{count(gen)} vs {count(client.output_tokens)}",
                reason="the counts differ",
            )
        )
    v = out.values
    v.bench_step_id, v.bench_run_id = row["id"], row["run_id"]
    v.delta, v.kv, v.client = (
        bench_values.metrics.delta,
        bench_values.metrics.kv,
        bench_values.client,
    )
    readings = interpret(v.figures(), "en")
    out.actual += "; benchmark: " + "; ".join(
        f"{r.label} {num(r.value)} {r.unit}" for r in readings[:6]
    )
    return out


def _bench_record(lab: Lab, ctx: StepContext) -> dict | None:
    """The bench step of this run, else the latest one recorded against the server that is
    running now: deltas of an older server must not be read as this one's."""

    def measured(step: dict | None) -> bool:
        return (
            step is not None
            and isinstance(step["values"], BenchValues)
            and step["values"].client is not None
        )

    mine = [s for s in lab.book.steps(ctx.run_id) if s["key"] == "bench" and measured(s)]
    if mine:
        return mine[-1]
    latest = lab.book.latest_steps("day4").get("bench")
    state = server.require_running(lab.state_path)
    if not measured(latest):
        return None
    assert latest is not None
    return latest if latest["started_at"] >= state.started_at else None
