"""Day 5 (seed 002): offline LLM.generate in one engine load, the KV-cache blocks, memory, and the key parameters."""

from __future__ import annotations

import json
from pathlib import Path

from lab.core.errors import LabError
from lab.core.fmt import fixed, num
from lab.explain.params import SEED_PARAMS
from lab.record.logbook import PASS
from lab.record.runner import Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.record.values import (
    BatchRow,
    EngineInfo,
    GpuMemory,
    KvCacheValues,
    MemoryValues,
    OfflineMemory,
    OfflineRequest,
    OfflineRun,
    OfflineValues,
    ParamReading,
    ParamsValues,
)
from lab.vllm import env as vllm_env
from lab.vllm import logparse

# Seed 002 §2.1 (the small-model example) and §5.3 (the batch-size benchmark).
EXAMPLE_PROMPTS = ["Hello, my name is", "The capital of France is", "Artificial intelligence is"]


EXAMPLE_SAMPLING = {"temperature": 0.8, "top_p": 0.95}


BENCH_PROMPT = "Hello, my name is"


BENCH_SAMPLING = {"temperature": 0.8}


# The parameters the seed's 面试话术 names, plus the length and batch limits: these must be read.
CORE_PARAMS = (
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_model_len",
    "block_size",
    "max_num_seqs",
)


def offline(lab: Lab, ctx: StepContext) -> Outcome:
    """One engine load; the seed's example prompts; then each batch size (time, tokens, tok/s)."""
    from lab.vllm import models

    opts = lab.cfg["day5"]
    lab.env.probe()  # a missing vLLM env fails here with one line
    prof = lab.profile("day3")
    built = models.ensure_model(lab.env, prof)
    models.check_model(prof)
    max_tokens, sizes = opts["max_tokens"], opts["batch_sizes"]
    work = lab.logbook_dir / "logs" / f"day5-{ctx.run_id}-{ctx.step_id}"
    work.mkdir(parents=True, exist_ok=True)
    runs = [
        {
            "name": "example",
            "prompts": EXAMPLE_PROMPTS,
            "keep_text": True,
            "sampling": {**EXAMPLE_SAMPLING, "max_tokens": max_tokens},
        }
    ]
    runs += [
        {
            "name": f"batch-{bs}",
            "prompts": [BENCH_PROMPT] * bs,
            "sampling": {**BENCH_SAMPLING, "max_tokens": max_tokens},
        }
        for bs in sizes
    ]
    runs_file = work / "runs.json"
    runs_file.write_text(json.dumps({"warmup": True, "runs": runs}, ensure_ascii=False))
    args = offline_args(lab, prof, runs_file)
    env = script_env(prof)
    with lab.console.status(
        f"offline LLM.generate: engine start, example, batch sizes {', '.join(map(str, sizes))} …"
    ):
        data, stderr = lab.env.run_json_script(
            "offline_generate.py",
            args,
            what="vLLM offline LLM.generate",
            timeout_s=opts["timeout_s"],
            env=env,
            log_path=work / "offline_generate.log",
        )
    startup = logparse.parse_startup(stderr)
    startup_evidence, startup.evidence = startup.evidence, {}
    example = run_of(data["runs"][0])
    batches = [batch_row(bs, run) for bs, run in zip(sizes, data["runs"][1:], strict=False)]
    mem = data.get("memory") or {}
    values = OfflineValues(
        profile=lab.profile_name,
        model=prof.served_model_name or prof.model,
        model_path=prof.model,
        load_format=prof.load_format,
        model_built=built.get("model_built"),
        model_build_s=built.get("model_build_s"),
        vllm_version=data.get("vllm"),
        load_s=data.get("load_s"),
        warmup_s=data.get("warmup_s"),
        engine=EngineInfo(**(data.get("engine") or {})),
        startup=startup,
        memory=OfflineMemory(
            peak_tree_rss_mib=mem.get("peak_tree_rss_mib"),
            samples=mem.get("samples"),
            ru_maxrss_self_mib=mem.get("ru_maxrss_self_mib"),
            gpus=[GpuMemory(**g) for g in mem.get("gpus") or []],
        ),
        example=example,
        batches=batches,
        max_tokens=max_tokens,
        batch_sizes=list(sizes),
        llm_call=llm_call(prof, lab),
        work_dir=str(work),
        log_path=str(work / "offline_generate.log"),
    )
    outs = example.requests
    with_text = sum(1 for r in outs if (r.output_tokens or 0) > 0)
    ran = [b for b in batches if b.ok]
    crits = [
        require(
            "example",
            "示例 prompt 都生成了文本",
            "every example prompt produced text",
            bool(outs) and with_text == len(outs),
            f"{with_text}/{len(outs)}",
            reason="a prompt produced no tokens",
        ),
        require(
            "all_batches",
            "每个 batch size 都跑完",
            "every batch size ran",
            len(ran) == len(sizes),
            f"{len(ran)}/{len(sizes)}",
            reason="a batch returned fewer outputs than prompts",
        ),
        require(
            "tok_s",
            "每个 batch 记录了 tok/s",
            "tok/s recorded for every batch",
            len(batches) == len(sizes) and all(b.output_tok_s for b in batches),
            ", ".join(f"{b.batch_size}: {b.output_tok_s:,.1f}" for b in batches if b.output_tok_s),
            reason="a batch has no tok/s",
        ),
    ]
    tag = "CPU profile: " if not lab.has_gpu else ""
    actual = (
        f"{tag}engine loaded in {fixed(values.load_s)} s; example: {len(outs)} prompts → "
        f"{example.output_tokens} tokens in {fixed(example.elapsed_s, 2)} s; "
        + "; ".join(
            f"batch {b.batch_size}: {b.output_tokens} tokens in "
            f"{fixed(b.time_s, 2)} s = {fixed(b.output_tok_s)} tok/s"
            for b in batches
        )
    )
    evidence = "\n".join(
        startup_evidence.get(k, "")
        for k in ("kv_cache_tokens", "weights_load_s", "engine_init_s")
        if startup_evidence.get(k)
    )
    return Outcome(
        crits,
        actual,
        values,
        evidence=evidence or None,
        command=vllm_env.script_line("offline_generate.py", args, env),
    )


