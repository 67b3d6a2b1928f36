"""Day 4: the TP=2 server's memory balance (seed Q2)."""

from __future__ import annotations

from lab.checklist.steps.serve import _gpu_used_mib
from lab.core import units
from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.record.values import BalanceDevice, BalanceValues
from lab.vllm import process as server

_CPU_BALANCE_FIX = {
    "zh": "检查 `VLLM_CPU_OMP_THREADS_BIND`（每个 TP rank 一组核，用 | 分隔）以及同机的其他进程",
    "en": "Check `VLLM_CPU_OMP_THREADS_BIND` (one core list per TP rank, separated by |) and other processes on the machine",
}


def balance(lab: Lab, ctx: StepContext) -> Outcome:
    """Seed: "观察两张卡的显存占用是否均衡". GPU profile: NVML used memory of the server's GPUs.
    CPU profile: the RSS of the `VLLM::Worker_TP*` processes (labelled so: not GPU memory).
    Passes when (max - min) / max < thresholds.tp_balance_pct."""
    from lab.measure import procstats
    from lab.vllm import diagnose

    state = server.require_running(lab.state_path)
    th = lab.cfg["thresholds"]["tp_balance_pct"]
    if lab.has_gpu:
        used = _gpu_used_mib(state)
        devices = [BalanceDevice(f"GPU{k}", v) for k, v in used.items()]
        source, what = "nvml", ("两张 GPU 的显存占用差异", "difference in GPU memory used")
        command = "nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv"
    else:
        workers = [w for w in procstats.vllm_workers(state.pid) if "TP" in w["title"]]
        devices = [BalanceDevice(w["title"], w["rss_mib"], w["pid"]) for w in workers]
        source = "process_rss"
        what = (
            "两个 TP worker 进程的 RSS 差异（CPU 配置：测的是进程内存，不是显存）",
            "difference in RSS of the TP worker processes (CPU profile: process memory, not GPU memory)",
        )
        command = "ps -eo pid,rss,args | grep 'VLLM::Worker_TP'"
    figures = units.balance([d.used_mib for d in devices])
    spread = figures["spread_pct"]
    crits = [
        require(
            "tp",
            "服务以 TP ≥ 2 运行",
            "the server runs with TP >= 2",
            state.tp >= 2,
            state.tp,
            reason=f"the running server has TP={state.tp}: run `invoke serve --tp 2`",
        ),
        check(
            "devices",
            "测到的设备数" if lab.has_gpu else "测到的 TP worker 进程数",
            "devices measured" if lab.has_gpu else "TP worker processes measured",
            figures["n"],
            ">=",
            2,
        ),
    ]
    measured = None if spread is None else round(spread, 2)
    if lab.has_gpu:
        crits.append(check("spread_pct", *what, measured, "<", th, "%"))
    else:
        # The seed's criterion is GPU memory: skipped here, never passed. The worker RSS
        # spread is measured and judged as its own, differently named criterion.
        crits += [
            check("worker_rss_spread_pct", *what, measured, "<", th, "%"),
            skip(
                "spread_pct",
                "两张 GPU 的显存占用差异",
                "difference in GPU memory used",
                lab.no_gpu_reason(),
                "<",
                th,
                "%",
            ),
        ]
    values = BalanceValues(
        source=source,
        devices=devices,
        threshold_pct=th,
        tp=state.tp,
        n=figures["n"],
        max_mib=figures["max"],
        min_mib=figures["min"],
        spread_pct=spread,
    )
    shown = (
        ", ".join(f"{d.device} {fixed(d.used_mib, 0)} MiB" for d in devices) or "nothing measured"
    )
    fix = evidence = None
    if spread is not None and spread >= th:
        if lab.has_gpu:  # seed Q2: CUDA_VISIBLE_DEVICES, other processes on the heavy GPU
            found = diagnose.diagnose_balance(
                {k: v for k, v in used.items() if v is not None}, th, lab.lang
            )
            if found is not None:
                fix, evidence = found.fix, f"{found.title}\n{found.matched_line}"
        else:
            fix, evidence = _CPU_BALANCE_FIX[lab.lang], f"{shown} (spread {spread:.1f} %)"
    label = "GPU memory used" if lab.has_gpu else "CPU profile, TP worker RSS (not GPU memory)"
    actual = (
        f"{label}: {shown}; spread "
        f"{'n/a' if spread is None else f'{spread:.2f} %'} (threshold {th:g} %)"
    )
    return Outcome(crits, actual, values, evidence=evidence, command=command, fix=fix)
