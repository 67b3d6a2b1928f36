"""Time to first result: a fresh clone's README command, `pip install -e . && invoke day3`,
end to end, and each part of it.

Clones the repository (its committed HEAD) into a temp dir, makes a fresh venv for the tool,
runs `pip install -e .` there, then `invoke day3` with a fresh data dir (so the vLLM env is
installed and the tiny model built, as on a new machine), and prints: tool install, vLLM env
install (and which installer), model build, server startup, every step's duration and the
wall clock, read from the logbook the run wrote.

Hold the shared CPU lock while it runs (it starts a vLLM server):

    flock /tmp/vllm-lab-cpu.lock python bench/first_run.py            # warm caches
    flock /tmp/vllm-lab-cpu.lock python bench/first_run.py --cold     # empty caches
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run argv (output to log); its wall seconds, or exit with the log's tail."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=3600)
    took = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}) after {took:.1f} s:\n{tail}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(ROOT), help="the repository to clone (default: this one)")
    ap.add_argument("--cold", action="store_true",
                    help="empty uv, pip, vLLM-compile and inductor caches, as on a new machine")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (about 3 GB)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fr-"))
    repo, tool, data = tmp / "repo", tmp / "tool", tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOKE_LAB_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{tool / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               INVOKE_LAB_DATA_DIR=str(data), INVOKE_LAB_PORT=str(free_port()), COLUMNS="200")
    if args.cold:
        env.update(UV_CACHE_DIR=str(tmp / "uv-cache"), PIP_CACHE_DIR=str(tmp / "pip-cache"),
                   VLLM_CACHE_ROOT=str(tmp / "vllm-cache"),
                   TORCHINDUCTOR_CACHE_DIR=str(tmp / "inductor-cache"))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:
        subprocess.run(["git", "clone", "-q", args.repo, str(repo)], check=True, timeout=300)
        head = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True).stdout.strip()
        started = time.monotonic()
        venv_s = timed([sys.executable, "-m", "venv", str(tool)], repo, env, tmp / "venv.log")
        # The README's command, as a user types it: pip install -e . && invoke day3
        tool_s = timed(["pip", "install", "-q", "-e", "."], repo, env, tmp / "tool-install.log")
        day3_s = timed(["invoke", "day3"], repo, env, tmp / "day3.log")
        wall_s = time.monotonic() - started

        db = sqlite3.connect(repo / "logbook" / "lab.db")
        db.row_factory = sqlite3.Row
        (run_id,) = db.execute("select max(id) from runs where day='day3'").fetchone()
        steps = [dict(r) for r in db.execute(
            "select key, status, duration_s, \"values\" from steps where run_id=? order by id",
            (run_id,))]
        values = {s["key"]: json.loads(s["values"] or "{}") for s in steps}
        install, serve = values.get("install", {}), values.get("serve", {})

        print(f"first run of {head} ({'cold' if args.cold else 'warm'} caches; "
              f"load average {load} at start)")
        print(f"{'part':<42}{'s':>8}")
        rows = [
            ("tool venv (python -m venv)", venv_s),
            ("tool install (pip install -e .)", tool_s),
            (f"vLLM env install ({install.get('installer')})", install.get("install_s")),
            ("model build (tiny-qwen2)", serve.get("model_build_s")),
            ("server startup (ready_s)", serve.get("ready_s")),
        ]
        rows += [(f"step {s['key']} ({s['status']})", s["duration_s"]) for s in steps]
        rows += [("invoke day3 (wall)", day3_s),
                 ("pip install -e . && invoke day3 (wall)", tool_s + day3_s),
                 ("all, with the venv (wall)", wall_s)]
        for label, secs in rows:
            print(f"{label:<42}{'—' if secs is None else f'{secs:8.1f}'}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
