"""A/B of vLLM's CPU `LD_PRELOAD` advice (TCMalloc + Intel OpenMP) on the tiny cpu model.

Arm A: `INVOKE_LAB_CPU_PRELOAD=off` (no LD_PRELOAD from vllm-lab; vLLM preloads torch's
libgomp itself). Arm B: `auto` (the libraries lab.vllm.env.cpu_preload finds: TCMalloc and
Intel OpenMP). With `--attribute`, also T (TCMalloc only) and I (Intel OpenMP only), given
as the user's own LD_PRELOAD. `--arms AC` compares instead the default (A) with C: A
with torch.compile off (`--compilation-config '{"mode":0}'`, vLLM's eager mode), to see
what the tiny model's 25 s compile at startup buys per token. Rounds alternate A B (T I) A B …; each arm starts its own
server (`invoke serve`), runs `invoke bench --concurrency 1,16`, stops it, and reads the
figures from the logbook. Prints every run, then per level and arm the medians of output
throughput (tok/s), TPOT as the server measures it (mean over the level, /metrics) and the
client's median TPOT (which bunched stream chunks can pull to 0 with a model this fast).

Hold the shared CPU lock for the whole A/B (it keeps other servers off the CPU):

    flock /tmp/vllm-lab-cpu.lock python bench/preload_ab.py --rounds 3

Uses INVOKE_LAB_DATA_DIR (the vLLM env and tiny model) as it is; logbooks go to a temp dir.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lab.core import config as cfgmod  # noqa: E402 (after the sys.path line)
from lab.vllm.env import cpu_preload, managed_env  # noqa: E402

LEVELS = (1, 16)
LABELS = {"A": "no preload", "B": "TCMalloc + Intel OpenMP (auto)", "T": "TCMalloc only",
          "I": "Intel OpenMP only", "C": "compile off (mode 0)"}
#: `invoke serve` flags per arm.
ARM_SERVE = {"C": ["--extra-args", "--compilation-config '{\"mode\":0}'"]}


def arm_env(arm: str) -> dict[str, str]:
    """INVOKE_LAB_CPU_PRELOAD, and for T and I the user's own LD_PRELOAD."""
    if arm in "ABC":
        if arm == "C":
            arm = "A"
        return {"INVOKE_LAB_CPU_PRELOAD": "off" if arm == "A" else "auto"}
    data = cfgmod.data_dir({"data_dir": os.environ.get("INVOKE_LAB_DATA_DIR", ".lab")})
    libs = cpu_preload(managed_env(data, "cpu"))
    lib = next(p for p in libs if ("tcmalloc" if arm == "T" else "iomp") in p.name)
    return {"INVOKE_LAB_CPU_PRELOAD": "off", "LD_PRELOAD": str(lib)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def invoke(args: list[str], env: dict[str, str], timeout_s: float) -> None:
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.exit(f"invoke {' '.join(args)} failed (exit {proc.returncode}):\n"
                 f"{(proc.stdout + proc.stderr)[-2000:]}")


def one_run(arm: str, logbook: Path, num_requests: int, warmup: int) -> dict:
    """Serve, bench c=1 and c=16, stop; the bench levels and the server's LD_PRELOAD."""
    env = dict(os.environ, INVOKE_LAB_PROFILE="cpu", INVOKE_LAB_LOGBOOK_DIR=str(logbook),
               INVOKE_LAB_PORT=str(free_port()), COLUMNS="200")
    env.pop("LD_PRELOAD", None)
    env.update(arm_env(arm))
    try:
        invoke(["serve", *ARM_SERVE.get(arm, [])], env, 900)
        invoke(["bench", "--concurrency", ",".join(map(str, LEVELS)),
                "--num-requests", str(num_requests), "--warmup", str(warmup),
                "--latency-runs", "1"], env, 1800)
    finally:
        subprocess.run([sys.executable, "-m", "invoke", "stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    db = sqlite3.connect(logbook / "lab.db")
    serve_env, log_path, ready_s = db.execute(
        "select env, log_path, ready_s from servers order by id desc limit 1").fetchone()
    (values,) = db.execute(
        "select \"values\" from steps where key='bench' order by id desc limit 1").fetchone()
    db.close()
    levels = {lv["concurrency"]: lv for lv in json.loads(values)["levels"]}
    log = Path(log_path).read_text(errors="replace")
    return {
        "arm": arm,
        "ld_preload": json.loads(serve_env).get("LD_PRELOAD", "") or env.get("LD_PRELOAD", ""),
        "ready_s": ready_s,
        "warns_tcmalloc": "libtcmalloc is not found in LD_PRELOAD" in log,
        "warns_iomp": "libiomp is not found in LD_PRELOAD" in log,
        **{f"c{c}_out_tok_s": levels[c]["output_tok_s"] for c in LEVELS},
        **{f"c{c}_tpot_ms": levels[c]["tpot_ms"]["median"] for c in LEVELS},
        **{f"c{c}_server_tpot_ms": (levels[c]["server"] or {}).get("mean_tpot_ms") for c in LEVELS},
        **{f"c{c}_failed": levels[c]["failed"] for c in LEVELS},
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="A/B pairs (default 3)")
    ap.add_argument("--num-requests", type=int, default=32, help="measured requests per level")
    ap.add_argument("--warmup", type=int, default=4, help="warm-up requests per level")
    ap.add_argument("--attribute", action="store_true",
                    help="also TCMalloc alone (T) and Intel OpenMP alone (I)")
    ap.add_argument("--arms", default=None,
                    help="the arms, in order, e.g. AC (default AB, or ABTI with --attribute)")
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="preload-ab-") as tmp:
        print(f"load average at start: {loadavg()}", flush=True)
        for r in range(args.rounds):
            for arm in args.arms or ("ABTI" if args.attribute else "AB"):
                started = time.monotonic()
                row = one_run(arm, Path(tmp) / f"{arm}{r}", args.num_requests, args.warmup)
                runs.append(row)
                print(f"round {r + 1} {arm}: " + ", ".join(
                    f"c{c} {row[f'c{c}_out_tok_s']:.1f} tok/s TPOT server {row[f'c{c}_server_tpot_ms']:.2f}"
                    f" client {row[f'c{c}_tpot_ms']:.2f} ms"
                    for c in LEVELS) + f"; ready {row['ready_s']:.1f} s; failed {row['c1_failed'] + row['c16_failed']}; "
                    f"LD_PRELOAD={row['ld_preload'] or '-'}; vLLM warns tcmalloc/iomp: "
                    f"{row['warns_tcmalloc']}/{row['warns_iomp']} "
                    f"({time.monotonic() - started:.0f} s, load {loadavg()})", flush=True)
        print(f"load average at end: {loadavg()}")
    arms = [a for a in "ABTIC" if any(x["arm"] == a for x in runs)]
    print("\nmedians over the rounds: " + "; ".join(f"{a} = {LABELS[a]}" for a in arms))
    print(f"{'figure':<30}" + "".join(f"{a:>10}" for a in arms)
          + "".join(f"{a + '/A':>8}" for a in arms[1:]))
    for c in (None, *LEVELS):
        rows = [("ready_s", "server startup s (ready_s)")] if c is None else [
                (f"c{c}_out_tok_s", f"c={c} output tok/s"),
                (f"c{c}_server_tpot_ms", f"c={c} TPOT ms (server mean)"),
                (f"c{c}_tpot_ms", f"c={c} TPOT ms (client median)")]
        for key, label in rows:
            med = {a: statistics.median(x[key] for x in runs if x["arm"] == a) for a in arms}
            print(f"{label:<30}" + "".join(f"{med[a]:>10.2f}" for a in arms)
                  + "".join(f"{med[a] / med['A']:>8.3f}" if med["A"] >= 0.01 else f"{'—':>8}"
                            for a in arms[1:]))


if __name__ == "__main__":
    main()
