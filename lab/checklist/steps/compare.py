"""Day 4's `compare` step: vLLM against a HuggingFace transformers baseline (seeds 000 and 004).

Both sides get the same model, the same prompts and the same sampling:
- prompts: `num_prompts` chats through the model's own chat template. The HF script
  (`lab/scripts/hf_baseline.py`) applies it and writes the token ids it used; the vLLM side
  is given exactly those ids, so the inputs are identical by construction;
- sampling: greedy, `max_new_tokens` new tokens per sample (EOS ignored, so both sides
  generate the same number of tokens); other sampling fields come from the model's
  generation_config on both sides, as each framework applies it by default;
- output tokens are counted as token ids on both sides.

HF generates `batch_size` prompts per `generate` call (left-padded); vLLM is given all the
prompts at once and batches them itself (continuous batching), which is the point of the
comparison. The vLLM side is the running server when one is up (`source` "server":
streamed /v1/completions through `lab.measure.loadgen`, all requests at once), else offline
`LLM.generate` (`lab/scripts/offline_generate.py`, source "offline").

Figures per side: end-to-end latency (mean per sample), output tokens/s, samples/min and
peak memory, each with what it is (`mem_basis`):
- GPU: HF's `torch.cuda.max_memory_allocated`; vLLM's memory is what it reserves,
  gpu-memory-utilization × total memory (NVML's used memory is recorded beside it);
- CPU: HF's peak RSS (`ru_maxrss`); vLLM's peak RSS of its process tree (offline: the
  script and its engine processes; server: the server's tree while it served the prompts).
Speedups are vLLM ÷ HF for throughput and HF ÷ vLLM for latency. Cost (seed 004): time and
GPU-minutes for 10,000 samples at the measured rate; on the CPU profile they are
CPU-minutes, not a GPU figure.

Command line equivalent:
    python lab/scripts/hf_baseline.py --model M --prompts-file p.json --ids-out ids.json ...
    python lab/scripts/offline_generate.py --model M --runs-file runs.json
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.checklist.steps.offline import offline_args, script_env
from lab.core.errors import ConfigError, LabError
from lab.core.fmt import fixed
from lab.core.units import ratio
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import CompareSide, CompareValues, CompareWorkload, VllmVersions
from lab.vllm import env as vllm_env
from lab.vllm import logparse
from lab.vllm import process as server
from lab.vllm.logparse import StartupFacts

SOURCES = ("auto", "server", "offline")

#: Chat prompts: the seeds' own first, then more of the same kind. Repeated with a suffix
#: when more are asked for, so no two prompts are the same.
PROMPTS = [
    "你好，请介绍一下你自己",
    "写一首关于春天的诗",
    "请解释什么是PagedAttention？",
    "大模型推理优化的主要方向有哪些？",
    "What is PagedAttention?",
    "Hello, my name is",
    "The capital of France is",
    "Artificial intelligence is",
    "解释一下什么是深度学习",
    "San Francisco is a",
    "What is continuous batching, and why does it raise throughput?",
    "Summarise the difference between tensor parallelism and data parallelism.",
    "列出三种减少显存占用的方法。",
    "Write a haiku about GPUs.",
    "How does a KV cache speed up generation?",
    "为什么 vLLM 比 HuggingFace Transformers 推理更快？",
]


def chat_prompts(n: int) -> list[list[dict[str, str]]]:
    """`n` single-turn chats, all different."""
    out = []
    for i in range(n):
        text = PROMPTS[i % len(PROMPTS)]
        if i >= len(PROMPTS):
            text = f"{text} ({i // len(PROMPTS) + 1})"
        out.append([{"role": "user", "content": text}])
    return out


# -- the two sides ------------------------------------------------------------------------
def hf_side(data: dict, on_gpu: bool) -> CompareSide:
    """The HF script's result as the step's figures (memory with what it is)."""
    side = CompareSide(
        output_tok_s=data.get("output_tok_s"),
        samples_per_min=data.get("samples_per_min"),
        latency_s=data.get("latency_s"),
        total_s=data.get("total_s"),
        output_tokens=data.get("output_tokens"),
        prompt_tokens=data.get("prompt_tokens"),
        num_prompts=data.get("num_prompts"),
        batch_size=data.get("batch_size"),
        load_s=data.get("load_s"),
        device=data.get("device"),
        sampling=dict(data.get("sampling") or {}),
        versions=dict(data.get("versions") or {}),
        devices=1,
    )
    if on_gpu:
        mib = data.get("max_memory_allocated_mib")
        side.gpus, side.peak_mem_mib = 1, mib
        side.mem_basis = "torch.cuda.max_memory_allocated"
        side.max_memory_reserved_mib = data.get("max_memory_reserved_mib")
        side.device_total_mib = data.get("device_total_mib")
        if mib is not None and data.get("device_total_mib"):
            side.peak_mem_pct = mib / data["device_total_mib"] * 100
    else:
        side.peak_mem_mib = data.get("ru_maxrss_mib")
        side.mem_basis = "peak RSS of the process (ru_maxrss)"
    return side


_RESERVED = "reserved: gpu-memory-utilization × total (NVML used beside it)"


def vllm_offline_side(data: dict, run: dict, on_gpu: bool) -> CompareSide:
    """offline_generate.py's result for the compare run."""
    side = CompareSide(
        output_tok_s=run.get("output_tok_s"),
        samples_per_min=run.get("samples_per_min"),
        latency_s=run.get("latency_s"),
        output_tokens=run.get("output_tokens"),
        prompt_tokens=run.get("prompt_tokens"),
        sampling=dict(run.get("sampling") or {}),
        total_s=run.get("elapsed_s"),
        num_prompts=run.get("n"),
        load_s=data.get("load_s"),
        source="offline",
        tp=1,
        devices=1,
        latency_basis=run.get("latency_basis"),
    )
    if side.latency_s is None:  # no engine timestamps: the call's time bounds every request
        side.latency_s, side.latency_basis = run.get("elapsed_s"), "generate() call time"
    mem = data.get("memory") or {}
    if on_gpu:
        gpus = mem.get("gpus") or []
        reserved = sum(g["reserved_budget_mib"] or 0 for g in gpus) or None
        total = sum(g["total_mib"] or 0 for g in gpus) or None
        side.gpus, side.peak_mem_mib, side.device_total_mib = 1, reserved, total
        side.device_used_mib = sum(g["peak_used_mib"] or 0 for g in gpus) or None
        side.mem_basis = _RESERVED
        if reserved and total:
            side.peak_mem_pct = reserved / total * 100
    else:
        side.peak_mem_mib = mem.get("peak_tree_rss_mib")
        side.mem_basis = (
            "peak RSS of the process tree (script + EngineCore + worker; "
            "shared pages counted in each)"
        )
    return side


