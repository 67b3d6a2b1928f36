"""Day 4 of seed 000: serve the 14B model with tensor parallelism on two GPUs, check the two
GPUs' memory is balanced, test the API, benchmark (the seed's latency loop, then a serving
sweep over concurrency levels), and read what /metrics says about it.

`invoke day4` runs PLAN in order. Two steps of STEPS are not in PLAN:
- `compare` (the seed's "对比 vLLM vs HuggingFace"): its function is `lab.checklist.steps.compare.compare_step`
  (written apart; imported when the step runs); day4.md shows it with
  templates/_details_compare.md.j2, and the seed's empty table while it has not run.
- `compare-tp`: `invoke day4 --compare-tp` adds it: one benchmark level on TP=2, then TP=1.
"""
from __future__ import annotations

import functools

from lab.checklist.steps import day3
from lab.vllm import process as server
from lab.checklist.seeds import Acceptance
from lab.core.errors import LabError
from lab.core.fmt import fixed, num
from lab.record.runner import Outcome, StepContext, StepSpec, check, require, skip
from lab.record.session import Lab

TITLE_ZH = "Day 4：双卡部署与性能测试"
TITLE_EN = "Day 4: two-GPU deployment and performance testing"

STEPS = [
    StepSpec("gpus", 1, "检查 GPU 资源（至少两张）", "Check GPU resources (at least two)",
             "nvidia-smi"),
    StepSpec("serve", 2, "双卡部署 14B 模型", "Serve the 14B model on two GPUs",
             "CUDA_VISIBLE_DEVICES=0,1 vllm serve Qwen/Qwen2.5-14B-Instruct "
             "--tensor-parallel-size 2 --gpu-memory-utilization 0.9 --max-model-len 2048 --port 8000"),
    StepSpec("balance", 3, "验证双卡负载均衡", "Check the two GPUs are balanced",
             "nvitop  # 两张卡的显存占用是否均衡"),
    StepSpec("api-test", 4, "API 功能测试", "API test",
             "curl http://localhost:8000/v1/chat/completions -H \"Content-Type: application/json\" "
             "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"写一首关于春天的诗\"}], "
             "\"max_tokens\": 512}'"),
    StepSpec("bench", 5, "性能基准测试", "Performance benchmark",
             "python benchmark_vllm.py  # 10 次顺序请求；然后按并发档位压测（vllm bench serve 定义）"),
    StepSpec("compare", 6, "对比 vLLM vs HuggingFace", "Compare vLLM with HuggingFace",
             "invoke compare"),
    StepSpec("compare-tp", 7, "TP=1 与 TP=2 对比", "TP=1 versus TP=2",
             "invoke day4 --compare-tp"),
    StepSpec("metrics", 8, "关键指标解读", "Read the key metrics", "curl http://localhost:8000/metrics"),
]

# What `invoke day4` runs, in order (compare and compare-tp are run on request).
PLAN = ["gpus", "serve", "balance", "api-test", "bench", "metrics"]

# Shown for a step of STEPS that this run did not run.
NOT_RUN_HINT = {"compare": "invoke compare", "compare-tp": "invoke day4 --compare-tp"}

# The seed's "Day 4 验收标准", each ticked from one recorded criterion (or step).
ACCEPTANCE = [
    Acceptance("双卡 14B 模型成功部署", "the 14B model is served on two GPUs", "serve", "tp_gpus"),
    Acceptance("两张卡显存占用均衡（误差 < 10%）", "the two GPUs' memory is balanced (within 10 %)",
               "balance", "spread_pct"),
    Acceptance("完成性能基准测试", "the performance benchmark completed", "bench"),
    Acceptance("能解读关键性能指标", "the key performance metrics are read and explained", "metrics"),
]

NEEDS = {"serve": "gpus", "balance": "serve", "api-test": "serve", "bench": "serve",
         "metrics": "bench", "compare-tp": "serve"}


def plan(compare_tp: bool = False) -> list[str]:
    """The keys `invoke day4` runs; `--compare-tp` adds the TP=1 vs TP=2 step."""
    return PLAN + (["compare-tp"] if compare_tp else [])


# -- step 2 ------------------------------------------------------------------------------
def serve(lab: Lab, ctx: StepContext, tp: int = 2, model_of: str = "day4",
          model: str | None = None) -> Outcome:
    """Start the TP server (lab.vllm.launch), then check it runs `tp` worker ranks and, on a GPU
    profile, that `tp` GPUs hold memory. The GPU check is skipped on the CPU profile."""
    from lab.measure import procstats
    out = day3.serve(lab, ctx, tp=tp, model_of=model_of, model=model)
    state = server.require_running(lab.state_path)
    workers = [w for w in procstats.vllm_workers(state.pid) if "TP" in w["title"]]
    out.values["tp_workers"] = workers
    if tp > 1:
        out.criteria.append(check("tp_workers", "TP worker 进程数", "TP worker processes",
                                  len(workers), ">=", tp))
    label = (f"TP={tp} 部署在 {tp} 张 GPU 上（每张占用 > 1 GiB）",
             f"TP={tp} served on {tp} GPUs (> 1 GiB used on each)")
    if not lab.has_gpu:
        out.criteria.append(skip("tp_gpus", *label, lab.no_gpu_reason(), ">=", tp,
                                 measured=f"{len(workers)} CPU TP workers"))
        return out
    used = _gpu_used_mib(state)
    holding = sum(1 for mib in used.values() if mib is not None and mib > 1024)
    out.values["gpu_used_mib"] = used
    out.criteria.append(check("tp_gpus", *label, holding, ">=", tp))
    return out


