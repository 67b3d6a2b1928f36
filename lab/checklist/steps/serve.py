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
from lab.record.values import ServeValues, TpWorker
from lab.vllm import launch, models
from lab.vllm import process as server


def start_and_wait(lab: Lab, ctx: StepContext, day: str, tp: int,
                   model: str | None = None, extra: list[str] | None = None, *,
                   argv_of: Callable[[list[str]], list[str]] | None = None,
                   env_of: Callable[[dict[str, str]], dict[str, str]] | None = None,
                   while_waiting: Callable[[], None] | None = None) -> Outcome:
    """Start the server and wait for /health. Any server we tracked before is stopped
    first, so the startup figures are this start's own. `argv_of` and `env_of` rewrite the
    command and the variables the lab sets (multi-node: vLLM's `serve` entry point, each node
    rank's devices); `while_waiting` runs on every poll and may raise to give up (a node rank
    that died)."""
    from lab.vllm import logparse, metrics

    prof = lab.profile(day, tp=tp, model=model)
    lab.env.probe()  # a missing vLLM env fails here with one line, before anything starts
    built = models.ensure_model(lab.env, prof)
    models.check_model(prof)
    previous = server.stop(lab.state_path)
    if previous:
        lab.console.print(f"stopped the previous server (pids {', '.join(map(str, previous))})")
    warning = launch.check_bind(lab.cfg["host"], lab.api_key)
    if warning:
        lab.console.print(f"[yellow]warning:[/] {warning}")
    argv = lab.serve_argv(prof, tp, extra)
    env = launch.server_env(prof, tp)
    if argv_of is not None:
        argv = argv_of(argv)
    if env_of is not None:
        env = env_of(env)
    shown = launch.shell_line(argv, env, python_as="python")
    log_path = lab.logbook_dir / "logs" / f"server-{ctx.run_id}-{ctx.step_id}.log"
    server_id = lab.book.add_server(
        run_id=ctx.run_id, step_id=ctx.step_id, profile=prof.name,
        model=prof.served_model_name or prof.model, tp=tp, argv=launch.redact_argv(argv),
        env=launch.redact_env(env), host=lab.cfg["host"], port=lab.cfg["port"], log_path=str(log_path),
        started_at=time.time())
    state = server.start(argv, log_path=log_path, state_path=lab.state_path,
                         host=lab.cfg["host"], port=lab.cfg["port"], model=prof.model,
                         served_model_name=prof.served_model_name, tp=tp, profile=prof.name,
                         run_id=ctx.run_id, server_id=server_id, env={**os.environ, **env})
    lab.book.update_server(server_id, pid=state.pid)
    timeout_s = lab.cfg["startup_timeout_s"]
    try:
        with lab.console.status(f"starting vLLM ({prof.served_model_name or prof.model}, "
                                f"TP={tp}); log: {log_path}") as status:
            def tick(s: float) -> None:
                status.update(f"waiting for /health … {s:.0f} s (log: {log_path})")
                if while_waiting is not None:
                    while_waiting()
            ready_s = server.wait_ready(state, timeout_s, on_tick=tick)
    except LabError:
        server.stop(lab.state_path)
        raise
    facts = logparse.parse_startup(Path(log_path).read_text(errors="replace"))
    snap = metrics.parse(metrics.scrape(lab.url, api_key=lab.api_key))
    cache = snap.cache_config()
    # /metrics is preferred over log scraping where both exist.
    kv_tokens = cache.get("kv_cache_size_tokens") or facts.kv_cache_tokens
    if kv_tokens is None and cache.get("num_gpu_blocks") and cache.get("block_size"):
        kv_tokens = cache["num_gpu_blocks"] * cache["block_size"]
    values = ServeValues(
        pid=state.pid, log_path=str(log_path), ready_s=ready_s, tp=tp,
        model=prof.served_model_name or prof.model, model_path=prof.model, profile=prof.name,
        kv_cache_tokens=kv_tokens,
        max_concurrency_x=cache.get("kv_cache_max_concurrency") or facts.max_concurrency_x,
        num_gpu_blocks=cache.get("num_gpu_blocks") or facts.gpu_blocks,
        block_size=cache.get("block_size"), kv_cache_memory_bytes=cache.get("kv_cache_memory_bytes"),
        model_load_gib=facts.model_load_gib, model_load_s=facts.model_load_s,
        weights_load_s=facts.weights_load_s, engine_init_s=facts.engine_init_s,
        vllm_version=facts.vllm_version, server_id=server_id, model_built=built.get("model_built"),
        model_build_s=built.get("model_build_s"))
    lab.book.update_server(server_id, ready_s=ready_s, facts=values)
    criteria = [check("ready_s", "/health 返回 200 的启动耗时", "seconds until /health = 200",
                      ready_s, "<", timeout_s, "s")]
    if values.model_load_gib is not None:
        model = f"model {num(values.model_load_gib)} GiB loaded in {num(values.model_load_s)} s"
    else:  # vLLM's CPU runner prints no "Model loading took … GiB" line
        model = (f"weights loaded in {num(values.weights_load_s)} s "
                 "(vLLM printed no model-memory line)")
    actual = (f"ready after {ready_s:.1f} s (pid {state.pid}); KV cache {num(kv_tokens)} tokens, "
              f"max concurrency {num(values.max_concurrency_x)}x; {model}")
    evidence = "\n".join(line for line in Path(log_path).read_text(errors="replace").splitlines()
                         if any(k in line for k in ("KV cache size", "Model loading took",
                                                    "Loading weights took", "init engine",
                                                    "Application startup complete")))[-1500:]
    return Outcome(criteria, actual, values, evidence=evidence, command=shown)



def serve(lab: Lab, ctx: StepContext, tp: int = 1, model_of: str = "day3",
          model: str | None = None) -> Outcome:
    """Serve `model` (default: the model of day `model_of`) with tensor parallelism `tp`."""
    return start_and_wait(lab, ctx, model_of, tp, model)


def serve_tp(lab: Lab, ctx: StepContext, tp: int = 2, model_of: str = "day4",
          model: str | None = None) -> Outcome:
    """Start the TP server (lab.vllm.launch), then check it runs `tp` worker ranks and, on a GPU
    profile, that `tp` GPUs hold memory. The GPU check is skipped on the CPU profile."""
    from lab.measure import procstats
    out = serve(lab, ctx, tp=tp, model_of=model_of, model=model)
    assert isinstance(out.values, ServeValues)
    state = server.require_running(lab.state_path)
    workers = [w for w in procstats.vllm_workers(state.pid) if "TP" in w["title"]]
    out.values.tp_workers = [TpWorker(w["pid"], w["title"], w["rss_mib"]) for w in workers]
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
        return [v for v in visible.split(",") if v.strip().isdigit()][:state.tp]
    return [str(i) for i in range(state.tp)]
