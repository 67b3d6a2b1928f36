"""Day 4 `--compare-tp`: one benchmark level on TP=2 and on TP=1, side by side."""
from __future__ import annotations

from lab.ui.progress import progress_bar
from lab.checklist.steps.bench import _raise_died


from lab.core.errors import LabError
from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.vllm import process as server


def compare_tp(lab: Lab, ctx: StepContext, concurrency: int | None = None) -> Outcome:
    """One benchmark level on TP=2 and on TP=1 with the same prompts, side by side. Uses the
    running TP=2 server when there is one, then restarts as TP=1 (left running)."""
    from lab.measure import bench
    c = concurrency or lab.cfg["bench"]["compare_tp_concurrency"]
    plan = bench.BenchPlan.from_cfg(lab.cfg)
    sides: list[dict] = []
    values = {"concurrency": c, "plan": plan.public(), "sides": sides, "profile": lab.profile_name}
    for tp in (2, 1):
        sides.append(_tp_side(lab, ctx, tp, c, plan, values))
    by_tp = {s["tp"]: s["summary"] for s in sides}
    values["ratios"] = r = _ratios(by_tp[2], by_tp[1])
    crits = [require(f"tp{tp}", f"TP={tp} 的档位测得且无失败", f"TP={tp} level measured with no failure",
                     by_tp[tp]["completed"] > 0 and by_tp[tp]["failed"] == 0,
                     f"{by_tp[tp]['completed']} ok, {by_tp[tp]['failed']} failed",
                     reason="requests failed") for tp in (2, 1)]
    actual = "; ".join(
        f"TP={tp}: {fixed(s['output_throughput'])} out tok/s, TTFT p50 "
        f"{fixed(s['ttft_ms']['median'])} ms, server TPOT {fixed(_server(s, 'tpot'), 2)} ms"
        for tp, s in sorted(by_tp.items(), reverse=True))
    actual += (f"; TP=2/TP=1 (c={c}): output throughput ×{fixed(r['output_throughput'], 2)}, "
               f"server TPOT ×{fixed(r['server_tpot'], 2)}")
    return Outcome(crits, actual, values)


def _tp_side(lab: Lab, ctx: StepContext, tp: int, c: int, plan, values: dict) -> dict:
    """Start (or reuse) a TP=`tp` server and run the level on it."""
    from lab.measure import bench
    from lab.measure import prompts
    from lab.checklist.steps.serve import start_and_wait
    state = server.load(lab.state_path)
    if state and server.is_alive(state) and state.tp == tp:
        facts = next((s["facts"] or {} for s in lab.book.servers() if s["id"] == state.server_id), {})
    else:
        try:
            facts = start_and_wait(lab, ctx, "day4", tp).values
        except LabError as err:
            err.values = values
            raise
        state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    pool = prompts.token_pool(lab.url, model, api_key=lab.api_key)
    book = lab.book
    with progress_bar(lab.console) as progress:
        task = progress.add_task(f"TP={tp}, c={c}", total=plan.num_requests)
        row = bench.run_level(
            lab.url, model, plan, c, pool, phase="compare-tp", level=f"tp{tp}-c{c}",
            seed=ctx.step_id, api_key=lab.api_key,
            record=lambda phase, rec: book.add_request(ctx.run_id, ctx.step_id, phase, rec.to_dict()),
            advance=lambda: progress.advance(task))
    if not server.is_alive(state):
        _raise_died(state, f"during the TP={tp} level", values, book.requests(ctx.step_id))
    return {"tp": tp, "ready_s": facts.get("ready_s"), "kv_cache_tokens": facts.get("kv_cache_tokens"),
            "summary": row, "argv": state.argv}


def _server(summary: dict, key: str) -> float | None:
    return (summary.get("server") or {}).get(f"mean_{key}_ms")


def _ratios(tp2: dict, tp1: dict) -> dict:
    def ratio(a, b):
        return None if a is None or not b else a / b
    return {"output_throughput": ratio(tp2.get("output_throughput"), tp1.get("output_throughput")),
            "tpot_median": ratio(tp2["tpot_ms"]["median"], tp1["tpot_ms"]["median"]),
            "ttft_median": ratio(tp2["ttft_ms"]["median"], tp1["ttft_ms"]["median"]),
            "e2el_median": ratio(tp2["e2el_ms"]["median"], tp1["e2el_ms"]["median"]),
            "server_tpot": ratio(_server(tp2, "tpot"), _server(tp1, "tpot")),
            "server_ttft": ratio(_server(tp2, "ttft"), _server(tp1, "ttft"))}
