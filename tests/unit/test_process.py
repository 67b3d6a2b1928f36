"""lab.vllm.process against tests/fakes/fake_vllm_server.py: start, readiness, tree stop, signals.

Only 127.0.0.1, free ports picked by the OS. Other vLLM processes on the machine are never
touched: orphan tests only end the pids they started themselves.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from lab.core.errors import PortBusy, ServerDied, ServerNotRunning, ServerTimeout
from lab.core.text import tail_file
from lab.vllm import process as server
from tests.fakes.fake_openai_stream import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fakes" / "fake_vllm_server.py"
SECRET = "sk-test-secret-4242"


def fake_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE), "--host", "127.0.0.1", "--port", str(port), *extra]


def gone(pid: int) -> bool:
    """Exited; a zombie counts (this container's init does not reap reparented children)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tagged_alive(tag: str) -> list[int]:
    """Live processes that carry this server's marker: none may survive a stop."""
    return [p.pid for p in server._tagged(tag) if not gone(p.pid)]


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def logged_child_pids(log_path: str, count: int) -> list[int]:
    """Pids the fake wrote as `FAKE child pid=N` (children and grandchild)."""
    pids: list[int] = []

    def enough() -> bool:
        nonlocal pids
        pids = [int(m) for m in re.findall(r"FAKE child pid=(\d+)", Path(log_path).read_text())]
        return len(pids) >= count

    assert wait_until(enough), Path(log_path).read_text()
    return pids


@pytest.fixture
def paths(tmp_path):
    state_path = tmp_path / "logbook" / "server.json"
    log_path = tmp_path / "logbook" / "server.log"
    yield state_path, log_path
    server.stop(state_path, grace_s=1)  # never leave a fake behind, whatever the test did


def start_fake(paths, port: int, *extra: str, **fields) -> server.ServerState:
    state_path, log_path = paths
    return server.start(
        fake_argv(port, *extra),
        log_path=log_path,
        state_path=state_path,
        host="127.0.0.1",
        port=port,
        model="fake-model",
        **fields,
    )


# ------------------------------------------------------------------------------------ unit bits
def test_state_file_round_trip_and_corrupt_file(tmp_path):
    path = tmp_path / "s.json"
    state = server.ServerState(
        pid=1, pgid=1, host="127.0.0.1", port=8000, model="m", log_path="l", started_at=1.0,
        argv=["vllm", "--api-key", SECRET], run_id=7, server_id=3,
    )
    state.save(path)
    assert SECRET not in path.read_text()
    assert server.load(path).run_id == 7
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("{not json")
    assert server.load(path) is None
    assert server.load(tmp_path / "none.json") is None


# ------------------------------------------------------------------------------------ port
def test_port_busy_gives_one_line_with_owner(paths):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortBusy) as info:
            server.check_port_free("127.0.0.1", port)
        message = str(info.value)
        assert "\n" not in message
        assert f"port {port} on 127.0.0.1 is busy" in message
        assert f"pid {os.getpid()}" in message  # the owner, found through psutil
        assert "invoke stop" in message
        # start() checks first: nothing is spawned, no state file is written.
        with pytest.raises(PortBusy):
            start_fake(paths, port)
        assert not paths[0].exists()


def test_port_free_passes():
    server.check_port_free("127.0.0.1", free_port())


# ------------------------------------------------------------------------------------ lifecycle
def test_start_wait_ready_stop_leaves_no_process(paths):
    state_path, log_path = paths
    port = free_port()
    ticks: list[float] = []
    state = start_fake(paths, port, "--startup-s", "0.6", "--spawn-children", "2", "--api-key", SECRET,
                       run_id=11, server_id=5, tp=2, profile="cpu")
    assert state.pgid == state.pid  # own process group / session
    assert os.getsid(state.pid) == state.pid
    saved = json.loads(state_path.read_text())
    assert saved["pid"] == state.pid and saved["run_id"] == 11 and saved["tp"] == 2

    ready_s = server.wait_ready(state, timeout_s=8, poll_s=0.1, on_tick=ticks.append)
    assert 0 < ready_s < 8
    assert ticks, "on_tick is called while waiting"
    assert server.load(state_path).ready_s == ready_s
    assert server.is_alive(state)
    assert "Application startup complete." in tail_file(log_path)

    children = logged_child_pids(str(log_path), 3)  # 2 children + the setsid child's grandchild
    tree = [state.pid, *children]
    assert all(not gone(pid) for pid in tree)
    escaped = [pid for pid in children if os.getpgid(pid) != state.pgid]
    assert escaped, "one child left the process group"

    ended = server.stop(state_path, grace_s=5)
    assert set(tree) <= set(ended)
    assert all(gone(pid) for pid in tree), [(pid, gone(pid)) for pid in tree]
    assert tagged_alive(state.tag) == []
    assert not state_path.exists()
    assert not server.is_alive(state)


