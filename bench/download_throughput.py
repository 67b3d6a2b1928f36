"""How fast does `invoke download` move bytes, and what does a re-run cost when everything is
already there?

Starts the local test hub (tests/fakes/local_hub.py) in its own process on 127.0.0.1 with a
repository of `--shards` LFS files of `--shard-mib` MiB each (plus the small config files),
then, with the real huggingface_hub client through lab.vllm.hub:

- first download into an empty folder: bytes, seconds, MB/s (MB = 10^6 bytes), then the
  SHA-256 verification's seconds and rate;
- re-run with everything present, as the step does it (the file list from the hub, then the
  stamp check: no file is read or fetched);
- with `--invoke`: the whole `invoke download --profile gpu` re-run as a user types it
  (Python start-up, the logbook record and the day log included).

Loopback is not a network: the figure is the client's own ceiling on this machine (its
10 MiB read chunks, the file writes, the server's Python), an upper bound for a real hub.

Usage: python bench/download_throughput.py [--shards 2] [--shard-mib 256] [--repeats 3] [--invoke]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.vllm import hub  # noqa: E402 (the project root is put on sys.path first)

REPO = "lab-bench/download-model"


def start_hub(shards: int, shard_mib: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakes" / "local_hub.py"),
                             "--repo", REPO, "--shards", str(shards), "--lfs-mib", str(shard_mib)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()          # "local hub: http://127.0.0.1:PORT serving …"
    return proc, line.split()[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--shard-mib", type=float, default=256)
    p.add_argument("--repeats", type=int, default=3, help="first downloads (each into a fresh folder)")
    p.add_argument("--workers", type=int, default=8, help="files fetched at a time")
    p.add_argument("--invoke", action="store_true", help="also time `invoke download` re-runs")
    args = p.parse_args()

    server, endpoint = start_hub(args.shards, args.shard_mib)
    work = Path(tempfile.mkdtemp(prefix="vllm-lab-bench-download-"))
    os.environ["HF_HOME"] = str(work / "hf-home")
    try:
        plan = hub.plan_download(REPO, endpoint=endpoint)
        print(f"repository: {len(plan.files)} files, {plan.bytes_total / 2**20:,.0f} MiB "
              f"({args.shards} x {args.shard_mib:g} MiB LFS) on {endpoint}, "
              f"huggingface_hub {_version()}, {args.workers} workers")
        rates, verify_rates = [], []
        for i in range(args.repeats):
            target = work / f"m{i}"
            hub.check_disk(plan, target, reserve_gib=1)
            result = hub.download(plan, target, max_workers=args.workers)
            verify_s = hub.verify(plan, target)
            rates.append(result.mb_per_s or 0.0)
            verify_rates.append(plan.bytes_total / verify_s / 1e6)
            print(f"  first download #{i + 1}: {result.bytes_fetched:,} bytes in {result.seconds:.2f} s"
                  f" = {result.mb_per_s:,.1f} MB/s; SHA-256 verify {verify_s:.2f} s "
                  f"({verify_rates[-1]:,.0f} MB/s)")
            if i < args.repeats - 1:
                shutil.rmtree(target)
        print(f"download throughput: median {statistics.median(rates):,.1f} MB/s "
              f"(min {min(rates):,.1f}, max {max(rates):,.1f}) over {len(rates)} runs")
        print(f"SHA-256 verification: median {statistics.median(verify_rates):,.0f} MB/s")

        target = work / f"m{args.repeats - 1}"
        reruns = []
        for _ in range(5):
            started = time.perf_counter()
            again = hub.plan_download(REPO, endpoint=endpoint)
            present = hub.is_present(again, target)
            reruns.append(time.perf_counter() - started)
            assert present, "the re-run found the files missing"
        print(f"re-run, everything present (file list + stamp check, in-process): median "
              f"{statistics.median(reruns) * 1000:,.1f} ms over {len(reruns)}")
        if args.invoke:
            env = {**os.environ, "INVOKE_LAB_LOGBOOK_DIR": str(work / "logbook"),
                   "HF_ENDPOINT": endpoint}
            cmd = [sys.executable, "-m", "invoke", "download", "--profile", "gpu", "--model", REPO,
                   "--local-dir", str(target)]
            times = []
            for _ in range(3):
                started = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - started)
                assert proc.returncode == 0 and "already present, verified" in proc.stdout, proc.stdout
            print(f"re-run, everything present (`invoke download --profile gpu`, whole process): "
                  f"median {statistics.median(times):.2f} s over {len(times)}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _version() -> str:
    import huggingface_hub
    return huggingface_hub.__version__


if __name__ == "__main__":
    main()
