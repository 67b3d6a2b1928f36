"""Day 4 `--compare-tp`: one benchmark level on TP=2 and on TP=1, side by side."""

from __future__ import annotations

from lab.checklist.steps.bench import _raise_died, sweep_plan
from lab.core.errors import LabError
from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import CompareTpValues, LevelSummary, ServeValues, TpSide
from lab.ui.progress import progress_bar
from lab.vllm import process as server


def compare_tp(lab: Lab, ctx: StepContext, concurrency: int | None = None) -> Outcome:
    """One benchmark level on TP=2 and on TP=1 with the same prompts, side by side. Uses the
    running TP=2 server when there is one, then restarts as TP=1 (left running)."""
    from lab.measure import bench

    c = concurrency or lab.cfg["bench"]["compare_tp_concurrency"]
    plan = bench.BenchPlan.from_cfg(lab.cfg)
    values = CompareTpValues(concurrency=c, plan=sweep_plan(plan), profile=lab.profile_name)
    for tp in (2, 1):
        values.sides.append(_tp_side(lab, ctx, tp, c, plan, values))
    by_tp = {s.tp: s.summary for s in values.sides}
    r = values.ratios
    assert r is not None
    from lab.measure.stats import errors_line

    rows = lab.book.requests(ctx.step_id)
    crits = [
        require(
            f"tp{tp}",
            f"TP={tp} 的档位测得且无失败",
            f"TP={tp} level measured with no failure",
            (by_tp[tp].completed or 0) > 0 and by_tp[tp].failed == 0,
            f"{by_tp[tp].completed} ok, {by_tp[tp].failed} failed",
            reason=f"requests failed: {errors_line(r for r in rows if (r['level'] or '').startswith(f'tp{tp}-'))}",
        )
        for tp in (2, 1)
    ]
    actual = "; ".join(
        f"TP={tp}: {fixed(s.output_tok_s)} out tok/s, TTFT p50 "
        f"{fixed(s.ttft_ms.median)} ms, server TPOT "
        f"{fixed(s.server.mean_tpot_ms if s.server else None, 2)} ms"
        for tp, s in sorted(by_tp.items(), reverse=True)
    )
    actual += (
        f"; TP=2/TP=1 (c={c}): output throughput ×{fixed(r.output_tok_s, 2)}, "
        f"server TPOT ×{fixed(r.server_tpot, 2)}"
    )
    return Outcome(crits, actual, values)


def _tp_side(lab: Lab, ctx: StepContext, tp: int, c: int, plan, values: CompareTpValues) -> TpSide:
    """Start (or reuse) a TP=`tp` server and run the level on it."""
    from lab.checklist.steps.serve import start_and_wait
    from lab.measure import bench, prompts

    state = server.load(lab.state_path)
    facts: ServeValues | None
    if state and server.is_alive(state) and state.tp == tp:
        facts = next((s["facts"] for s in lab.book.servers() if s["id"] == state.server_id), None)
    else:
        try:
            started = start_and_wait(lab, ctx, "day4", tp).values
        except LabError as err:
            err.values = values
            raise
        facts = started if isinstance(started, ServeValues) else None
        state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    pool = prompts.token_pool(lab.url, model, api_key=lab.api_key)
    book = lab.book
    with progress_bar(lab.console) as progress:
        task = progress.add_task(f"TP={tp}, c={c}", total=plan.num_requests)
        row = bench.run_level(
            lab.url,
            model,
            plan,
            c,
            pool,
            phase="compare-tp",
            level=f"tp{tp}-c{c}",
            seed=ctx.step_id,
            api_key=lab.api_key,
            record=lambda phase, rec: book.add_request(
                ctx.run_id, ctx.step_id, phase, rec.to_dict()
            ),
            advance=lambda: progress.advance(task),
        )
    if not server.is_alive(state):
        _raise_died(state, f"during the TP={tp} level", values, book.requests(ctx.step_id))
    return TpSide(
        tp=tp,
        summary=LevelSummary.from_summary(row),
        ready_s=facts.ready_s if facts else None,
        kv_cache_tokens=facts.kv_cache_tokens if facts else None,
        argv=list(state.argv or []),
    )
