"""Day 4: the benchmark step (the seed's latency loop, then the concurrency sweep) and its verdict."""

from __future__ import annotations

from lab.core.fmt import fixed
from lab.measure.bench import BenchPlan, BenchResult
from lab.record.runner import Criterion, Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import (
    BenchMetrics,
    BenchValues,
    ClientTotals,
    KvUsage,
    LatencyLoop,
    LevelSummary,
    MetricsDelta,
    StepValues,
    SweepPlan,
)
from lab.ui.progress import phase_bars
from lab.vllm import process as server


def bench_step(lab: Lab, ctx: StepContext) -> Outcome:
    """The seed's latency loop, then the concurrency sweep, each request recorded as it
    finishes; /metrics before and after, KV-cache usage polled during the sweep."""
    from lab.measure import bench

    state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    plan = bench.BenchPlan.from_cfg(lab.cfg)
    book = lab.book

    def record(phase, rec):
        book.add_request(ctx.run_id, ctx.step_id, phase, rec.to_dict())

    with phase_bars(lab.console) as start_phase:
        result = bench.run_bench(
            lab.url,
            model,
            plan,
            api_key=lab.api_key,
            record=record,
            is_alive=lambda: server.is_alive(state),
            start_phase=start_phase,
            seed=ctx.step_id,
        )
    values = bench_values(result, model=model, tp=state.tp, profile=lab.profile_name)
    if plan.save_result and values.plan is not None:
        values.plan.exported = export_levels(lab, ctx, plan, model)
    if result.died_during:
        _raise_died(
            state,
            f"during the benchmark ({result.died_during})",
            values,
            lab.book.requests(ctx.step_id),
        )
    crits = criteria(result)
    name_errors(crits, lab.book.requests(ctx.step_id))
    return Outcome(
        crits,
        summary_line(result),
        values,
        fix=timeout_fix(result, lab.lang),
        command=plan.command(lab.url),
    )


def name_errors(crits: list[Criterion], rows: list[dict]) -> None:
    """A criterion failed on failed requests names their top error reasons with counts."""
    from lab.measure.stats import errors_line

    for c in crits:
        if c.key == "no_errors" and c.status == "fail":
            c.reason = f"{c.reason}: {errors_line(r for r in rows if r['error'] != 'timeout')}"


def export_levels(lab: Lab, ctx: StepContext, plan: BenchPlan, model: str) -> list[str]:
    """Each level of the sweep as `vllm bench serve --save-result` JSON (its field names),
    from the requests recorded: logbook/bench/run<R>-c<C>.json. Returns the paths."""
    from lab.measure import export

    rows = lab.book.requests(ctx.step_id, phase="sweep")
    out = []
    for c in plan.levels:
        level = [r for r in rows if r["concurrency"] == c]
        if not level:
            continue
        path = lab.logbook_dir / "bench" / f"run{ctx.run_id}-c{c}.json"
        export.write(
            path,
            export.bench_serve_json(
                level,
                None,
                model_id=model,
                num_prompts=plan.num_requests,
                request_rate=plan.request_rate,
                burstiness=plan.burstiness,
                max_concurrency=c,
                goodput=plan.goodput or None,
                label="vllm-lab bench",
            ),
        )
        out.append(str(path))
    return out


def sweep_plan(plan: BenchPlan) -> SweepPlan:
    """The plan as the step records it."""
    return SweepPlan(
        levels=list(plan.levels),
        input_tokens=plan.input_len,
        output_tokens=plan.output_len,
        num_requests=plan.num_requests,
        warmup_requests=plan.warmup,
        duration_s=plan.duration_s,
        latency_runs=plan.latency_runs,
        latency_prompt=plan.latency_prompt,
        latency_max_tokens=plan.latency_max_tokens,
        timeout_s=plan.timeout_s,
        kv_poll_s=plan.kv_poll_s,
        request_rate=None if plan.request_rate == float("inf") else plan.request_rate,
        burstiness=plan.burstiness,
        goodput_ms=dict(plan.goodput),
    )


def bench_values(
    result: BenchResult, *, model: str | None, tp: int, profile: str | None
) -> BenchValues:
    """What the bench measured, as the step records it."""
    m = result.metrics
    return BenchValues(
        plan=sweep_plan(result.plan),
        latency=LatencyLoop.from_summary(result.latency) if result.latency else None,
        levels=[LevelSummary.from_summary(row) for row in result.levels],
        metrics=BenchMetrics(
            delta=MetricsDelta(**m["delta"]) if m.get("delta") else None,
            kv=KvUsage.from_poller(m["kv"]) if m.get("kv") else None,
            error=m.get("error"),
        ),
        client=ClientTotals(**result.client),
        died_during=result.died_during,
        model=model,
        tp=tp,
        profile=profile,
    )