def _gpu_used_mib(state: server.ServerState) -> dict[str, float | None]:
    """NVML used memory of the server's GPUs (its CUDA_VISIBLE_DEVICES), by index."""
    from lab.measure import nvml
    wanted = {int(i) for i in day3.server_env_gpus(state)}
    return {str(g.index): g.memory_used_mib for g in nvml.query_gpus() if g.index in wanted}


# -- step 3 ------------------------------------------------------------------------------
def balance(lab: Lab, ctx: StepContext) -> Outcome:
    """Seed: "观察两张卡的显存占用是否均衡". GPU profile: NVML used memory of the server's GPUs.
    CPU profile: the RSS of the `VLLM::Worker_TP*` processes (labelled so: not GPU memory).
    Passes when (max - min) / max < thresholds.tp_balance_pct."""
    from lab.vllm import diagnose
    from lab.measure import nvml
    from lab.measure import procstats
    state = server.require_running(lab.state_path)
    th = lab.cfg["thresholds"]["tp_balance_pct"]
    if lab.has_gpu:
        used = _gpu_used_mib(state)
        devices = [{"device": f"GPU{k}", "used_mib": v} for k, v in used.items()]
        source, what = "nvml", ("两张 GPU 的显存占用差异", "difference in GPU memory used")
        command = "nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv"
    else:
        workers = [w for w in procstats.vllm_workers(state.pid) if "TP" in w["title"]]
        devices = [{"device": w["title"], "pid": w["pid"], "used_mib": w["rss_mib"]} for w in workers]
        source = "process_rss"
        what = ("两个 TP worker 进程的 RSS 差异（CPU 配置：测的是进程内存，不是显存）",
                "difference in RSS of the TP worker processes (CPU profile: process memory, not GPU memory)")
        command = "ps -eo pid,rss,args | grep 'VLLM::Worker_TP'"
    figures = nvml.balance([d["used_mib"] for d in devices])
    spread = figures["spread_pct"]
    crits = [require("tp", "服务以 TP ≥ 2 运行", "the server runs with TP >= 2", state.tp >= 2,
                     state.tp, reason=f"the running server has TP={state.tp}: run `invoke serve --tp 2`"),
             check("devices", "测到的设备数" if lab.has_gpu else "测到的 TP worker 进程数",
                   "devices measured" if lab.has_gpu else "TP worker processes measured",
                   figures["n"], ">=", 2)]
    measured = None if spread is None else round(spread, 2)
    if lab.has_gpu:
        crits.append(check("spread_pct", *what, measured, "<", th, "%"))
    else:
        # The seed's criterion is GPU memory: skipped here, never passed. The worker RSS
        # spread is measured and judged as its own, differently named criterion.
        crits += [check("worker_rss_spread_pct", *what, measured, "<", th, "%"),
                  skip("spread_pct", "两张 GPU 的显存占用差异", "difference in GPU memory used",
                       lab.no_gpu_reason(), "<", th, "%")]
    values = {"source": source, "devices": devices, "threshold_pct": th, "tp": state.tp,
              **{f"{k}_mib" if k in ("max", "min") else k: v for k, v in figures.items()}}
    shown = ", ".join(f"{d['device']} {fixed(d['used_mib'], 0)} MiB" for d in devices) or "nothing measured"
    fix = evidence = None
    if spread is not None and spread >= th:
        if lab.has_gpu:  # seed Q2: CUDA_VISIBLE_DEVICES, other processes on the heavy GPU
            found = diagnose.diagnose_balance({k: v for k, v in used.items() if v is not None},
                                              th, lab.lang)
            fix, evidence = found.fix, f"{found.title}\n{found.matched_line}"
        else:
            fix, evidence = _CPU_BALANCE_FIX[lab.lang], f"{shown} (spread {spread:.1f} %)"
    label = "GPU memory used" if lab.has_gpu else "CPU profile, TP worker RSS (not GPU memory)"
    actual = (f"{label}: {shown}; spread "
              f"{'n/a' if spread is None else f'{spread:.2f} %'} (threshold {th:g} %)")
    return Outcome(crits, actual, values, evidence=evidence, command=command, fix=fix)


