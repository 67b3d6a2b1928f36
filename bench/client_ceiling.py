"""How accurate is our load generator, and how much load can it measure?

Runs the fake vLLM server (tests/fakes/fake_openai_stream.py) in its own process with a
known token schedule (first token after `--first-token-ms`, then one token every ITL ms),
drives it with `lab.measure.loadgen.run_level` at rising concurrency, and prints:

- the measurement error: measured median TTFT / TPOT and mean ITL against the truth;
- the highest output-token rate at which the measured mean ITL and median TPOT stay within
  `--drift-pct` of the truth, i.e. the client ceiling (a level past the ceiling ends the
  ladder for that ITL).

Mean ITL (not median ITL) is a drift criterion: below 1 ms the fake's sleeps round up to the
event loop's 1 ms timer granularity and it catches up in bursts, so single gaps are bimodal
while their mean stays true. The fake's own lateness against its schedule and both
processes' CPU use are printed so a drift can be blamed on the right side: when the fake is
late, the truth itself moved and the ceiling shown is a lower bound for the client.

Usage: python bench/client_ceiling.py [--itl-ms 5,2,1,0.5] [--concurrency 1,4,16,64,256]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass

import psutil
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.measure.loadgen import Workload, run_level
from tests.fakes.fake_openai_stream import FakeConfig, start_subprocess

MODEL = "fake-model"


@dataclass
class Row:
    """One measured level against one fake schedule."""

    itl_ms: float
    concurrency: int
    offered_tok_s: float
    output_tok_s: float
    ttft_ms: float
    tpot_ms: float
    itl_mean_ms: float
    itl_median_ms: float
    fake_late_ms: float
    client_cpu_pct: float
    fake_cpu_pct: float
    failed: int

    def itl_drift_pct(self) -> float:
        return 100.0 * (self.itl_mean_ms - self.itl_ms) / self.itl_ms

    def tpot_drift_pct(self) -> float:
        return 100.0 * (self.tpot_ms - self.itl_ms) / self.itl_ms

    def sustained(self, drift_pct: float) -> bool:
        """Both per-request TPOT and pooled mean ITL within drift_pct of truth, no failure."""
        return (not self.failed and abs(self.itl_drift_pct()) <= drift_pct
                and abs(self.tpot_drift_pct()) <= drift_pct)


def _csv_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _fake_stats(base_url: str) -> dict:
    return requests.get(base_url + "/fake/stats", timeout=5).json()


def measure_level(base_url: str, fake_proc: psutil.Process, itl_ms: float, concurrency: int,
                  args: argparse.Namespace) -> Row:
    """Run one level and compare with the fake's schedule."""
    n_warm = concurrency
    n_req = max(args.min_requests, args.rounds * concurrency)
    prompts = [[1000 + i, 2000 + i, 3000 + i, 4000 + i] for i in range(n_warm + n_req)]
    workload = Workload(input_len=4, output_len=args.output_len, concurrency=concurrency,
                        num_requests=n_req, warmup_requests=n_warm, timeout_s=60.0)
    before = _fake_stats(base_url)
    fake_cpu0 = sum(fake_proc.cpu_times()[:2])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = asyncio.run(run_level(base_url, MODEL, prompts, workload))
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    fake_cpu_s = sum(fake_proc.cpu_times()[:2]) - fake_cpu0
    after = _fake_stats(base_url)
    tokens = max(1, after["tokens_written"] - before["tokens_written"])
    late_ms = 1000 * (after["lateness_sum_s"] - before["lateness_sum_s"]) / tokens
    s = result.summary
    return Row(itl_ms=itl_ms, concurrency=concurrency,
               offered_tok_s=concurrency * 1000.0 / itl_ms,
               output_tok_s=s["output_throughput"] or 0.0,
               ttft_ms=s["ttft_ms"]["median"], tpot_ms=s["tpot_ms"]["median"],
               itl_mean_ms=s["itl_ms"]["mean"], itl_median_ms=s["itl_ms"]["median"],
               fake_late_ms=late_ms, client_cpu_pct=100 * cpu_s / wall_s,
               fake_cpu_pct=100 * fake_cpu_s / wall_s, failed=s["failed"])


