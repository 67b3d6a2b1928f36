"""`invoke day3` on the cpu profile, N times back to back, while a CPU hog
(`python -c "while True: pass"`) runs beside it: the exits and, for each failure, its
recorded cause (issue 9: "5 of 5 exit 0, or each failure names its recorded cause").

Each run gets its own logbook and port (a fresh checkout's state), and shares the data dir
(the vLLM env and the tiny model) unless --fresh-data. Prints one line per run (exit code,
wall seconds, failed steps with their reasons) and every failed request's error from the
`requests` table, then the totals.

Hold the shared CPU lock while it runs (it starts vLLM servers):

    flock /tmp/vllm-lab-cpu.lock python bench/day3_under_load.py --runs 5
"""
from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = [sys.executable, "-c", "while True: pass"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def causes(db: Path) -> tuple[list[str], list[str]]:
    """(failed steps with reasons, failed requests with errors) recorded in one logbook."""
    if not db.exists():
        return ["no logbook written"], []
    con = sqlite3.connect(db)
    steps = [f"{key}: {reason}" for key, reason in con.execute(
        "SELECT key, reason FROM steps WHERE status = 'fail' ORDER BY id")]
    reqs = [f"{phase} #{idx}: {error}" for phase, idx, error in con.execute(
        "SELECT phase, idx, error FROM requests WHERE ok = 0 ORDER BY id")]
    con.close()
    return steps, reqs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hogs", type=int, default=1, help="CPU hogs beside each run (default 1)")
    ap.add_argument("--fresh-data", action="store_true",
                    help="a new data dir (vLLM env and model built again) for the first run")
    ap.add_argument("--timeout", type=float, default=1800, help="limit per run, s")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="d3load-"))
    data = tmp / "data" if args.fresh_data else Path(os.environ.get(
        "INVOKE_LAB_DATA_DIR", ROOT / ".lab"))
    rows = []
    for i in range(1, args.runs + 1):
        logbook = tmp / f"run{i}"
        env = dict(os.environ, INVOKE_LAB_LOGBOOK_DIR=str(logbook), INVOKE_LAB_DATA_DIR=str(data),
                   INVOKE_LAB_PORT=str(free_port()), INVOKE_LAB_PROFILE="cpu", COLUMNS="200")
        hogs = [subprocess.Popen(HOG) for _ in range(args.hogs)]
        t0 = time.monotonic()
        try:
            with open(tmp / f"run{i}.out", "w") as out:
                proc = subprocess.run([sys.executable, "-m", "invoke", "day3"], cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, timeout=args.timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
            subprocess.run([sys.executable, "-m", "invoke", "stop"], cwd=ROOT, env=env,
                           capture_output=True)
        took = time.monotonic() - t0
        steps, reqs = causes(logbook / "lab.db")
        rows.append((code, steps))
        print(f"run {i}: exit {code} in {took:.0f} s" + ("" if code == 0 else
              f"; failed steps: {' | '.join(steps) or 'none recorded'}"), flush=True)
        for r in reqs:
            print(f"    failed request {r}", flush=True)
    ok = sum(1 for code, _ in rows if code == 0)
    named = sum(1 for code, steps in rows if code != 0 and steps)
    print(f"{ok} of {len(rows)} exit 0; {named} of {len(rows) - ok} failures name a recorded cause "
          f"(logbooks and outputs under {tmp})")


if __name__ == "__main__":
    main()