def batch_row(batch_size: int, run: dict) -> BatchRow:
    """One row of the seed's benchmark: Batch, Time, Tokens, Throughput."""
    n = run.get("n") or 0
    tokens = run.get("output_tokens") or 0
    return BatchRow(
        batch_size=batch_size,
        n=n,
        time_s=run.get("elapsed_s"),
        output_tokens=tokens,
        output_tok_s=run.get("output_tok_s"),
        prompt_tokens=run.get("prompt_tokens"),
        ok=n == batch_size and tokens > 0,
    )


def run_of(run: dict) -> OfflineRun:
    """One LLM.generate call of offline_generate.py's JSON."""
    return OfflineRun(
        name=run.get("name"),
        n=run.get("n"),
        elapsed_s=run.get("elapsed_s"),
        prompt_tokens=run.get("prompt_tokens"),
        output_tokens=run.get("output_tokens"),
        output_tok_s=run.get("output_tok_s"),
        samples_per_min=run.get("samples_per_min"),
        latency_s=run.get("latency_s"),
        latency_basis=run.get("latency_basis"),
        sampling=dict(run.get("sampling") or {}),
        requests=[OfflineRequest(**r) for r in run.get("requests") or []],
    )


def llm_call(prof, lab: Lab) -> str:
    """The `LLM(...)` call the offline step made, as the seed's script would write it."""
    kwargs = {
        "model": prof.model,
        "tensor_parallel_size": 1,
        "max_model_len": lab.cfg["max_model_len"],
    }
    if prof.has_gpu:
        kwargs["gpu_memory_utilization"] = lab.cfg["gpu_memory_utilization"]
    if prof.load_format:
        kwargs["load_format"] = prof.load_format
    return "LLM(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def offline_record(lab: Lab, ctx: StepContext) -> OfflineValues:
    """The values of this run's passed `offline` step (the one engine run of the day)."""
    for step in reversed(lab.book.steps(ctx.run_id)):
        if (
            step["key"] == "offline"
            and step["status"] == PASS
            and isinstance(step["values"], OfflineValues)
        ):
            return step["values"]
    raise LabError("no passed `offline` step in this run: run `invoke day5`")