def measure_server(
    lab: Lab,
    ctx: StepContext,
    state: server.ServerState,
    ids: list[list[int]],
    max_new_tokens: int,
    on_gpu: bool,
) -> CompareSide:
    """The same prompt ids through the running server: all at once, streamed, greedy,
    ignore_eos (`lab.measure.loadgen`); memory sampled on the server's process tree or its GPUs."""
    from lab.checklist.steps.serve import server_env_gpus
    from lab.measure import loadgen, nvml, procstats
    from lab.measure.sampler import Sampler
    from lab.vllm import metrics

    model = state.served_model_name or state.model
    n = len(ids)
    workload = loadgen.Workload(
        input_len=max(len(i) for i in ids),
        output_len=max_new_tokens,
        concurrency=n,
        num_requests=n,
        warmup_requests=1,
        timeout_s=lab.cfg["api"]["timeout_s"],
    )
    loadgen.validate_workload(workload, lab.cfg["max_model_len"])
    if on_gpu:
        gpu_ids = [int(i) for i in server_env_gpus(state)]

        def sample_fn() -> list[dict]:
            return nvml.sample_gpus(gpu_ids)
    else:

        def sample_fn() -> list[dict]:
            return [
                {
                    "t": 0,
                    "source": "process",
                    "device": "tree",
                    "rss_mib": procstats.tree_rss_mib(state.pid),
                }
            ]

    def record(rec) -> None:
        lab.book.add_request(ctx.run_id, ctx.step_id, "compare-vllm", rec.to_dict())

    with Sampler(sample_fn, None, interval_s=0.25) as sampler:
        result = loadgen.run_level_sync(
            state.base_url,
            model,
            [ids[0], *ids],
            workload,
            api_key=lab.api_key,
            on_record=record,
            level="compare",
        )
    measured = [r for r in result.records if not r.warmup]
    failed = [r for r in measured if not r.ok]
    if failed:
        raise LabError(f"{len(failed)} of {n} requests to the server failed: {failed[0].error}")
    peaks = sampler.summary()
    tokens = sum(r.output_tokens or 0 for r in measured)
    wall = result.wall_s
    side = CompareSide(
        output_tokens=tokens,
        prompt_tokens=sum(r.input_tokens or 0 for r in measured),
        num_prompts=n,
        total_s=wall,
        source="server",
        tp=state.tp,
        devices=state.tp,
        output_tok_s=ratio(tokens, wall),
        samples_per_min=ratio(n * 60, wall),
        # lab.measure.stats' summary: a missing TTFT is left out, never counted as 0 ms.
        latency_s=_s(result.summary["e2el_ms"]["mean"]),
        latency_basis="E2EL (streamed)",
        ttft_s=_s(result.summary["ttft_ms"]["mean"]),
        sampling={
            "temperature": 0.0,
            "max_tokens": max_new_tokens,
            "ignore_eos": True,
            "other_fields": "the server's defaults (the model's generation_config)",
        },
    )
    if on_gpu:
        used = sum(v["peak"] for (s, d, f), v in peaks.items() if f == "mem_used_mib") or None
        total = sum(v["peak"] for (s, d, f), v in peaks.items() if f == "mem_total_mib") or None
        util = (
            metrics.parse(metrics.scrape(state.base_url, api_key=lab.api_key))
            .cache_config()
            .get("gpu_memory_utilization")
        )
        reserved = util * total if util and total else None
        side.gpus, side.peak_mem_mib, side.device_used_mib = state.tp, reserved, used
        side.device_total_mib, side.gpu_memory_utilization = total, util
        side.mem_basis = _RESERVED
        if reserved and total:
            side.peak_mem_pct = reserved / total * 100
    else:
        rss = peaks.get(("process", "tree", "rss_mib"))
        side.peak_mem_mib = rss["peak"] if rss else None
        side.mem_basis = (
            "peak RSS of the server's process tree while serving "
            "(shared pages counted in each process)"
        )
    return side


