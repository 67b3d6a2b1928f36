"""The `serve` step: start vLLM in the background, wait for /health, and record what
startup cost (seconds, KV-cache tokens, model memory)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from lab.core.errors import LabError
from lab.core.fmt import num
from lab.record.runner import Outcome, StepContext, check, skip
from lab.record.session import Lab
from lab.record.values import (
    FixApplied,
    ServerFailure,
    ServeValues,
    StartupPhase,
    StopRecord,
    TpWorker,
)
from lab.ui.progress import status
from lab.vllm import diagnose, launch, models, watch
from lab.vllm import process as server


def start_and_wait(
    lab: Lab,
    ctx: StepContext,
    day: str,
    tp: int,
    model: str | None = None,
    extra: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
    *,
    argv_of: Callable[[list[str]], list[str]] | None = None,
    env_of: Callable[[dict[str, str]], dict[str, str]] | None = None,
    while_waiting: Callable[[], None] | None = None,
) -> Outcome:
    """Start the server and wait for /health. Any server we tracked before is stopped
    first, so the startup figures are this start's own. `env_extra` is set for the server
    on top of the profile's variables (an experiment's arm). `argv_of` and `env_of` rewrite
    the command and the variables the lab sets (multi-node: vLLM's `serve` entry point, each
    node rank's devices); `while_waiting` runs on every poll and may raise to give up (a node
    rank that died)."""
    from lab.vllm import logparse, metrics

    prof = lab.profile(day, tp=tp, model=model)
    lab.env.probe()  # a missing vLLM env fails here with one line, before anything starts
    built = models.ensure_model(lab.env, prof)
    models.check_model(prof)
    previous = lab.stop_server().pids
    if previous:
        lab.console.print(f"stopped the previous server (pids {', '.join(map(str, previous))})")
    warning = launch.check_bind(lab.cfg["host"], lab.api_key)
    if warning:
        lab.console.print(f"[yellow]warning:[/] {warning}")
    argv = lab.serve_argv(prof, tp, extra)
    env = {**launch.server_env(prof, tp), **lab.fix_env, **(env_extra or {})}
    if argv_of is not None:
        argv = argv_of(argv)
    if env_of is not None:
        env = env_of(env)
    shown = launch.shell_line(argv, env, python_as="python")
    log_path = lab.logbook_dir / "logs" / f"server-{ctx.run_id}-{ctx.step_id}.log"
    server_id = lab.book.add_server(
        run_id=ctx.run_id,
        step_id=ctx.step_id,
        profile=prof.name,
        model=prof.served_model_name or prof.model,
        tp=tp,
        argv=launch.redact_argv(argv),
        env=launch.redact_env(env),
        host=lab.cfg["host"],
        port=lab.cfg["port"],
        log_path=str(log_path),
        started_at=time.time(),
    )
    baseline = lab.gpu_baseline()
    state = server.start(
        argv,
        log_path=log_path,
        state_path=lab.state_path,
        host=lab.cfg["host"],
        port=lab.cfg["port"],
        model=prof.model,
        served_model_name=prof.served_model_name,
        tp=tp,
        profile=prof.name,
        run_id=ctx.run_id,
        server_id=server_id,
        env=lab.env.child_environ({**os.environ, **env}),
        gpu_baseline_mib=baseline,
    )
    lab.book.update_server(server_id, pid=state.pid)
    fix, lab.pending_fix = lab.pending_fix, None
    timeout_s = lab.cfg["startup_timeout_s"]
    name = prof.served_model_name or prof.model
    watcher = server.make_watcher(state, lang=lab.lang)
    watcher.on_phase(
        lambda tracker: lab.console.print(
            f"  · {tracker.describe(lab.lang, spent=False)} [{time.time() - state.started_at:.0f} s]",
            markup=False,
            highlight=False,
        )
    )
    partial = dict(
        pid=state.pid,
        log_path=str(log_path),
        tp=tp,
        model=name,
        model_path=prof.model,
        profile=prof.name,
        server_id=server_id,
        fix=fix,
    )
    try:
        with status(lab.console, f"starting vLLM ({name}, TP={tp}); log: {log_path}") as update:

            def tick(s: float) -> None:
                update(
                    f"starting vLLM ({name}, TP={tp}): "
                    f"{watcher.phases.describe(lab.lang)} · {s:.0f} s elapsed (log: {log_path})"
                )
                if while_waiting is not None:
                    while_waiting()

            ready_s = server.wait_ready(
                state, timeout_s, watcher=watcher, wait_released=lab.release_wait(), on_tick=tick
            )
    except LabError as err:
        failure = getattr(err, "failure", None)
        report = getattr(err, "stop_report", None)
        if report is None:  # a timeout (or Ctrl-C's cousin): end the tree here
            report = lab.stop_server(grace_s=server.FAILED_GRACE_S, loud=False, why="failed")
        values = ServeValues(
            **partial,
            phases=phases_of(watcher, state.started_at),
            failure=failure_record(failure, state.started_at, "serve"),
            stop=stop_record(report, "failed"),
        )
        if failure is not None and failure.diagnosis is not None:
            values.remedy = remedy_of(
                failure.diagnosis.key, argv, env, tp, "\n".join(watcher.lines)
            )
        err.values = values
        lab.book.update_server(server_id, facts=values)
        raise
    facts = logparse.parse_startup(Path(log_path).read_text(errors="replace"))
    snap = metrics.parse(metrics.scrape(lab.url, api_key=lab.api_key))
    cache = snap.cache_config()
    # /metrics is preferred over log scraping where both exist.
    kv_tokens = cache.get("kv_cache_size_tokens") or facts.kv_cache_tokens
    if kv_tokens is None and cache.get("num_gpu_blocks") and cache.get("block_size"):
        kv_tokens = cache["num_gpu_blocks"] * cache["block_size"]
    values = ServeValues(
        pid=state.pid,
        log_path=str(log_path),
        ready_s=ready_s,
        tp=tp,
        model=prof.served_model_name or prof.model,
        model_path=prof.model,
        profile=prof.name,
        kv_cache_tokens=kv_tokens,
        max_concurrency_x=cache.get("kv_cache_max_concurrency") or facts.max_concurrency_x,
        num_gpu_blocks=cache.get("num_gpu_blocks") or facts.gpu_blocks,
        block_size=cache.get("block_size"),
        kv_cache_memory_bytes=cache.get("kv_cache_memory_bytes"),
        model_load_gib=facts.model_load_gib,
        model_load_s=facts.model_load_s,
        weights_load_s=facts.weights_load_s,
        engine_init_s=facts.engine_init_s,
        vllm_version=facts.vllm_version,
        server_id=server_id,
        model_built=built.get("model_built"),
        model_build_s=built.get("model_build_s"),
        phases=phases_of(watcher, state.started_at),
        fix=fix,
    )
    lab.book.update_server(server_id, ready_s=ready_s, facts=values)
    criteria = [
        check(
            "ready_s",
            "/health 返回 200 的启动耗时",
            "seconds until /health = 200",
            ready_s,
            "<",
            timeout_s,
            "s",
        )
    ]
    if values.model_load_gib is not None:
        model = f"model {num(values.model_load_gib)} GiB loaded in {num(values.model_load_s)} s"
    else:  # vLLM's CPU runner prints no "Model loading took … GiB" line
        model = (
            f"weights loaded in {num(values.weights_load_s)} s (vLLM printed no model-memory line)"
        )
    actual = (
        f"ready after {ready_s:.1f} s (pid {state.pid}); KV cache {num(kv_tokens)} tokens, "
        f"max concurrency {num(values.max_concurrency_x)}x; {model}"
    )
    evidence = "\n".join(
        line
        for line in Path(log_path).read_text(errors="replace").splitlines()
        if any(
            k in line
            for k in (
                "KV cache size",
                "Model loading took",
                "Loading weights took",
                "init engine",
                "Application startup complete",
            )
        )
    )[-1500:]
    if fix is not None:
        actual = f"with the known fix {fix.added} (the first attempt failed): {actual}"
    return Outcome(criteria, actual, values, evidence=evidence, command=shown)


def phases_of(watcher: watch.Watcher, started_at: float) -> list[StartupPhase]:
    """The startup phases the watcher read, as seconds after the server started."""
    return [
        StartupPhase(p.key, round(p.started_at - started_at, 3), p.duration_s(), p.detail)
        for p in watcher.phases.phases
    ]


def failure_record(
    failure: watch.Failure | None, started_at: float, during: str
) -> ServerFailure | None:
    """The watcher's Failure as the step records it."""
    if failure is None:
        return None
    d = failure.diagnosis
    after_s = round(failure.detected_at - started_at, 3)
    # vLLM stamps lines to the second: the crash line cannot predate the start.
    detect_s = None if failure.detect_s is None else min(failure.detect_s, after_s)
    return ServerFailure(
        kind=failure.kind,
        key=d.key if d else None,
        title=d.title if d else None,
        fix=d.fix if d else None,
        source=d.source if d else None,
        line=failure.line,
        process=failure.process,
        detect_s=detect_s,
        detected_after_s=after_s,
        during=during,
    )


