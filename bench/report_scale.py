"""How does `invoke report` scale with the size of the Day 4 benchmark?

Builds a logbook whose latest Day 4 `bench` holds N request rows of realistic shape (128
prompt and 128 output tokens each, so 127 inter-token gaps per row; a latency loop of 10
requests; the sweep split over concurrency 1, 4, 16 and 64), beside a Day 3 run (serve,
monitor with samples), through the Logbook API. Then times `python -m invoke report` as a
subprocess with INVOKE_LAB_LOGBOOK_DIR pointing at it, and prints the median wall time and
the median peak RSS of that child over `--repeat` runs. The child is started by a small
launcher process that reads its rusage (os.wait4): a child forked straight from this process
would count this process's memory (the logbook it just built) in its own peak until exec.

Goal (issue 8): at 100,000 rows, under 2 s and under 300 MiB on a 2-core machine.

Usage: python bench/report_scale.py [--rows 1000,10000,100000] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.record.logbook import PASS, SKIPPED, Logbook  # noqa: E402
from lab.record.values import (  # noqa: E402
    BenchMetrics,
    BenchValues,
    ClientTotals,
    KvUsage,
    LatencyLoop,
    LevelSummary,
    LoadSummary,
    MetricsDelta,
    MonitorValues,
    SamplerStats,
    ServeValues,
    SweepPlan,
)

LEVELS = (1, 4, 16, 64)
OUTPUT_TOKENS = 128
INPUT_TOKENS = 128


def request_rows(n: int, rng: random.Random) -> list[tuple[int, dict]]:
    """(concurrency, record) for n sweep requests: n/4 per level, one warm-up per level."""
    out = []
    per_level = max(1, n // len(LEVELS))
    for c in LEVELS:
        ttft, tpot = 0.015 + 0.002 * c, 0.005 + 0.0002 * c
        slots = [0.0] * c
        for idx in range(-1, per_level):
            gaps = [tpot * rng.uniform(0.9, 1.15) for _ in range(OUTPUT_TOKENS - 1)]
            first = ttft * rng.uniform(0.8, 1.6)
            e2el = first + sum(gaps)
            slot = min(range(c), key=slots.__getitem__)
            out.append((c, {"level": f"c{c}", "concurrency": c, "idx": idx, "warmup": idx < 0,
                            "ok": True, "http_status": 200, "input_tokens": INPUT_TOKENS,
                            "output_tokens": OUTPUT_TOKENS, "queue_s": 0.0004,
                            "sent_at_s": slots[slot], "ttft_s": first,
                            "tpot_s": (e2el - first) / (OUTPUT_TOKENS - 1), "e2el_s": e2el,
                            "itls_s": gaps}))
            slots[slot] += e2el
    return out


def build(path: Path, n: int) -> None:
    """A Day 3 run (serve, monitor) and a Day 4 run whose bench has n sweep rows."""
    from lab.measure import stats
    rng = random.Random(n)
    book = Logbook(path)
    book.db.conn.execute("PRAGMA synchronous = OFF")  # building only: the timing reads it
    run = book.start_run("day3", profile="cpu")
    serve = book.start_step(run, "serve", title="serve", command="invoke serve", expected="")
    values = ServeValues(pid=1, log_path="server.log", ready_s=38.2, tp=1, model="tiny",
                         model_path="tiny", profile="cpu", kv_cache_tokens=1048576,
                         max_concurrency_x=512.0, num_gpu_blocks=8192, block_size=128,
                         engine_init_s=12.0, vllm_version="0.32.0", weights_load_s=0.02)
    book.end_step(serve, status=PASS, actual="ready", values=values)
    book.add_server(run_id=run, step_id=serve, profile="cpu", model="tiny", tp=1,
                    argv=["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "tiny"],
                    env={"VLLM_CPU_KVCACHE_SPACE": "1"}, host="127.0.0.1", port=8000, pid=1,
                    log_path="server.log", started_at=time.time(), ready_s=38.2, facts=values)
    mon = book.start_step(run, "monitor", title="monitor", command="invoke monitor", expected="")
    book.end_step(mon, status=SKIPPED, actual="cpu", values=MonitorValues(
        source="process", peak_rss_mib=2990.0, peak_cpu_pct=190.0,
        sampler=SamplerStats(interval_s=0.5, samples=40),
        load=LoadSummary(completed=100, failed=0, output_tok_s=2500.0)))
    t0 = time.time()
    book.add_samples(run, mon, [{"t": t0 + i * 0.5, "source": "process", "device": "tree",
                                 "rss_mib": 2980.0 + i, "cpu_pct": 150.0 + i} for i in range(40)])
    book.end_run(run, PASS)

    run = book.start_run("day4", profile="cpu")
    bench = book.start_step(run, "bench", title="bench", command="invoke bench", expected="")
    for i in range(10):
        book.add_request(run, bench, "latency", {
            "level": "sequential", "concurrency": 1, "idx": i, "warmup": False, "ok": True,
            "http_status": 200, "input_tokens": 26, "output_tokens": 256,
            "sent_at_s": 2.0 * i, "e2el_s": 1.9 + 0.01 * i})
    rows = request_rows(n, rng)
    for _, rec in rows:
        book.add_request(run, bench, "sweep", rec)
    levels = [LevelSummary.from_summary(stats.summarize([r for cc, r in rows if cc == c], None),
                                        concurrency=c, level=f"c{c}") for c in LEVELS]
    book.end_step(bench, status=PASS, actual="bench", values=BenchValues(
        plan=SweepPlan(levels=list(LEVELS), input_tokens=INPUT_TOKENS,
                       output_tokens=OUTPUT_TOKENS, num_requests=n // len(LEVELS),
                       warmup_requests=1, duration_s=None, latency_runs=10,
                       latency_prompt="解释一下什么是深度学习", latency_max_tokens=256,
                       timeout_s=300.0, kv_poll_s=0.5),
        latency=LatencyLoop(runs=10, ok=10, failed=0, timeouts=0, avg_latency_ms=1945.0,
                            min_latency_ms=1900.0, max_latency_ms=1990.0),
        levels=levels,
        metrics=BenchMetrics(delta=MetricsDelta(preemptions=0.0),
                             kv=KvUsage(peak_kv_usage_frac=0.03)),
        client=ClientTotals(requests=len(rows) + 10, ok=len(rows) + 10, failed=0, timeouts=0),
        model="tiny", tp=1, profile="cpu"))
    book.end_run(run, PASS)
    book.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    book.close()


#: Runs `python -m invoke report` and prints "<wall s> <peak RSS KiB>" of that child alone.
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen([sys.executable, "-m", "invoke", "report"], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(wall, usage.ru_maxrss) if code == 0 else sys.exit(f"invoke report failed ({code})")
"""


