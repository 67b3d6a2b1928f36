"""Faults against the real CPU vLLM: each gives one clear line, a failed (or interrupted)
step in the logbook, a non-zero exit, no traceback, and no vLLM process left behind."""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from integration.conftest import ROOT, invoke, vllm_processes

pytestmark = pytest.mark.vllm


def steps(lab_env) -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    db.row_factory = sqlite3.Row
    return list(db.execute("select * from steps order by id"))


def assert_one_clear_failure(proc, lab_env, text):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert text in out, out[-2000:]
    assert "Traceback" not in out
    last = steps(lab_env)[-1]
    assert last["status"] == "fail" and text in last["reason"]
    assert not vllm_processes(lab_env)
    return last


def test_busy_port(lab_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(lab_env["INVOKE_LAB_PORT"])))
        s.listen()
        proc = invoke(["serve"], lab_env, timeout_s=300)
    assert_one_clear_failure(proc, lab_env, f"port {lab_env['INVOKE_LAB_PORT']} on 127.0.0.1 is busy")


def test_missing_model(lab_env, tmp_path):
    proc = invoke(["serve", "--model", str(tmp_path / "no-such-model")], lab_env, timeout_s=300)
    assert_one_clear_failure(proc, lab_env, "model not found")


def test_server_dies_during_startup_shows_its_last_log_lines(lab_env):
    # A context longer than the tiny model's positions: vLLM exits during startup.
    proc = invoke(["serve", "--extra-args", "--max-model-len 999999"], lab_env, timeout_s=600)
    last = assert_one_clear_failure(proc, lab_env, "vLLM server exited")
    assert "last log lines" in proc.stdout
    assert last["evidence"] and len(last["evidence"].splitlines()) <= 20
    assert "max_model_len" in last["evidence"] or "max-model-len" in last["evidence"]


def test_ctrl_c_during_serve_stops_the_server_and_marks_the_step_interrupted(lab_env):
    env = dict(lab_env)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "server.json"
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state.exists(), "the server never started"
    server_pid = json.loads(state.read_text())["pid"]
    time.sleep(8)  # mid-startup: the engine is loading
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    last = steps(lab_env)[-1]
    assert last["key"] == "serve" and last["status"] == "interrupted"
    assert sqlite3.connect(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db").execute(
        "PRAGMA integrity_check").fetchone()[0] == "ok"
    # Gone, or at most a zombie awaiting a reaper (this container's PID 1 does not reap).
    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE
    assert not vllm_processes(lab_env)