def stop_record(report: server.StopReport | None, why: str) -> StopRecord | None:
    """A StopReport as the step records it."""
    return None if report is None else StopRecord.of(report, why)


def remedy_of(
    key: str, argv: list[str], env: dict[str, str], tp: int, log_text: str
) -> FixApplied | None:
    """The known safe fix of failure `key` for this start (lab.vllm.diagnose.remedy_for)."""
    r = diagnose.remedy_for(key, argv, env, tp=tp, log_text=log_text)
    if r is None:
        return None
    return FixApplied(
        added=r.shown,
        key=r.key,
        why_zh=r.why_zh,
        why_en=r.why_en,
        cost_zh=r.cost_zh,
        cost_en=r.cost_en,
        source=r.source,
        args=[] if r.settings else list(r.args),
        settings=dict(r.settings),
        env=dict(r.env),
        min_tp=r.min_tp,
    )


def serve(
    lab: Lab, ctx: StepContext, tp: int = 1, model_of: str = "day3", model: str | None = None
) -> Outcome:
    """Serve `model` (default: the model of day `model_of`) with tensor parallelism `tp`."""
    return start_and_wait(lab, ctx, model_of, tp, model)


def serve_tp(
    lab: Lab, ctx: StepContext, tp: int = 2, model_of: str = "day4", model: str | None = None
) -> Outcome:
    """Start the TP server (lab.vllm.launch), then check it runs `tp` worker ranks and, on a GPU
    profile, that `tp` GPUs hold memory. The GPU check is skipped on the CPU profile."""
    from lab.measure import procstats

    out = serve(lab, ctx, tp=tp, model_of=model_of, model=model)
    assert isinstance(out.values, ServeValues)
    state = server.require_running(lab.state_path)
    workers = [w for w in procstats.vllm_workers(state.pid) if "TP" in w["title"]]
    out.values.tp_workers = [TpWorker(w["pid"], w["title"], w["rss_mib"]) for w in workers]
    if tp > 1:
        out.criteria.append(
            check("tp_workers", "TP worker 进程数", "TP worker processes", len(workers), ">=", tp)
        )
    label = (
        f"TP={tp} 部署在 {tp} 张 GPU 上（每张占用 > 1 GiB）",
        f"TP={tp} served on {tp} GPUs (> 1 GiB used on each)",
    )
    if not lab.has_gpu:
        out.criteria.append(
            skip(
                "tp_gpus",
                *label,
                lab.no_gpu_reason(),
                ">=",
                tp,
                measured=f"{len(workers)} CPU TP workers",
            )
        )
        return out
    used = _gpu_used_mib(state)
    holding = sum(1 for mib in used.values() if mib is not None and mib > 1024)
    out.values.gpu_used_mib = used
    out.criteria.append(check("tp_gpus", *label, holding, ">=", tp))
    return out


def _gpu_used_mib(state: server.ServerState) -> dict[str, float | None]:
    """NVML used memory of the server's GPUs (its CUDA_VISIBLE_DEVICES), by index."""
    from lab.measure import nvml

    wanted = {int(i) for i in server_env_gpus(state)}
    return {str(g.index): g.memory_used_mib for g in nvml.query_gpus() if g.index in wanted}


def server_env_gpus(state: server.ServerState) -> list[str]:
    """The GPU indices the server was given (its CUDA_VISIBLE_DEVICES), default 0..tp-1."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v for v in visible.split(",") if v.strip().isdigit()][: state.tp]
    return [str(i) for i in range(state.tp)]