def _raise_died(
    state: server.ServerState, during: str, values: StepValues, rows: list[dict]
) -> None:
    """ServerDied for a server gone mid-benchmark; the partial results stay in the record."""
    ok = sum(1 for r in rows if r["ok"])
    err = server.died_error(
        state, f"{during}: {ok} finished requests kept, {len(rows) - ok} recorded as failed"
    )
    err.values = values
    raise err


def errors_and_timeouts(result: BenchResult) -> tuple[int, int]:
    """Failed requests that were not timeouts, and timeouts (warm-ups included)."""
    c = result.client
    return c["failed"] - c["timeouts"], c["timeouts"]


def criteria(result: BenchResult) -> list[Criterion]:
    """Passes when every level ran, every level measured a throughput, and no request
    failed. Timeouts are counted and reported, not judged (seed Q3: they mean the load is
    beyond what the server answers in time)."""
    lat = result.latency or {}
    ran, planned = len(result.levels), len(result.plan.levels)
    errors, timeouts = errors_and_timeouts(result)
    measured = [lvl for lvl in result.levels if lvl.get("completed")]
    return [
        require(
            "latency_loop",
            f"延迟循环 {result.plan.latency_runs} 次请求均有回复",
            f"the latency loop's {result.plan.latency_runs} requests were answered",
            lat.get("ok", 0) + lat.get("timeouts", 0) == lat.get("runs", -1)
            and lat.get("ok", 0) > 0,
            f"{lat.get('ok', 0)}/{lat.get('runs', 0)}",
            reason="requests failed",
        ),
        require(
            "levels",
            "所有并发档位都已运行",
            "every concurrency level ran",
            ran == planned,
            f"{ran}/{planned}",
            reason=f"{planned - ran} level(s) not run",
        ),
        require(
            "throughput",
            "每个档位都测得吞吐量",
            "each level measured a throughput",
            bool(result.levels) and len(measured) == ran,
            f"{len(measured)}/{ran}",
            reason="a level had no successful request",
        ),
        require(
            "no_errors",
            "无失败请求（超时单独计数）",
            "no failed request (timeouts counted apart)",
            errors == 0,
            f"{errors} failed, {timeouts} timeouts",
            reason=f"{errors} request(s) failed",
        ),
    ]


def timeout_fix(result: BenchResult, lang: str) -> str | None:
    """Seed Q3's advice when requests timed out (counted, not fatal)."""
    _, timeouts = errors_and_timeouts(result)
    if not timeouts:
        return None
    if lang == "zh":
        return (
            f"{timeouts} 个请求超时：降低并发数（--concurrency），或调大 api.timeout_s"
            "（INVOKE_LAB_API_TIMEOUT_S）；种子 Q3"
        )
    return (
        f"{timeouts} request(s) timed out: lower the concurrency (--concurrency) or raise "
        "api.timeout_s (INVOKE_LAB_API_TIMEOUT_S); seed Q3"
    )


def summary_line(result: BenchResult) -> str:
    """One line for 实际结果."""
    lat = result.latency or {}
    parts = []
    if lat.get("avg_latency_ms") is not None:
        parts.append(
            f"latency loop: avg {lat['avg_latency_ms']:,.0f} ms (min "
            f"{lat['min_latency_ms']:,.0f}, max {lat['max_latency_ms']:,.0f}) over "
            f"{lat['ok']}/{lat['runs']} requests"
        )
    for lvl in result.levels:
        parts.append(
            f"c={lvl['concurrency']}: {fixed(lvl.get('output_throughput'))} out tok/s, "
            f"{fixed(lvl.get('request_throughput'), 2)} req/s, TTFT p50 "
            f"{fixed(lvl['ttft_ms']['median'])} ms ({lvl['completed']}/{lvl['requests']} ok)"
        )
    errors, timeouts = errors_and_timeouts(result)
    parts.append(f"{errors} failed, {timeouts} timeouts")
    kv = result.metrics.get("kv") or {}
    if kv.get("peak_kv_cache_usage_perc") is not None:
        parts.append(f"peak KV-cache usage {kv['peak_kv_cache_usage_perc'] * 100:.2f} %")
    return "; ".join(parts)