def test_state_file_and_state_never_contain_api_key(paths):
    state_path, _ = paths
    state = start_fake(paths, free_port(), "--api-key", SECRET, "--startup-s", "0.2")
    text = state_path.read_text()
    assert SECRET not in text
    assert SECRET not in " ".join(state.argv)
    assert "***" in text
    # The process itself did get the key.
    assert SECRET in psutil.Process(state.pid).cmdline()
    server.wait_ready(state, timeout_s=60, poll_s=0.1)
    assert SECRET not in state_path.read_text()


def test_dies_during_startup_gives_server_died_with_log_lines(paths):
    state_path, log_path = paths
    state = start_fake(paths, free_port(), "--startup-s", "5", "--die-after-s", "0.3", "--spawn-children", "1")
    children = logged_child_pids(str(log_path), 1)
    with pytest.raises(ServerDied) as info:
        server.wait_ready(state, timeout_s=8, poll_s=0.1)
    err = info.value
    assert str(err) == ("vLLM server exited with code 1 during startup: CUDA out of memory while "
                        "loading or profiling; last log lines below")
    assert "--gpu-memory-utilization" in err.fix
    assert "torch.OutOfMemoryError: CUDA out of memory" in err.evidence
    assert len(err.evidence.splitlines()) <= 20
    # What the dead server left behind is ended too, and the state file is gone.
    assert wait_until(lambda: all(gone(pid) for pid in children))
    assert tagged_alive(state.tag) == []
    assert not state_path.exists()


def test_timeout_gives_server_timeout(paths):
    state = start_fake(paths, free_port(), "--startup-s", "30")
    t0 = time.monotonic()
    with pytest.raises(ServerTimeout) as info:
        server.wait_ready(state, timeout_s=1.0, poll_s=0.2)
    assert time.monotonic() - t0 < 3
    assert "not ready after 1 s" in str(info.value)
    assert "vLLM API server version" in info.value.evidence
    assert server.is_alive(state)  # the caller decides to stop it
    assert server.stop(paths[0], grace_s=2) == [state.pid]
    assert gone(state.pid)


def test_health_503_keeps_polling_until_timeout(paths):
    state = start_fake(paths, free_port(), "--startup-s", "0.1", "--health-status", "503")
    with pytest.raises(ServerTimeout):
        server.wait_ready(state, timeout_s=1.0, poll_s=0.1)
    assert "503" in tail_file(state.log_path)


def test_stop_escalates_to_sigkill(paths):
    state_path, log_path = paths
    state = start_fake(paths, free_port(), "--ignore-sigterm", "--spawn-children", "1", "--startup-s", "0.2")
    server.wait_ready(state, timeout_s=8, poll_s=0.1)
    children = logged_child_pids(str(log_path), 2)
    t0 = time.monotonic()
    ended = server.stop(state_path, grace_s=1.0)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 5
    assert set([state.pid, *children]) <= set(ended)
    assert all(gone(pid) for pid in [state.pid, *children])
    assert tagged_alive(state.tag) == []
    assert "ignoring SIGTERM" in Path(log_path).read_text()


def test_stop_is_idempotent(paths):
    state_path, _ = paths
    assert server.stop(state_path) == []  # no state file
    state = start_fake(paths, free_port(), "--startup-s", "0.2")
    assert server.stop(state_path, grace_s=2) == [state.pid]
    assert server.stop(state_path, grace_s=2) == []
    assert not state_path.exists()