def kv_cache(lab: Lab, ctx: StepContext) -> Outcome:
    """The KV-cache blocks the engine allocated; blocks × block_size checked against the
    "KV cache size: N tokens" line vLLM printed at startup."""
    off = offline_record(lab, ctx)
    eng, st = off.engine, off.startup
    blocks, size = eng.num_gpu_blocks, eng.block_size
    product = blocks * size if blocks and size else None
    logged = st.kv_cache_tokens
    crits = [
        check(
            "num_blocks",
            "KV cache block 数（引擎分配）",
            "KV-cache blocks allocated",
            blocks,
            ">",
            0,
        )
    ]
    label = (
        "blocks × block_size = 启动日志的 KV cache tokens",
        "blocks × block_size = the KV-cache tokens in the startup log",
    )
    if logged is None:
        crits.append(skip("blocks_x_size", *label, "vLLM printed no 'KV cache size' line"))
    else:
        crits.append(
            require(
                "blocks_x_size",
                *label,
                product == logged,
                f"{num(blocks)} × {num(size)} = {num(product)}; log {num(logged)}",
                reason="the product differs from the logged capacity",
            )
        )
    values = KvCacheValues(
        num_gpu_blocks=blocks,
        num_cpu_blocks=eng.num_cpu_blocks,
        block_size=size,
        kv_cache_tokens_log=logged,
        kv_cache_device=st.kv_cache_device,
        max_concurrency_x=st.max_concurrency_x,
        max_concurrency_for_tokens=st.max_concurrency_for_tokens,
        cpu_kv_cache_gib=st.cpu_kv_cache_gib,
        kv_cache_memory_bytes=eng.kv_cache_memory_bytes,
        engine_init_s=st.engine_init_s,
    )
    actual = (
        f"{num(blocks)} blocks × {num(size)} tokens = {num(product)} tokens; startup log: "
        f"{st.kv_cache_device or ''} KV cache size {num(logged)} tokens, max concurrency "
        f"{num(st.max_concurrency_x)}x for {num(st.max_concurrency_for_tokens)} "
        "tokens per request"
    )
    command = (
        f"grep -E 'KV cache size|init engine' {off.log_path or 'offline_generate.log'}\n"
        "# blocks: llm.llm_engine.vllm_config.cache_config.num_gpu_blocks, .block_size"
    )
    return Outcome(crits, actual, values, command=command)


