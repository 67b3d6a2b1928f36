"""Day 3 of seed 000, steps 1–7: check GPUs, install vLLM, install monitoring tools, serve
the 7B model, monitor under load, test the API, read the metrics."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from lab.vllm import api
from lab.vllm import process as server
from lab.vllm import env as vllm_env
from lab.core.errors import NvmlUnavailable, VllmEnvMissing
from lab.checklist.seeds import Acceptance
from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, StepSpec, check, require, skip
from lab.record.session import Lab

TITLE_ZH = "Day 3：基础理论与单卡部署"
TITLE_EN = "Day 3: single-GPU deployment"

STEPS = [
    StepSpec("gpus", 1, "检查 GPU 资源", "Check GPU resources", "nvidia-smi"),
    StepSpec("install", 2, "安装 vLLM", "Install vLLM",
             'pip install vllm\npython -c "import vllm; print(vllm.__version__)"'),
    StepSpec("tools", 3, "安装监控工具", "Install monitoring tools", "pip install nvitop gpustat"),
    StepSpec("serve", 4, "单卡部署 7B 模型", "Serve the 7B model on one GPU",
             "CUDA_VISIBLE_DEVICES=0 vllm serve Qwen/Qwen2.5-7B-Instruct --host 0.0.0.0 "
             "--port 8000 --gpu-memory-utilization 0.9 --max-model-len 2048"),
    StepSpec("monitor", 5, "GPU 监控（负载下）", "Monitor the GPU under load", "nvitop"),
    StepSpec("api-test", 6, "API 测试", "API test",
             "curl http://localhost:8000/v1/chat/completions -H \"Content-Type: application/json\" -d '{...}'"),
    StepSpec("metrics", 7, "查看性能指标", "Read the performance metrics",
             "curl http://localhost:8000/metrics"),
]

# The seed's "Day 3 验收进度" and "Day 3 验收标准", each ticked from one recorded criterion.
ACCEPTANCE = [
    Acceptance("vLLM 服务成功启动", "the vLLM server started", "serve"),
    Acceptance("API 请求返回正常响应", "the API request returned a normal reply", "api-test"),
    Acceptance("nvitop 显示显存利用率 > 90%", "memory used > 90 % (nvitop)", "monitor", "mem_used_pct"),
    Acceptance("GPU 利用率 > 80%", "GPU utilisation > 80 %", "monitor", "gpu_util_pct"),
    Acceptance("能用 nvitop 监控 GPU 状态", "nvitop can monitor the GPUs", "tools"),
]

# Within `invoke day3`: a step runs only if the step it needs passed (or was skipped).
NEEDS = {"tools": "install", "serve": "install", "monitor": "serve", "api-test": "serve",
         "metrics": "serve"}



# -- step 1 --------------------------------------------------------------------------
def gpus(lab: Lab, ctx: StepContext, min_gpus: int = 1) -> Outcome:
    """At least `min_gpus` GPUs with more free memory than the threshold (seed: > 16 GB)."""
    from lab.measure import nvml
    threshold = lab.cfg["thresholds"]["gpu_free_gib"]
    label = (f"空闲显存 > {threshold:g} GiB 的 GPU 数", f"GPUs with > {threshold:g} GiB free")
    try:
        found = nvml.query_gpus()
    except NvmlUnavailable as err:
        if lab.has_gpu:
            raise  # a GPU profile without NVML is a failure, not a skip
        return Outcome([skip("free_gpus", *label, lab.no_gpu_reason(), ">=", min_gpus)],
                       f"NVML: {err}", {"nvml": str(err), "gpus": []})
    rows = [g.as_dict() for g in found]
    free = [g for g in found if (g.memory_free_mib or 0) / 1024 > threshold]
    summary = "; ".join(
        f"GPU{g.index} {g.name}: {g.memory_free_mib / 1024:.1f}/{g.memory_total_mib / 1024:.1f} GiB free, "
        f"util {g.utilization_gpu_pct}%" for g in found) or "no GPU"
    values = {"gpus": rows, "free_gpus": len(free),
              "driver": found[0].driver_version if found else None}
    return Outcome([check("free_gpus", *label, len(free), ">=", min_gpus)], summary, values)


# -- step 2 --------------------------------------------------------------------------
def install(lab: Lab, ctx: StepContext, reinstall: bool = False) -> Outcome:
    """Make the vLLM env (unless it exists) and check `import vllm` prints a version."""
    env = lab.env
    values: dict = {"python": str(env.python), "managed": env.managed}
    commands = []
    if env.managed and (reinstall or not env.exists()):
        log_path = lab.logbook_dir / "logs" / f"install-{ctx.run_id}.log"
        lab.console.print(f"installing vLLM into {env.root} (log: {log_path}) …")
        with lab.console.status("pip install …"):
            commands, seconds = vllm_env.create(env, lab.cfg, lab.profile_name, log_path)
        values.update(install_s=round(seconds, 1), install_log=str(log_path))
    else:
        values["install_s"] = None  # already there: nothing installed this time
    commands.append(f'{env.python} -c "import vllm; print(vllm.__version__)"')
    try:
        versions = env.probe()
    except VllmEnvMissing as err:
        err.values = values  # keep what was learnt in the failed step's record
        raise
    values.update(versions)
    took = f", installed in {values['install_s']:.0f} s" if values["install_s"] else ", already installed"
    actual = (f"vllm {versions['vllm']} ({versions['dist']}), torch {versions['torch']}, "
              f"transformers {versions['transformers']}{took}; env {env.root}")
    crit = require("vllm_version", "打印 vllm 版本号", "vllm prints its version",
                   bool(versions.get("vllm")), versions.get("vllm"))
    return Outcome([crit], actual, values, command="\n".join(commands))


# -- step 3 --------------------------------------------------------------------------
def tools(lab: Lab, ctx: StepContext) -> Outcome:
    """Install nvitop and gpustat into the vLLM env (or find them on PATH); nvitop answers."""
    bindir = lab.env.python.parent
    found = {name: _which(name, bindir) for name in ("nvitop", "gpustat")}
    command = []
    if not all(found.values()):
        argv = [str(lab.env.python), "-m", "pip", "install", "-q", "nvitop", "gpustat"]
        command.append(shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        found = {name: _which(name, bindir) for name in found}
        if not found["nvitop"]:  # gpustat is optional in the seed; nvitop is the criterion
            raise VllmEnvMissing("pip install nvitop gpustat failed and nvitop is not on PATH",
                                 evidence="\n".join(proc.stderr.splitlines()[-10:]))
    versions = {name: _version(path) for name, path in found.items()}
    command += [f"{found['nvitop'] or 'nvitop'} --version"]
    crit = require("nvitop", "nvitop --version 有输出", "nvitop --version answers",
                   bool(versions["nvitop"]), versions["nvitop"], reason="nvitop did not answer")
    actual = ", ".join(v or f"{k} missing" for k, v in versions.items())
    return Outcome([crit], actual, {"versions": versions, "paths": found},
                   command="\n".join(command))


def _which(name: str, bindir: Path) -> str | None:
    local = bindir / name
    return str(local) if local.exists() else shutil.which(name)


def _version(path: str | None) -> str | None:
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if out.returncode == 0 and text else None


# -- step 5 --------------------------------------------------------------------------
def monitor(lab: Lab, ctx: StepContext, duration_s: float | None = None) -> Outcome:
    """Sample NVML (or, on CPU, the server's processes) while a load runs; judge memory
    used and utilisation at their peak under that load."""
    from lab.measure import loadgen
    from lab.measure import nvml
    from lab.measure import procstats
    from lab.measure import prompts
    from lab.record.logbook import Logbook
    from lab.measure.sampler import Sampler

    state = server.require_running(lab.state_path)
    mon = lab.cfg["monitor"]
    th = lab.cfg["thresholds"]
    model = state.served_model_name or state.model
    workload = loadgen.Workload(input_len=mon["input_len"], output_len=mon["output_len"],
                                concurrency=mon["concurrency"],
                                duration_s=duration_s or mon["duration_s"], warmup_requests=0,
                                timeout_s=lab.cfg["api"]["timeout_s"])
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

    done = {"n": 0, "failed": 0}

    def on_record(rec):
        done["n"] += 1
        done["failed"] += 0 if rec.ok else 1

    sampler = Sampler(sample_fn, sink_factory, interval_s=mon["interval_s"])
    with sampler, lab.console.status(f"driving load (c={workload.concurrency}) for "
                                     f"{workload.duration_s:g} s while sampling {source} …"):
        result = loadgen.run_level_sync(lab.url, model, plist, workload, api_key=lab.api_key,
                                        on_record=on_record, level="monitor")
    summary = sampler.summary_rows()
    stats = sampler.stats()
    load = result.summary
    values = {"source": source, "summary": summary, "sampler": stats,
              "load": {k: load.get(k) for k in ("completed", "failed", "output_throughput",
                                                 "request_throughput")},
              "workload": workload.__dict__}
    load_crit = require("load", "负载请求全部完成", "the load's requests completed",
                        load.get("completed", 0) > 0 and not load.get("failed"),
                        f"{load.get('completed')} ok, {load.get('failed')} failed",
                        reason=f"{load.get('failed')} requests failed")
    mem_label = ("显存利用率", "GPU memory used")
    util_label = ("GPU 利用率（峰值）", "GPU utilisation (peak)")
    if not lab.has_gpu:
        rss = [r for r in summary if r["field"] == "rss_mib" and r["device"] == "tree"]
        cpu = [r for r in summary if r["field"] == "cpu_pct" and r["device"] == "tree"]
        values["peak_rss_mib"] = rss[0]["peak"] if rss else None
        values["peak_cpu_pct"] = cpu[0]["peak"] if cpu else None
        reason = lab.no_gpu_reason()
        crits = [skip("mem_used_pct", *mem_label, reason, ">", th["mem_used_pct"], "%"),
                 skip("gpu_util_pct", *util_label, reason, ">", th["gpu_util_pct"], "%"),
                 load_crit]
        actual = (f"CPU profile: server process tree peak RSS {fixed(values['peak_rss_mib'])} MiB, "
                  f"peak CPU {fixed(values['peak_cpu_pct'])} %; load {load.get('completed')} requests, "
                  f"{fixed(load.get('output_throughput'))} output tok/s; {stats['samples']} samples")
        return Outcome(crits, actual, values)
    mem_pct = _peak_pct(summary, "mem_used_mib", "mem_total_mib")
    util = max((r["peak"] for r in summary if r["field"] == "util_pct"), default=None)
    mean_util = max((r["mean"] for r in summary if r["field"] == "util_pct"), default=None)
    values.update(peak_mem_used_pct=mem_pct, peak_util_pct=util, mean_util_pct=mean_util)
    crits = [check("mem_used_pct", *mem_label, mem_pct, ">", th["mem_used_pct"], "%"),
             check("gpu_util_pct", *util_label, util, ">", th["gpu_util_pct"], "%"), load_crit]
    actual = (f"peak memory used {fixed(mem_pct)} %, peak util {fixed(util)} % (mean {fixed(mean_util)} %), "
              f"{stats['samples']} samples over {workload.duration_s:g} s; load "
              f"{load.get('completed')} requests, {fixed(load.get('output_throughput'))} output tok/s")
    return Outcome(crits, actual, values)


def server_env_gpus(state: server.ServerState) -> list[str]:
    """The GPU indices the server was given (its CUDA_VISIBLE_DEVICES), default 0..tp-1."""
    import os
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v for v in visible.split(",") if v.strip().isdigit()][:state.tp]
    return [str(i) for i in range(state.tp)]


def _peak_pct(summary: list[dict], used: str, total: str) -> float | None:
    peaks = {}
    for r in summary:
        peaks.setdefault(r["device"], {})[r["field"]] = r["peak"]
    pcts = [d[used] / d[total] * 100 for d in peaks.values() if d.get(used) and d.get(total)]
    return round(max(pcts), 2) if pcts else None



# -- step 6 --------------------------------------------------------------------------
def api_test(lab: Lab, ctx: StepContext, day: str = "day3") -> Outcome:
    """The seed's chat prompt, /v1/models, and a streamed reply."""
    state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    a = lab.cfg["api"]
    prompt, max_tokens = a[f"prompt_{day}"], a[f"max_tokens_{day}"]
    reply = api.chat(lab.url, model, prompt, max_tokens=max_tokens,
                     temperature=a["temperature"], api_key=lab.api_key, timeout_s=a["timeout_s"])
    models = [m.get("id") for m in api.list_models(lab.url, lab.api_key)]
    stream = api.chat_stream(lab.url, model, prompt, max_tokens=64,
                             temperature=a["temperature"], api_key=lab.api_key,
                             timeout_s=a["timeout_s"])
    crits = [
        require("chat_200", "对话接口返回 HTTP 200", "chat returns HTTP 200",
                reply.http_status == 200, reply.http_status),
        require("content", "回复内容非空", "reply content is non-empty", bool(reply.content.strip()),
                len(reply.content), reason="empty content"),
        require("usage", "返回 usage（token 统计）", "usage is present",
                reply.completion_tokens is not None, reply.completion_tokens, reason="no usage"),
        require("models", "/v1/models 列出该模型", "/v1/models lists the model", model in models,
                ", ".join(models), reason=f"{model} not in {models}"),
        require("stream", "流式回复到达", "a streamed reply arrives",
                stream.chunks > 0 and stream.http_status == 200, stream.chunks,
                reason="no streamed chunk"),
    ]
    values = {"prompt": prompt, "max_tokens": max_tokens, "reply": reply.content,
              "latency_s": reply.latency_s, "prompt_tokens": reply.prompt_tokens,
              "completion_tokens": reply.completion_tokens, "tokens_per_s": reply.tokens_per_s,
              "finish_reason": reply.finish_reason, "models": models,
              "stream": {"chunks": stream.chunks, "ttft_s": stream.ttft_s, "e2el_s": stream.e2el_s,
                         "completion_tokens": stream.completion_tokens, "reply": stream.content}}
    actual = (f"HTTP {reply.http_status} in {reply.latency_s * 1000:,.0f} ms, "
              f"{reply.prompt_tokens} prompt + {reply.completion_tokens} completion tokens "
              f"({fixed(reply.tokens_per_s)} tok/s), finish_reason {reply.finish_reason}; "
              f"stream: {stream.chunks} chunks, TTFT {fixed((stream.ttft_s or 0) * 1000)} ms")
    command = (f"curl {lab.url}/v1/chat/completions -H 'Content-Type: application/json' -d "
               f"'{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": "
               f"\"{prompt}\"}}], \"max_tokens\": {max_tokens}}}'")
    return Outcome(crits, actual, values, evidence=f"HTTP {reply.http_status}", command=command)


# -- step 7 --------------------------------------------------------------------------
def metrics_step(lab: Lab, ctx: StepContext) -> Outcome:
    """Scrape /metrics and check the key `vllm:` series are present, with their values."""
    from lab.vllm import metrics
    server.require_running(lab.state_path)
    text = metrics.scrape(lab.url, api_key=lab.api_key)
    snap = metrics.parse(text)
    rows = metrics.key_series_rows(snap, "zh")
    for row, en in zip(rows, metrics.key_series_rows(snap, "en")):
        row["meaning_zh"], row["meaning_en"] = row.pop("meaning"), en["meaning"]
        row["old_note_zh"], row["old_note_en"] = row.pop("old_note"), en["old_note"]
    present = [r for r in rows if r["present"]]
    missing = [r["name"] for r in rows if not r["present"]]
    crit = check("key_series", "关键 vllm: 指标齐全", "key vllm: series present",
                 len(present), ">=", len(rows))
    if missing:
        crit.reason = "missing: " + ", ".join(missing)
    old = metrics.old_name_rows(snap, "zh")
    for row, en in zip(old, metrics.old_name_rows(snap, "en")):
        row["note_zh"], row["note_en"] = row.pop("note"), en["note"]
    values = {"series": rows, "old_names": old, "vllm_series": sum(
        1 for line in text.splitlines() if line.startswith("vllm:"))}
    actual = f"{len(present)}/{len(rows)} key series present; " + "; ".join(
        f"{r['name']} = {_fmt_value(r['value'])}" for r in present[:6])
    evidence = "\n".join(line for line in text.splitlines()
                         if line.startswith(tuple(r["name"] for r in present[:4])))[:1200]
    return Outcome([crit], actual, values, evidence=evidence,
                   command=f"curl {lab.url}/metrics")


def _fmt_value(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def serve(lab: Lab, ctx: StepContext, tp: int = 1, model_of: str = "day3",
          model: str | None = None) -> Outcome:
    """Serve `model` (default: the model of day `model_of`) with tensor parallelism `tp`."""
    from lab.checklist.steps.serve import start_and_wait
    return start_and_wait(lab, ctx, model_of, tp, model)


FUNCS = {"gpus": gpus, "install": install, "tools": tools, "serve": serve,
         "monitor": monitor, "api-test": api_test, "metrics": metrics_step}
