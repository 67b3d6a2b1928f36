"""How fast is `invoke --list`, and what does it import?

`invoke --list` must stay under 0.3 s and import no vllm, torch or transformers (nor
matplotlib or numpy, which only the deliverables and the load generator need). Prints the
median wall time of `python -m invoke --list` over `--runs` runs, the top-level modules it
imports (from `sys.modules` after the listing, in a fresh interpreter), and the heavy ones
among them (tests/unit/test_tasks.py asserts there are none).

Usage: python bench/list_speed.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Top-level packages `invoke --list` must never import.
HEAVY = ("vllm", "torch", "transformers", "matplotlib", "numpy")
#: The goal for the median wall time, seconds.
GOAL_S = 0.3

_LIST_AND_REPORT = (
    "import io, json, sys, contextlib\n"
    "sys.argv = ['invoke', '--list']\n"
    "from invoke.main import program\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n        program.run()\n    except SystemExit:\n        pass\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def imported_by_list() -> list[str]:
    """Every module in `sys.modules` after `invoke --list`, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _LIST_AND_REPORT], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1])


def wall_times(runs: int) -> list[float]:
    """Wall seconds of `python -m invoke --list`, one per run (a warm-up run first)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, timeout=60)
        if i:  # the first run warms the disk cache and writes .pyc files
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = wall_times(args.runs)
    median = statistics.median(times)
    modules = imported_by_list()
    top = sorted({m.split(".")[0] for m in modules if not m.startswith("_")})
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    print(f"python -m invoke --list: median {median * 1000:.0f} ms over {args.runs} runs "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); goal < {GOAL_S * 1000:.0f} ms: "
          f"{'met' if median < GOAL_S else 'NOT met'}")
    print(f"bare interpreter for comparison: {_bare_python_ms():.0f} ms")
    print(f"modules imported: {len(modules)}; top-level packages ({len(top)}): {' '.join(top)}")
    print(f"heavy modules imported ({', '.join(HEAVY)}): {', '.join(heavy) or 'none'}")


def _bare_python_ms() -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    main()