def _pct(measured: float, truth: float) -> str:
    return f"{measured - truth:+.2f} ({100 * (measured - truth) / truth:+.1f}%)"


def print_table(rows: list[Row], first_ms: float) -> None:
    header = (f"{'ITL':>5} {'C':>4} {'offered':>9} {'out tok/s':>9} "
              f"{'TTFT ms (err)':>22} {'TPOT ms (err)':>20} {'ITL mean (err)':>20} "
              f"{'ITL p50':>7} {'fake late':>9} {'cli CPU':>7} {'fake CPU':>8} {'fail':>4}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.itl_ms:>5g} {r.concurrency:>4} {r.offered_tok_s:>9.0f} {r.output_tok_s:>9.0f} "
              f"{r.ttft_ms:>7.2f} {_pct(r.ttft_ms, first_ms):>14} "
              f"{r.tpot_ms:>6.3f} {_pct(r.tpot_ms, r.itl_ms):>13} "
              f"{r.itl_mean_ms:>6.3f} {_pct(r.itl_mean_ms, r.itl_ms):>13} "
              f"{r.itl_median_ms:>7.3f} {r.fake_late_ms:>7.3f}ms {r.client_cpu_pct:>6.0f}% "
              f"{r.fake_cpu_pct:>7.0f}% {r.failed:>4}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Client measurement error and ceiling.")
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", default="5,2,1,0.5", help="comma-separated ITL truths")
    parser.add_argument("--concurrency", default="1,4,16,64,256",
                        help="comma-separated ladder, climbed until ITL drifts")
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2,
                        help="measured requests per level = rounds x concurrency")
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument("--drift-pct", type=float, default=10.0)
    parser.add_argument("--budget-s", type=float, default=100.0,
                        help="stop climbing once this much time has been spent")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    rows: list[Row] = []
    ceiling: Row | None = None
    for itl_ms in _csv_floats(args.itl_ms):
        config = FakeConfig(first_token_s=args.first_token_ms / 1000, itl_s=itl_ms / 1000,
                            model=MODEL)
        proc, base_url = start_subprocess(config)
        try:
            fake_proc = psutil.Process(proc.pid)
            for conc in (int(c) for c in _csv_floats(args.concurrency)):
                if time.perf_counter() - started > args.budget_s:
                    print(f"(budget of {args.budget_s:g} s spent: ladder cut short)")
                    break
                row = measure_level(base_url, fake_proc, itl_ms, conc, args)
                rows.append(row)
                if not row.sustained(args.drift_pct):
                    break
                if ceiling is None or row.output_tok_s > ceiling.output_tok_s:
                    ceiling = row
        finally:
            proc.terminate()
            proc.wait(10)

    print(f"Fake server: first token {args.first_token_ms:g} ms, {args.output_len} output "
          f"tokens per request, one token per SSE chunk; client: lab.measure.loadgen.run_level. "
          f"{os.cpu_count()} CPU(s).")
    print("err = measured - truth (ms, %). offered = C / ITL. 'fake late' = mean lateness of "
          "the fake's writes against its schedule.\n")
    print_table(rows, args.first_token_ms)
    base = next((r for r in rows if r.concurrency == 1), None)
    print()
    if base is not None:
        print(f"Measurement error at C=1, ITL {base.itl_ms:g} ms: "
              f"TTFT {_pct(base.ttft_ms, args.first_token_ms)} ms, "
              f"TPOT {_pct(base.tpot_ms, base.itl_ms)} ms")
    if ceiling is not None:
        print(f"Highest output rate with TPOT and mean ITL within {args.drift_pct:g}% of truth: "
              f"{ceiling.output_tok_s:,.0f} tok/s (ITL {ceiling.itl_ms:g} ms, "
              f"C={ceiling.concurrency}; ITL drift {ceiling.itl_drift_pct():+.1f}%, "
              f"TPOT drift {ceiling.tpot_drift_pct():+.1f}%)")
    print(f"Total time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