# -- the step -----------------------------------------------------------------------------
def pick_source(lab: Lab, source: str) -> tuple[str, server.ServerState | None]:
    """("server", state) when asked for or (auto) when the tracked server is alive;
    else ("offline", None). `source="server"` without a server: one line."""
    if source not in SOURCES:
        raise ConfigError(f"compare source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "offline":
        return "offline", None
    if source == "server":
        return "server", server.require_running(lab.state_path)
    state = server.load(lab.state_path)
    return ("server", state) if server.is_alive(state) else ("offline", None)


def compare_step(
    lab: Lab,
    ctx: StepContext,
    num_prompts: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    source: str | None = None,
) -> Outcome:
    """Measure HF and vLLM on the same prompts; both sides measured is the criterion."""
    from lab.vllm import models

    opts = lab.cfg["compare"]
    n = int(num_prompts or opts["num_prompts"])
    new_tokens = int(max_new_tokens or opts["max_new_tokens"])
    batch = int(batch_size or opts["batch_size"])
    timeout_s = float(opts["timeout_s"])
    versions = lab.env.probe()  # a missing vLLM env fails here with one line
    src, state = pick_source(lab, source or opts["source"])
    on_gpu = lab.has_gpu
    if src == "server":
        assert state is not None  # pick_source gives the running server's state
        model, dummy = state.model, (state.profile or lab.profile_name) == "rehearsal"
        prof = None
    else:
        prof = lab.profile("day3")
        models.ensure_model(lab.env, prof)
        models.check_model(prof)
        model, dummy = prof.model, prof.load_format == "dummy"

    work = lab.logbook_dir / "logs" / f"compare-{ctx.run_id}-{ctx.step_id}"
    work.mkdir(parents=True, exist_ok=True)
    prompts_file, ids_file = work / "prompts.json", work / "prompt_ids.json"
    prompts_file.write_text(json.dumps(chat_prompts(n), ensure_ascii=False), encoding="utf-8")

    hf_args = [
        "--model",
        model,
        "--prompts-file",
        str(prompts_file),
        "--ids-out",
        str(ids_file),
        "--max-new-tokens",
        str(new_tokens),
        "--batch-size",
        str(batch),
        "--ignore-eos",
        "--device",
        "cuda" if on_gpu else "cpu",
    ] + (["--dummy"] if dummy else [])
    commands = [vllm_env.script_line("hf_baseline.py", hf_args)]
    with lab.console.status(f"HF baseline: {n} prompts, batch {batch}, {new_tokens} new tokens …"):
        try:
            hf_data, _ = lab.env.run_json_script(
                "hf_baseline.py",
                hf_args,
                what="the HF baseline",
                timeout_s=timeout_s,
                log_path=work / "hf_baseline.log",
            )
        except LabError as err:
            if src == "server" and on_gpu and "out of memory" in (err.evidence or "").lower():
                err.fix = (
                    "the running vLLM server holds most of the GPU memory: `invoke stop`, "
                    "then `invoke compare --source offline`"
                )
            raise
    hf = hf_side(hf_data, on_gpu)
    ids = json.loads(ids_file.read_text())
    for i, req in enumerate(hf_data.get("requests") or []):
        lab.book.add_request(
            ctx.run_id,
            ctx.step_id,
            "compare-hf",
            {
                "level": "compare",
                "concurrency": batch,
                "idx": i,
                "ok": True,
                "input_tokens": req["prompt_tokens"],
                "output_tokens": req["output_tokens"],
                "e2el_s": req["e2el_s"],
            },
        )

    values = CompareValues(
        profile=lab.profile_name,
        on_gpu=on_gpu,
        source=src,
        model=model,
        dummy_weights=dummy,
        hf=hf,
        workload=CompareWorkload(
            num_prompts=n,
            max_new_tokens=new_tokens,
            hf_batch_size=batch,
            ignore_eos=True,
            greedy=True,
        ),
        versions=VllmVersions.from_probe(versions),
        work_dir=str(work),
    )
    try:
        if src == "server" and state is not None:
            commands.append(
                f"# {n} streamed /v1/completions to {state.base_url}, all at once "
                f"(prompt = the token ids above, max_tokens {new_tokens}, "
                "temperature 0, ignore_eos)"
            )
            with lab.console.status(f"vLLM server: {n} requests at once …"):
                vllm = measure_server(lab, ctx, state, ids, new_tokens, on_gpu)
            startup = None
        else:
            vllm, startup, shown = _offline(lab, ctx, prof, ids, new_tokens, timeout_s, work)
            commands.append(shown)
    except LabError as err:
        err.values = values  # keep the measured side in the failed record
        raise
    values.vllm, values.startup = vllm, startup
    # The vLLM side was given the HF side's token ids; check both did the same work.
    expected_out = n * new_tokens
    same = (
        hf.prompt_tokens == vllm.prompt_tokens
        and hf.output_tokens == vllm.output_tokens == expected_out
    )
    values.inputs_identical = same
    crits = [
        require(
            "hf_measured",
            "HF 侧测得吞吐、延迟与内存",
            "the HF side is measured",
            hf.measured,
            _tok_s(hf, on_gpu),
            reason="the HF side produced no figures",
        ),
        require(
            "vllm_measured",
            "vLLM 侧测得吞吐、延迟与内存",
            "the vLLM side is measured",
            vllm.measured,
            _tok_s(vllm, on_gpu),
            reason="the vLLM side produced no figures",
        ),
        require(
            "same_work",
            "两侧 prompt 与输出 token 数相同",
            "both sides did the same work (prompt and output tokens)",
            same,
            f"prompt {hf.prompt_tokens}/{vllm.prompt_tokens}, output "
            f"{hf.output_tokens}/{vllm.output_tokens} (expected {expected_out})",
            reason="the two sides processed different token counts: the comparison is void",
        ),
    ]
    return Outcome(
        crits, actual_line(values), values, command="\n".join(commands), evidence=_evidence(values)
    )


def _offline(
    lab: Lab,
    ctx: StepContext,
    prof,
    ids: list[list[int]],
    new_tokens: int,
    timeout_s: float,
    work: Path,
) -> tuple[CompareSide, StartupFacts, str]:
    runs_file = work / "runs.json"
    runs_file.write_text(
        json.dumps(
            {
                "warmup": True,
                "runs": [
                    {
                        "name": "compare",
                        "prompt_ids": ids,
                        "model_defaults": True,
                        "sampling": {
                            "temperature": 0.0,
                            "max_tokens": new_tokens,
                            "ignore_eos": True,
                        },
                    }
                ],
            }
        )
    )
    args = offline_args(lab, prof, runs_file)
    env = script_env(prof)
    with lab.console.status(
        f"vLLM offline LLM.generate: {len(ids)} prompts at once (engine start takes a while) …"
    ):
        data, stderr = lab.env.run_json_script(
            "offline_generate.py",
            args,
            what="vLLM offline LLM.generate",
            timeout_s=timeout_s,
            env=env,
            log_path=work / "offline_generate.log",
        )
    run = data["runs"][0]
    for i, req in enumerate(run.get("requests") or []):
        lab.book.add_request(
            ctx.run_id,
            ctx.step_id,
            "compare-vllm",
            {
                "level": "compare",
                "concurrency": len(ids),
                "idx": i,
                "ok": True,
                "input_tokens": req["prompt_tokens"],
                "output_tokens": req["output_tokens"],
                "ttft_s": req.get("ttft_s"),
                "e2el_s": req.get("e2el_s"),
            },
        )
    facts = logparse.parse_startup(stderr)
    facts.evidence = {}
    side = vllm_offline_side(data, run, prof.has_gpu)
    side.vllm_version = data.get("vllm")
    return side, facts, vllm_env.script_line("offline_generate.py", args, env)


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _tok_s(side: CompareSide, on_gpu: bool) -> str | None:
    v = side.output_tok_s
    return f"{v:,.1f} tok/s{'' if on_gpu else ' (CPU)'}" if v else None


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}x"