_CPU_BALANCE_FIX = {
    "zh": "检查 `VLLM_CPU_OMP_THREADS_BIND`（每个 TP rank 一组核，用 | 分隔）以及同机的其他进程",
    "en": "Check `VLLM_CPU_OMP_THREADS_BIND` (one core list per TP rank, separated by |) and other processes on the machine",
}


# -- step 5 ------------------------------------------------------------------------------
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

    with bench.progress_bar(lab.console) as progress:
        result = bench.run_bench(lab.url, model, plan, api_key=lab.api_key, record=record,
                                 is_alive=lambda: server.is_alive(state), progress=progress,
                                 seed=ctx.step_id)
    values = {**result.values(), "model": model, "tp": state.tp, "profile": lab.profile_name}
    if result.died_during:
        _raise_died(state, f"during the benchmark ({result.died_during})", values,
                    lab.book.requests(ctx.step_id))
    return Outcome(bench.criteria(result), bench.summary_line(result), values,
                   fix=bench.timeout_fix(result, lab.lang), command=plan.command(lab.url))


def _raise_died(state: server.ServerState, during: str, values: dict, rows: list[dict]) -> None:
    """ServerDied for a server gone mid-benchmark; the partial results stay in the record."""
    ok = sum(1 for r in rows if r["ok"])
    err = server.died_error(state, f"{during}: {ok} finished requests kept, "
                                   f"{len(rows) - ok} recorded as failed")
    err.values = values
    raise err


# -- step 7 ------------------------------------------------------------------------------
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
    with bench.progress_bar(lab.console) as progress:
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


# -- step 8 ------------------------------------------------------------------------------
def metrics_step(lab: Lab, ctx: StepContext) -> Outcome:
    """The key series now (as Day 3, with meanings and the seed's old names), plus what the
    server counted during the recorded benchmark: deltas, peak KV-cache usage, queue time."""
    from lab.measure import bench
    out = day3.metrics_step(lab, ctx)
    row = _bench_record(lab, ctx)
    if row is None:
        out.criteria.append(require("bench_deltas", "基准测试前后的 /metrics 增量",
                                    "/metrics deltas around the benchmark", False,
                                    reason="no benchmark recorded: run `invoke bench` first"))
        return out
    bv = row["values"]
    delta = (bv.get("metrics") or {}).get("delta") or {}
    client = bv.get("client") or {}
    finished = delta.get("requests_finished")
    out.criteria.append(check("bench_deltas", "基准测试期间服务端完成的请求数（/metrics 增量）",
                              "requests the server finished during the benchmark (/metrics delta)",
                              finished, ">", 0))
    label = ("服务端生成 token 数（Δ vllm:generation_tokens_total）= 客户端 usage 合计",
             "server-counted output tokens (Δ vllm:generation_tokens_total) = the client's usage total")
    gen = delta.get("generation_tokens")
    if client.get("failed"):
        out.criteria.append(skip("tokens_match", *label,
                                 f"{client['failed']} requests failed: the two counts may differ",
                                 measured=gen))
    else:
        out.criteria.append(require("tokens_match", *label,
                                    gen is not None and round(gen) == client.get("output_tokens"),
                                    f"{bench.fmt_int(gen)} vs {bench.fmt_int(client.get('output_tokens'))}",
                                    reason="the counts differ"))
    rows = bench.interpret(bv)
    out.values.update(interpretation=rows, bench_step_id=row["id"], bench_run_id=row["run_id"],
                      delta=delta, kv=(bv.get("metrics") or {}).get("kv"), client=client)
    out.actual += "; benchmark: " + "; ".join(
        f"{r['label_en']} {num(r['value'])} {r['unit']}" for r in rows[:6])
    return out


def _bench_record(lab: Lab, ctx: StepContext) -> dict | None:
    """The bench step of this run, else the latest one recorded against the server that is
    running now: deltas of an older server must not be read as this one's."""
    mine = [s for s in lab.book.steps(ctx.run_id) if s["key"] == "bench" and s["values"].get("client")]
    if mine:
        return mine[-1]
    latest = lab.book.latest_steps("day4").get("bench")
    state = server.require_running(lab.state_path)
    if not latest or not latest["values"].get("client"):
        return None
    return latest if latest["started_at"] >= state.started_at else None


# -- step 6 (written apart) -----------------------------------------------------------------
def compare(lab: Lab, ctx: StepContext, **kw) -> Outcome:
    """The HF baseline (`lab.checklist.steps.compare.compare_step`), imported only when this step runs."""
    from lab.checklist.steps.compare import compare_step
    return compare_step(lab, ctx, **kw)


FUNCS = {"gpus": functools.partial(day3.gpus, min_gpus=2), "serve": serve, "balance": balance,
         "api-test": functools.partial(day3.api_test, day="day4"), "bench": bench_step,
         "compare": compare, "compare-tp": compare_tp, "metrics": metrics_step}
