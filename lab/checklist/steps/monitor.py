"""Step 5: NVML (or, on the cpu profile, the server's processes) sampled while a load runs."""

from __future__ import annotations

from lab.checklist.steps.serve import server_env_gpus
from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.record.values import LoadPlan, LoadSummary, MonitorValues, SamplerStats, SampleSummary
from lab.vllm import process as server


def monitor(lab: Lab, ctx: StepContext, duration_s: float | None = None) -> Outcome:
    """Sample NVML (or, on CPU, the server's processes) while a load runs; judge memory
    used and utilisation at their peak under that load."""
    from lab.measure import loadgen, nvml, procstats, prompts
    from lab.measure import stats as stats_mod
    from lab.measure.sampler import Sampler
    from lab.record.logbook import Logbook

    state = server.require_running(lab.state_path)
    mon = lab.cfg["monitor"]
    th = lab.cfg["thresholds"]
    model = state.served_model_name or state.model
    default_s = mon["duration_s"] if lab.has_gpu else lab.cfg["cpu"]["monitor_duration_s"]
    workload = loadgen.Workload(
        input_len=mon["input_len"],
        output_len=mon["output_len"],
        concurrency=mon["concurrency"],
        duration_s=duration_s or default_s,
        warmup_requests=0,
        timeout_s=lab.cfg["api"]["timeout_s"],
    )
    loadgen.validate_workload(workload, lab.cfg["max_model_len"])
    pool = prompts.token_pool(lab.url, model, api_key=lab.api_key)
    plist = prompts.synthetic_prompts(pool, 512, workload.input_len, seed=ctx.step_id)
    if lab.has_gpu:
        gpu_ids = [int(i) for i in server_env_gpus(state)]
        sample_fn = lambda: nvml.sample_gpus(gpu_ids)  # noqa: E731
        source = "nvml"
    else:
        sample_fn = procstats.ProcessSampler(state.pid)
        source = "process"
    db_path, run_id, step_id = lab.book.path, ctx.run_id, ctx.step_id

    def sink_factory():
        book = Logbook(db_path)  # the sampler thread's own connection
        return lambda rows: book.add_samples(run_id, step_id, rows)

    book = lab.book

    def on_record(rec):
        # Every request with its error, as it finishes: a failed one is never silent.
        book.add_request(run_id, step_id, "monitor", rec.to_dict())

    sampler = Sampler(sample_fn, sink_factory, interval_s=mon["interval_s"])
    with (
        sampler,
        lab.console.status(
            f"driving load (c={workload.concurrency}) for "
            f"{workload.duration_s:g} s while sampling {source} …"
        ),
    ):
        result = loadgen.run_level_sync(
            lab.url,
            model,
            plist,
            workload,
            api_key=lab.api_key,
            on_record=on_record,
            level="monitor",
        )
    summary = [SampleSummary(**r) for r in sampler.summary_rows()]
    stats = SamplerStats(**sampler.stats())
    load = result.summary
    top = stats_mod.error_counts(result.records)
    values = MonitorValues(
        source=source,
        summary=summary,
        sampler=stats,
        load=LoadSummary(
            completed=load.get("completed"),
            failed=load.get("failed"),
            output_tok_s=load.get("output_throughput"),
            requests_per_s=load.get("request_throughput"),
            errors=dict(top),
        ),
        workload=LoadPlan(
            input_tokens=workload.input_len,
            output_tokens=workload.output_len,
            concurrency=workload.concurrency,
            num_requests=workload.num_requests,
            duration_s=workload.duration_s,
            warmup_requests=workload.warmup_requests,
            timeout_s=workload.timeout_s,
            seed=workload.seed,
        ),
    )
    load_crit = require(
        "load",
        "负载请求全部完成",
        "the load's requests completed",
        load.get("completed", 0) > 0 and not load.get("failed"),
        f"{load.get('completed')} ok, {load.get('failed')} failed",
        reason=f"{load.get('failed')} requests failed: {stats_mod.errors_line(result.records)}",
    )
    mem_label = ("显存利用率", "GPU memory used")
    util_label = ("GPU 利用率（峰值）", "GPU utilisation (peak)")
    if not lab.has_gpu:
        rss = [r for r in summary if r.field == "rss_mib" and r.device == "tree"]
        cpu = [r for r in summary if r.field == "cpu_pct" and r.device == "tree"]
        values.peak_rss_mib = rss[0].peak if rss else None
        values.peak_cpu_pct = cpu[0].peak if cpu else None
        reason = lab.no_gpu_reason()
        crits = [
            skip("mem_used_pct", *mem_label, reason, ">", th["mem_used_pct"], "%"),
            skip("gpu_util_pct", *util_label, reason, ">", th["gpu_util_pct"], "%"),
            load_crit,
        ]
        actual = (
            f"CPU profile: server process tree peak RSS {fixed(values.peak_rss_mib)} MiB, "
            f"peak CPU {fixed(values.peak_cpu_pct)} %; load {load.get('completed')} requests, "
            f"{fixed(load.get('output_throughput'))} output tok/s; {stats.samples} samples"
        )
        return Outcome(crits, actual, values)
    mem_pct = _peak_pct(summary, "mem_used_mib", "mem_total_mib")
    util = max((r.peak for r in summary if r.field == "util_pct"), default=None)
    mean_util = max((r.mean for r in summary if r.field == "util_pct"), default=None)
    values.peak_mem_used_pct, values.peak_util_pct, values.mean_util_pct = mem_pct, util, mean_util
    crits = [
        check("mem_used_pct", *mem_label, mem_pct, ">", th["mem_used_pct"], "%"),
        check("gpu_util_pct", *util_label, util, ">", th["gpu_util_pct"], "%"),
        load_crit,
    ]
    actual = (
        f"peak memory used {fixed(mem_pct)} %, peak util {fixed(util)} % (mean {fixed(mean_util)} %), "
        f"{stats.samples} samples over {workload.duration_s:g} s; load "
        f"{load.get('completed')} requests, {fixed(load.get('output_throughput'))} output tok/s"
    )
    return Outcome(crits, actual, values)


def _peak_pct(summary: list[SampleSummary], used: str, total: str) -> float | None:
    peaks: dict[str, dict[str, float]] = {}
    for r in summary:
        peaks.setdefault(r.device, {})[r.field] = r.peak
    pcts = [d[used] / d[total] * 100 for d in peaks.values() if d.get(used) and d.get(total)]
    return round(max(pcts), 2) if pcts else None