def test_stale_state_file_is_handled(paths, tmp_path):
    state_path, log_path = paths
    # A pid that exists but is not ours (pid reuse): this test process, recorded as if it
    # had been started long ago.
    stale = server.ServerState(
        pid=os.getpid(), pgid=os.getpgrp(), host="127.0.0.1", port=free_port(), model="m",
        log_path=str(log_path), started_at=1_000_000.0, argv=["x"], create_time=1_000_000.0,
    )
    stale.save(state_path)
    assert not server.is_alive(stale)
    with pytest.raises(ServerNotRunning):
        server.require_running(state_path)
    assert server.stop(state_path) == []  # never signals the unrelated process
    assert not state_path.exists()
    # A start over a stale file replaces it.
    stale.save(state_path)
    state = start_fake(paths, free_port(), "--startup-s", "0.2")
    assert server.load(state_path).pid == state.pid


def test_second_start_while_running_is_refused(paths):
    state = start_fake(paths, free_port(), "--startup-s", "0.2")
    with pytest.raises(PortBusy) as info:
        start_fake(paths, free_port())
    assert f"pid {state.pid}" in str(info.value)
    assert server.load(paths[0]).pid == state.pid


def test_find_orphans_sees_untracked_vllm_processes(paths, tmp_path):
    state_path, log_path = paths
    port = free_port()
    # Looks like vLLM to `ps`; the fake ignores the extra flag.
    state = start_fake(paths, port, "--spawn-children", "1", "--startup-s", "0.2",
                       "--x-tag=vllm.entrypoints.openai.api_server")
    children = logged_child_pids(str(log_path), 1)
    tracked = {o.pid for o in server.find_orphans(state_path)}
    assert state.pid not in tracked and not set(children) & tracked
    state_path.unlink()  # the server is now untracked: an orphan
    mine = {state.pid, *children}
    orphans: list[server.ProcessInfo] = []

    def all_found() -> bool:  # a child sets its VLLM:: title a moment after it starts
        nonlocal orphans
        orphans = [o for o in server.find_orphans(state_path) if o.pid in mine]
        return {o.pid for o in orphans} == mine

    assert wait_until(all_found), orphans  # by module name and by VLLM:: title
    try:
        ended = server.stop_orphans(orphans, grace_s=2)
        assert set(ended) >= mine
        assert all(gone(pid) for pid in mine)
    finally:
        server.end_processes(mine, grace_s=1)  # the fixture cannot: the state file is gone


# ------------------------------------------------------------------------------------ signals
PARENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from lab.vllm import process as server
    try:
        with server.stop_on_interrupt({state!r}, grace_s={grace_s}):
            state = server.start({argv!r}, log_path={log!r}, state_path={state!r}, port={port})
            server.wait_ready(state, timeout_s=8, poll_s=0.1)
            print("READY", state.pid, flush=True)
            time.sleep(60)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    """
)


def run_parent(tmp_path, *fake_args: str, grace_s: float = 5):
    """Start PARENT_SCRIPT; return (parent Popen, state path, pids of the server tree)."""
    state_path = tmp_path / "server.json"
    log_path = tmp_path / "server.log"
    port = free_port()
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT.format(
        repo=str(REPO), argv=fake_argv(port, "--spawn-children", "2", "--startup-s", "0.2", *fake_args),
        log=str(log_path), state=str(state_path), port=port, grace_s=grace_s,
    ))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    assert line.startswith("READY"), line
    tree = [int(line.split()[1]), *logged_child_pids(str(log_path), 3)]
    assert all(not gone(pid) for pid in tree)
    return parent, state_path, tree


def test_sigterm_to_parent_with_stop_on_interrupt_leaves_no_children(tmp_path):
    parent, state_path, tree = run_parent(tmp_path)
    try:
        parent.send_signal(signal.SIGTERM)
        out, _ = parent.communicate(timeout=8)
        assert parent.returncode == 130  # KeyboardInterrupt reached the caller
        assert "INTERRUPTED" in out
        assert all(gone(pid) for pid in tree), [(pid, gone(pid)) for pid in tree]
        assert not state_path.exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        server.stop(state_path, grace_s=1)


def test_second_signal_skips_the_grace_period(tmp_path):
    parent, state_path, tree = run_parent(tmp_path, "--ignore-sigterm", grace_s=30)
    try:
        t0 = time.monotonic()
        parent.send_signal(signal.SIGINT)
        time.sleep(0.5)
        parent.send_signal(signal.SIGINT)  # impatient user: kill now instead of waiting 30 s
        out, _ = parent.communicate(timeout=8)
        assert time.monotonic() - t0 < 5
        assert parent.returncode == 130 and "INTERRUPTED" in out
        assert all(gone(pid) for pid in tree)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        server.stop(state_path, grace_s=1)