def actual_line(values: CompareValues) -> str:
    hf, vl = values.hf or CompareSide(), values.vllm or CompareSide()
    up, c = values.speedup, values.cost
    head = "" if values.on_gpu else "CPU profile (not GPU figures): "
    mem = "memory" if values.on_gpu else "peak RSS"
    return (
        f"{head}HF {fixed(hf.output_tok_s)} tok/s, mean latency {fixed(hf.latency_ms)} ms, "
        f"{mem} {fixed(hf.peak_mem_gib, 2)} GiB; vLLM ({values.source}) "
        f"{fixed(vl.output_tok_s)} tok/s, mean latency {fixed(vl.latency_ms)} ms, "
        f"{mem} {fixed(vl.peak_mem_gib, 2)} GiB; speedup {_x(up.throughput_x)} throughput, "
        f"{_x(up.latency_x)} latency; {c.samples:,} samples: HF "
        f"{fixed(c.hf.device_minutes)} vs vLLM {fixed(c.vllm.device_minutes)} {c.unit}"
    )


def _evidence(values: CompareValues) -> str:
    hf, vl = values.hf or CompareSide(), values.vllm or CompareSide()
    lines = (
        [] if values.on_gpu else ["CPU profile: every figure below is a CPU figure, not a GPU one"]
    )
    lines += [
        f"HF: {hf.output_tokens} output tokens in {fixed(hf.total_s, 3)} s "
        f"(batch {hf.batch_size}, device {hf.device}); memory = {hf.mem_basis}",
        f"vLLM ({values.source}): {vl.output_tokens} output tokens in "
        f"{fixed(vl.total_s, 3)} s; latency = {vl.latency_basis}; "
        f"memory = {vl.mem_basis}",
    ]
    startup = values.startup
    if startup is not None and startup.kv_cache_tokens:
        lines.append(
            f"vLLM KV cache: {startup.kv_cache_tokens:,} tokens ({startup.kv_cache_device})"
        )
    return "\n".join(lines)
