"""Integration fixtures: one CPU vLLM env for the whole session (installed by the real
`invoke install`, as a user would), shared by every test marked `vllm`."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Where the CPU vLLM env and tiny model live. Shared with the project's default
    (.lab/) so a developer's earlier `invoke day3` is reused; CI installs it fresh."""
    return Path(os.environ.get("INVOKE_LAB_DATA_DIR", ROOT / ".lab"))


def invoke(args: list[str], env: dict, timeout_s: float = 1800, **kw) -> subprocess.CompletedProcess:
    """Run `invoke ...` as a user would, from the project root."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s, **kw)


@pytest.fixture
def lab_env(tmp_path, data_dir) -> dict:
    """Environment for one test: its own logbook and port, the shared data dir."""
    env = dict(os.environ)
    env.update(INVOKE_LAB_LOGBOOK_DIR=str(tmp_path / "logbook"),
               INVOKE_LAB_DATA_DIR=str(data_dir),
               INVOKE_LAB_PORT=str(free_port()),
               INVOKE_LAB_PROFILE="cpu",
               COLUMNS="200")
    return env


def logged_steps(lab_env: dict, key: str | None = None) -> list[dict]:
    """The recorded steps (all, or of `key`), oldest first, through the Logbook: `values` is
    each step's typed value (lab.record.values)."""
    from lab.record.logbook import Logbook
    book = Logbook(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    try:
        return [s for s in book.steps() if key is None or s["key"] == key]
    finally:
        book.close()


def vllm_processes(lab_env: dict) -> list[psutil.Process]:
    """Live processes started for this test: they inherit its own logbook dir variable
    (other vLLM servers may run on this machine at the same time)."""
    mine = lab_env["INVOKE_LAB_LOGBOOK_DIR"]
    found = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get("INVOKE_LAB_LOGBOOK_DIR") == mine:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