def memory(lab: Lab, ctx: StepContext) -> Outcome:
    """GPU memory the offline run used (NVML, as nvidia-smi shows it); on the CPU profile the
    criterion is skipped and the process tree's peak RSS is recorded instead."""
    off = offline_record(lab, ctx)
    mem = off.memory
    label = ("显存占用（nvidia-smi，峰值）", "GPU memory used (nvidia-smi, peak)")
    values = MemoryValues(
        peak_tree_rss_mib=mem.peak_tree_rss_mib,
        gpus=list(mem.gpus),
        cpu_kv_cache_gib=off.startup.cpu_kv_cache_gib,
        samples=mem.samples,
    )
    if not lab.has_gpu:
        crit = skip("gpu_mem_used", *label, lab.no_gpu_reason(), ">=", 90, "%")
        actual = (
            f"CPU profile: peak RSS of the offline run's process tree "
            f"{fixed(values.peak_tree_rss_mib, 0)} MiB (script, EngineCore and worker; "
            f"shared pages counted in each); KV cache {fixed(values.cpu_kv_cache_gib)} GiB "
            "(VLLM_CPU_KVCACHE_SPACE)"
        )
        return Outcome(
            [crit],
            actual,
            values,
            command="# CPU profile: psutil RSS of the offline run's process tree, every 0.2 s",
        )
    # NVML's device-wide "used" is never 0 on a live GPU, so "> 0" could not fail. The
    # check that can: vLLM took (at least 90 % of) the budget it was told to reserve.
    crit = check(
        "gpu_mem_used",
        "峰值显存占用 / vLLM 预算（gpu-memory-utilization × 总显存）",
        "peak GPU memory used / vLLM's budget (gpu-memory-utilization × total)",
        values.used_of_budget_pct,
        ">=",
        90,
        "%",
    )
    actual = (
        "; ".join(
            f"GPU{g.index}: peak {fixed(g.peak_used_mib, 0)} / {fixed(g.total_mib, 0)} MiB "
            f"used (NVML, device-wide), vLLM budget {fixed(g.reserved_budget_mib, 0)} MiB"
            for g in values.gpus
        )
        or "NVML gave no reading"
    )
    return Outcome(
        [crit],
        actual,
        values,
        command="nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv",
    )


def params(lab: Lab, ctx: StepContext) -> Outcome:
    """The seed's key-parameter table with the values the engine really used."""
    from lab.vllm.launch import server_env, shell_line

    off = offline_record(lab, ctx)
    got, missing = off.engine.params, set(off.engine.params_missing)
    rows = [
        ParamReading(
            name=p.name,
            value=got.get(p.name),
            present=p.name in got,
            in_this_vllm=p.name not in missing,
        )
        for p in SEED_PARAMS
    ]
    flags = {p.name: p.flag for p in SEED_PARAMS}
    read = [r for r in rows if r.present]
    core_ok = all(name in got for name in CORE_PARAMS)
    prof = lab.profile("day3")
    argv = lab.serve_argv(prof, 1)
    server_cmd = shell_line(argv, server_env(prof, 1), python_as="python")
    crit = require(
        "params_read",
        "种子表中的关键参数读到了引擎实际取值",
        "the seed's key parameters were read from the engine",
        core_ok,
        f"{len(read)}/{len(rows)}",
        reason="missing: " + ", ".join(n for n in CORE_PARAMS if n not in got),
    )
    values = ParamsValues(
        rows=rows,
        on_gpu=lab.has_gpu,
        llm_call=off.llm_call,
        server_command=server_cmd,
        vllm_version=off.vllm_version,
    )
    actual = (
        f"{len(read)}/{len(rows)} parameters read from the engine: "
        + ", ".join(f"{flags[r.name]}={r.value}" for r in read if r.name != "model")
        + (
            f"; not in vLLM {off.vllm_version}: "
            + ", ".join(flags[r.name] for r in rows if not r.in_this_vllm)
            if any(not r.in_this_vllm for r in rows)
            else ""
        )
    )
    return Outcome([crit], actual, values, command=f"{off.llm_call}\n{server_cmd}")


def script_env(prof) -> dict[str, str]:
    """The profile's env for an offline engine (CPU KV-cache size, visible GPUs), with
    vLLM's log on stderr so stdout carries only the JSON result."""
    from lab.vllm.launch import server_env

    return {**server_env(prof, 1), "VLLM_LOGGING_STREAM": "ext://sys.stderr"}


def offline_args(lab: Lab, prof, runs_file: Path) -> list[str]:
    """offline_generate.py's arguments for `prof` (one GPU, or the CPU)."""
    args = [
        "--model",
        prof.model,
        "--runs-file",
        str(runs_file),
        "--max-model-len",
        str(lab.cfg["max_model_len"]),
    ]
    if prof.has_gpu:
        args += ["--gpu-memory-utilization", str(lab.cfg["gpu_memory_utilization"])]
    if prof.load_format:
        args += ["--load-format", prof.load_format]
    if prof.served_model_name:
        args += ["--served-model-name", prof.served_model_name]
    return args