def time_report(logbook_dir: Path) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of one `python -m invoke report` run on `logbook_dir`."""
    env = dict(os.environ, INVOKE_LAB_LOGBOOK_DIR=str(logbook_dir), INVOKE_LAB_LANG="en")
    out = subprocess.run([sys.executable, "-c", LAUNCHER], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    wall, kib = out.stdout.split()
    return float(wall), float(kib) / 1024  # Linux: ru_maxrss is in KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1000,10000,100000",
                    help="request rows of the Day 4 sweep, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size (the median is shown)")
    ap.add_argument("--keep", help="build the logbooks in this folder and keep them")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-scale-"))
    print(f"{'rows':>8} {'build s':>8} {'wall s (median)':>16} {'peak MiB (median)':>18}  runs")
    try:
        for n in (int(x) for x in args.rows.split(",")):
            folder = base / f"rows-{n}"
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            build(folder / "lab.db", n)
            built = time.perf_counter() - t0
            runs = [time_report(folder) for _ in range(args.repeat)]
            wall = statistics.median(w for w, _ in runs)
            peak = statistics.median(m for _, m in runs)
            shown = ", ".join(f"{w:.2f} s/{m:.0f} MiB" for w, m in runs)
            print(f"{n:>8} {built:>8.1f} {wall:>16.2f} {peak:>18.0f}  {shown}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
