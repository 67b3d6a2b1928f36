"""The vLLM server process: start it in its own session, wait for `/health`, stop its whole tree.

The caller builds the argv (see lab.vllm.env / the serve step); this module only runs it.
What we know about a running server lives in a small JSON state file (the pid file), so that
`invoke stop` in another terminal, or tomorrow, can find and end it.

Every process we start gets a private marker in its environment (`VLLM_LAB_TAG`). Children
inherit it, so `stop` still finds vLLM's engine core and TP workers after the API server has
died or when one of them moved to its own session. An orphaned vLLM process holds GPU memory.

Nothing here imports vllm, torch or transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import requests

from lab.core.errors import (
    ConfigError,
    PortBusy,
    ServerDied,
    ServerNotRunning,
    ServerTimeout,
    VllmEnvMissing,
)
from lab.core.net import base_url, is_wildcard
from lab.core.text import tail_file
from lab.vllm import watch
from lab.vllm.launch import redact_argv

#: Environment variable that marks every process of one server tree.
TAG_ENV = "VLLM_LAB_TAG"
#: How a vLLM process looks in `ps`: the API server module, or the titles vLLM sets
#: (`VLLM::EngineCore`, `VLLM::Worker_TP0`, ...).
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_TITLE_PREFIX = "VLLM::"
#: Seconds we wait after SIGKILL; the kernel ends a killed process almost at once.
KILL_WAIT_S = 5.0
#: psutil's create_time has jiffy resolution and the boot time is whole seconds.
CREATE_TIME_TOLERANCE_S = 1.0
STARTED_AT_TOLERANCE_S = 3.0


# Popen objects of servers this process started, by pid: they give the exit code and reap the
# child, and keeping them alive avoids "subprocess N is still running" warnings.
_POPENS: dict[int, subprocess.Popen] = {}
# Set by a second Ctrl-C while we are already stopping: skip the grace period.
_HURRY = threading.Event()
# Tags of servers this process is ending on purpose: their exit is no failure to a watcher.
_STOPPING: set[str] = set()
#: Grace period before SIGKILL when the server has already failed (nothing to shut down cleanly).
FAILED_GRACE_S = 5.0


# --------------------------------------------------------------------------------------------
# State file
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ServerState:
    """What we know about one started server; persisted as JSON (the pid file)."""

    pid: int
    pgid: int
    host: str
    port: int
    model: str
    log_path: str
    started_at: float  # unix seconds, taken just before the process was started
    argv: list[str]  # redacted: never contains the API key
    served_model_name: str | None = None
    tp: int = 1
    profile: str | None = None
    run_id: int | None = None
    server_id: int | None = None
    ready_s: float | None = None
    create_time: float | None = None  # psutil's create_time: guards against pid reuse
    tag: str | None = None  # value of VLLM_LAB_TAG in the server's environment
    state_path: str | None = None
    #: Set (and saved) when `stop` begins: a watcher in any process then takes the exit of the
    #: tree as intended.
    stopping: bool = False
    #: NVML used MiB of the server's GPUs just before it started, by NVML index (the GPU
    #: profiles): `stop` waits until they are back near these figures.
    gpu_baseline_mib: dict[str, float] | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port` for a client on this machine (a wildcard bind maps to loopback)."""
        return base_url(self.host, self.port)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state atomically, readable only by the owner; argv is redacted again."""
        data = dataclasses.asdict(self)
        data["argv"] = redact_argv(self.argv)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ServerState | None:
        """The saved state, or None when the file is missing or unreadable."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError):
            return None


def load(path: str | os.PathLike) -> ServerState | None:
    """Module-level alias of `ServerState.load`."""
    return ServerState.load(path)


# --------------------------------------------------------------------------------------------
# Before start: port and exposure
# --------------------------------------------------------------------------------------------
def check_port_free(host: str, port: int) -> None:
    """Raise PortBusy when something already holds `host:port`.

    Binds a probe socket the way uvicorn does (SO_REUSEADDR, so a TIME_WAIT leftover of the
    last server does not count as busy).

    Command line equivalent: `ss -ltnp 'sport = :8000'`
    """
    family, addr = _bind_address(host, port)
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise PortBusy(_port_busy_message(host, port)) from None
        raise ConfigError(f"cannot bind {host}:{port}: {err.strerror or err}") from None
    finally:
        probe.close()


def port_owner(port: int) -> tuple[int, str] | None:
    """(pid, name) of the process listening on `port`, when the OS lets us see it."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, PermissionError, OSError):
        return None
    listening = [c for c in conns if c.laddr and c.laddr.port == port and c.pid]
    listening.sort(key=lambda c: c.status != psutil.CONN_LISTEN)  # LISTEN first
    for conn in listening:
        pid = int(conn.pid or 0)
        try:
            return pid, psutil.Process(pid).name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return pid, "?"
    return None


def _port_busy_message(host: str, port: int) -> str:
    owner = port_owner(port)
    who = f" (pid {owner[0]} {owner[1]})" if owner else ""
    return f"port {port} on {host} is busy{who}: choose --port or run `invoke stop`"


def _bind_address(host: str, port: int) -> tuple[int, tuple]:
    if is_wildcard(host):
        return (
            (socket.AF_INET6, ("::", port)) if ":" in host else (socket.AF_INET, ("0.0.0.0", port))
        )
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"cannot resolve host {host!r}: {err.strerror or err}") from None
    family, _, _, _, addr = infos[0]
    return family, addr


# --------------------------------------------------------------------------------------------
# Start and readiness
# --------------------------------------------------------------------------------------------
def start(
    argv: list[str],
    *,
    log_path: str | os.PathLike,
    state_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str = "",
    served_model_name: str | None = None,
    tp: int = 1,
    profile: str | None = None,
    run_id: int | None = None,
    server_id: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    gpu_baseline_mib: dict[str, float] | None = None,
) -> ServerState:
    """Start the server from `argv` in its own session and write the state file at once.

    `env` is the full environment for the server (None: this process's environment). The log
    file is truncated: it holds this server's output only. Raises PortBusy when the port is
    taken or another tracked server is still alive, VllmEnvMissing when argv[0] cannot run.

    Command line equivalent: `setsid python -m vllm.entrypoints.openai.api_server ... > log 2>&1 &`
    """
    _refuse_if_tracked_alive(state_path)
    check_port_free(host, port)
    tag = uuid.uuid4().hex
    child_env = dict(os.environ if env is None else env)
    child_env[TAG_ENV] = tag
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started_at = time.time()
    proc = _spawn(argv, child_env, log_path, cwd)
    _POPENS[proc.pid] = proc
    try:
        state = ServerState(
            pid=proc.pid,
            pgid=_pgid_or(proc.pid),
            host=host,
            port=int(port),
            model=model,
            served_model_name=served_model_name,
            log_path=str(log_path),
            started_at=started_at,
            argv=redact_argv(argv),
            tp=tp,
            profile=profile,
            run_id=run_id,
            server_id=server_id,
            create_time=_create_time(proc.pid),
            tag=tag,
            state_path=str(state_path),
            gpu_baseline_mib=gpu_baseline_mib,
        )
        state.save(state_path)
    except BaseException:
        # Ctrl-C (or a disk error) before the state file exists: nobody could stop it later.
        end_processes([proc.pid, *_tagged(tag)], grace_s=5, pgid=proc.pid)
        _POPENS.pop(proc.pid, None)
        raise
    return state


def _spawn(argv: list[str], env: dict[str, str], log_path: Path, cwd) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        try:
            # Own session: the terminal's Ctrl-C does not reach it, and we can end its group.
            return subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as err:
            raise VllmEnvMissing(f"cannot run {argv[0]}: {err.strerror}") from None


def _refuse_if_tracked_alive(state_path) -> None:
    old = load(state_path)
    if old is None:
        return
    if is_alive(old):
        raise PortBusy(
            f"a vLLM server is already running (pid {old.pid} on {old.host}:{old.port}): "
            "run `invoke stop` first"
        )
    stop(state_path)  # stale: end leftovers of the dead server's tree, drop the file


def wait_ready(
    state: ServerState,
    timeout_s: float,
    poll_s: float = 1.0,
    on_tick: Callable[[float], None] | None = None,
    watcher: watch.Watcher | None = None,
    wait_released: ReleaseWait | None = None,
) -> float:
    """Poll `GET /health` until it answers 200 while watching the log and the process tree;
    return seconds since the server was started.

    A fatal log line (lab.vllm.diagnose.is_fatal) or the exit of any vLLM process of the tree
    ends the wait within seconds: the tree is ended (`stop_tree`, short grace, then
    `wait_released` when given) and ServerDied carries the diagnosis, its fix, the last log
    lines and `err.failure` / `err.stop_report`. A server that hangs after a worker crashed
    (seen on 2×H200) is caught by its log line, not by the timeout. After `timeout_s`:
    ServerTimeout (the caller stops it). `watcher` (default: one from `watcher(state)`) also
    tracks the startup phases.

    Command line equivalent: `until curl -sf http://127.0.0.1:8000/health; do sleep 1; done`
    """
    watcher = watcher or make_watcher(state)
    url = f"{state.base_url}/health"
    deadline = time.monotonic() + timeout_s
    begun = time.monotonic()
    with requests.Session() as http:
        http.trust_env = False  # a proxy from the environment must not see loopback calls
        while True:
            healthy = _health_ok(http, url, timeout_s=max(0.5, min(5.0, poll_s * 2)))
            failure = watcher.check()
            if failure is not None:
                raise failed_error(state, failure, "during startup", wait_released=wait_released)
            if healthy and not watcher.pending:
                watcher.phases.close(time.time())
                state.ready_s = round(max(0.0, time.time() - state.started_at), 3)
                if state.state_path:
                    state.save(state.state_path)
                return state.ready_s
            if time.monotonic() >= deadline:
                raise ServerTimeout(
                    f"vLLM server not ready after {timeout_s:g} s; last log lines below",
                    evidence=tail_file(state.log_path, 20),
                )
            if on_tick is not None:
                on_tick(time.monotonic() - begun)
            # Poll at least twice a second while a failure settles or a phase moves.
            pause = min(poll_s, 0.5) if watcher.pending else poll_s
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))


def make_watcher(state: ServerState, *, from_start: bool = True, lang: str = "en") -> watch.Watcher:
    """A Watcher of this server: its log, its root process and its `VLLM::` processes;
    the exit of a server the lab is stopping on purpose is no failure."""
    return watch.Watcher(
        state.log_path,
        root_alive=lambda: is_alive(state),
        members=lambda: vllm_members(state),
        stopping=lambda: is_stopping(state),
        root_pid=state.pid,
        from_start=from_start,
        lang=lang,
    )


def vllm_members(state: ServerState) -> list[tuple[str, psutil.Process]]:
    """(title, process) of the server's `VLLM::` processes (engine core, TP workers). Other
    children (compile workers, resource trackers) come and go during startup and are not
    watched."""
    found: list[tuple[str, psutil.Process]] = []
    try:
        root = psutil.Process(state.pid)
        children = root.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return found
    for child in children:
        title = process_title(child)
        if title is not None:
            found.append((title, child))
    return found


def process_title(proc: psutil.Process) -> str | None:
    """The `VLLM::…` title of a process (its full argv[0], else its short kernel name), or None."""
    try:
        cmdline = proc.cmdline()
        if cmdline and cmdline[0].startswith(VLLM_TITLE_PREFIX):
            return cmdline[0].split()[0]
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return name if name.startswith(VLLM_TITLE_PREFIX) else None


def is_stopping(state: ServerState) -> bool:
    """True while the lab ends this server on purpose (here or from another terminal)."""
    if state.tag and state.tag in _STOPPING:
        return True
    if not state.state_path:
        return False
    saved = load(state.state_path)
    return saved is None or saved.tag != state.tag or saved.stopping


def failed_error(
    state: ServerState,
    failure: watch.Failure,
    during: str,
    wait_released: ReleaseWait | None = None,
    lang: str = "en",
) -> ServerDied:
    """ServerDied for a server the watcher found failed; ends its tree first (short grace:
    a failed server has nothing to shut down cleanly). The error carries `failure`, the
    diagnosis's fix and the last log lines; `stop_report` says what was ended and released."""
    code = exit_code(state)
    report = (
        stop_tree(state.state_path, grace_s=FAILED_GRACE_S, wait_released=wait_released)
        if state.state_path
        else StopReport(end_processes(tracked_processes(state), FAILED_GRACE_S))
    )
    if code is None:
        code = exit_code(state)
    if failure.process == f"API server (pid {state.pid})" and code is not None:
        head = (
            f"vLLM server was killed by signal {-code} ({_signal_name(-code)})"
            if code < 0
            else f"vLLM server exited with code {code}"
        )
        what = failure.summary(lang, with_process=False)
        message = f"{head} {during}" + (f": {what}" if failure.diagnosis else "")
    else:
        message = f"vLLM server failed {during}: {failure.summary(lang)}"
    if report.held:
        message += f"; still holding GPU memory: {', '.join(report.held)}"
    err = ServerDied(
        f"{message}; last log lines below",
        fix=failure.fix(),
        evidence=failure.evidence or tail_file(state.log_path, 20),
    )
    err.failure = failure  # type: ignore[attr-defined]
    err.stop_report = report  # type: ignore[attr-defined]
    return err


def _health_ok(http: requests.Session, url: str, timeout_s: float) -> bool:
    try:
        return http.get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def _died(state: ServerState, during: str) -> ServerDied:
    """ServerDied for a server found dead; ends leftover children and drops the state file."""
    code = exit_code(state)
    if code is None:
        what = "vLLM server exited"
    elif code < 0:
        what = f"vLLM server was killed by signal {-code} ({_signal_name(-code)})"
    else:
        what = f"vLLM server exited with code {code}"
    evidence = tail_file(state.log_path, 20)
    if state.state_path:
        stop(state.state_path, grace_s=5)
    else:
        end_processes(tracked_processes(state), grace_s=5)
    return ServerDied(f"{what} {during}; last log lines below", evidence=evidence)


def died_error(state: ServerState, during: str = "while running") -> ServerDied:
    """The ServerDied to raise when a step finds the server gone (e.g. mid-benchmark)."""
    return _died(state, during)


def require_running(state_path: str | os.PathLike) -> ServerState:
    """The state of the running server, or ServerNotRunning (one line)."""
    state = load(state_path)
    if state is None:
        raise ServerNotRunning("no vLLM server is running: run `invoke serve` first")
    if not is_alive(state):
        raise ServerNotRunning(
            f"the vLLM server (pid {state.pid}) is no longer running: run `invoke serve`",
            evidence=tail_file(state.log_path, 20),
        )
    return state


def exit_code(state: ServerState) -> int | None:
    """The server's exit code when this process started it and it has exited, else None."""
    proc = _POPENS.get(state.pid)
    return proc.poll() if proc is not None else None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "?"


# --------------------------------------------------------------------------------------------
# Liveness
# --------------------------------------------------------------------------------------------
def is_alive(state: ServerState | None) -> bool:
    """True when the recorded pid runs, is not a zombie, and is the process we started."""
    if state is None:
        return False
    proc = _POPENS.get(state.pid)
    if proc is not None and proc.poll() is not None:
        return False  # our child has exited (poll also reaps it)
    try:
        p = psutil.Process(state.pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return _same_process(p.create_time(), state)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _same_process(create_time: float, state: ServerState) -> bool:
    if state.create_time is not None:
        return abs(create_time - state.create_time) <= CREATE_TIME_TOLERANCE_S
    return abs(create_time - state.started_at) <= STARTED_AT_TOLERANCE_S


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _pgid_or(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid  # start_new_session makes the child its own group leader


# --------------------------------------------------------------------------------------------
# Stop
# --------------------------------------------------------------------------------------------
#: Waits until the GPU memory of a stopped server is released: called with the server's
#: state once its processes are gone; returns (seconds waited, descriptions of what still
#: holds memory). The session supplies one built on NVML (lab.vllm never imports lab.measure).
ReleaseWait = Callable[[ServerState], tuple[float | None, list[str]]]


@dataclasses.dataclass
class StopReport:
    """What `stop_tree` ended and how long the hand-back took."""

    pids: list[int] = dataclasses.field(default_factory=list)
    #: Seconds from the first signal until every process was gone.
    stop_s: float | None = None
    #: Seconds until the GPU memory was released (None: not checked, e.g. the cpu profile).
    release_s: float | None = None
    #: Processes still alive after SIGKILL ("pid name").
    survivors: list[str] = dataclasses.field(default_factory=list)
    #: What still holds GPU memory after the wait ("GPU0: 130,949 MiB used, pid 3120 python").
    held: list[str] = dataclasses.field(default_factory=list)
    #: The `VLLM::…`/server titles of the processes ended, by pid.
    names: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.survivors and not self.held


def stop(state_path: str | os.PathLike, grace_s: float = 30) -> list[int]:
    """End the recorded server and its whole tree; remove the state file; return the pids ended.

    Collects the tree first (descendants, and every process carrying the server's tag, which
    finds workers that left the group or were orphaned), then SIGTERMs the process group and
    each process, waits up to `grace_s`, SIGKILLs survivors and reaps. Idempotent: with no state
    file, or a dead server and no leftovers, it returns [] (and removes a stale file).
    `stop_tree` does the same and reports timings, survivors and GPU memory release.

    Command line equivalent: `kill -TERM -- -PGID; sleep 30; kill -KILL -- -PGID`
    """
    return stop_tree(state_path, grace_s).pids


def stop_tree(
    state_path: str | os.PathLike | None,
    grace_s: float = 30,
    wait_released: ReleaseWait | None = None,
) -> StopReport:
    """`stop`, then check the hand-back: every process gone (else `survivors`, named), and,
    with `wait_released`, the GPU memory released (`release_s`, else `held`)."""
    report = StopReport()
    if state_path is None:
        return report
    state_path = Path(state_path)
    state = load(state_path)
    if state is not None:
        if state.tag:
            _STOPPING.add(state.tag)
        with contextlib.suppress(OSError):
            state.stopping = True
            state.save(state_path)
        t0 = time.monotonic()
        procs = tracked_processes(state)
        report.names = {p.pid: _describe(p) for p in procs}
        group = state.pgid if is_alive(state) else None  # never signal a reused group id
        ended = end_processes(procs, grace_s=grace_s, pgid=group)
        ended += _end_late_forks(state, set(ended), grace_s)
        report.pids = ended
        report.survivors = [
            f"{p.pid} {report.names.get(p.pid, '?')}" for p in procs if not _gone(p)
        ]
        report.stop_s = round(time.monotonic() - t0, 3)
        _POPENS.pop(state.pid, None)
        if wait_released is not None and ended:
            report.release_s, report.held = wait_released(state)
        if state.tag:
            _STOPPING.discard(state.tag)
    with contextlib.suppress(FileNotFoundError):
        state_path.unlink()
    return report


def _describe(proc: psutil.Process) -> str:
    title = process_title(proc)
    if title:
        return title
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"


def _end_late_forks(state: ServerState, ended: set[int], grace_s: float) -> list[int]:
    """End tagged processes that were forked while we were ending their parents."""
    late_ended: list[int] = []
    for _ in range(3):
        late = list(_tagged(state.tag)) if state.tag else []
        late = [p for p in late if p.pid not in ended and not _gone(p)]
        if not late:
            break
        pids = end_processes(late, grace_s=min(grace_s, 5.0))
        ended.update(pids)
        late_ended += pids
    return late_ended


def tracked_processes(state: ServerState) -> list[psutil.Process]:
    """The server process (when it is still ours), its descendants and all tagged processes."""
    found: dict[int, psutil.Process] = {}
    if is_alive(state):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            root = psutil.Process(state.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    if state.tag:
        for proc in _tagged(state.tag):
            found.setdefault(proc.pid, proc)
    for proc in _session_members(state):
        found.setdefault(proc.pid, proc)
    found.pop(os.getpid(), None)
    return list(found.values())


def _session_members(state: ServerState) -> Iterator[psutil.Process]:
    """vLLM processes still in the server's session, started after it. This finds the engine
    core and TP workers orphaned by a dead API server even though setproctitle erased their
    environment (and so the tag). A session id is not reused while any member lives."""
    for proc in psutil.process_iter(["name", "cmdline", "create_time"]):
        try:
            if (
                os.getsid(proc.pid) == state.pgid
                and (proc.info["create_time"] or 0) >= state.started_at - STARTED_AT_TOLERANCE_S
                and _looks_like_vllm(proc.info["name"] or "", proc.info["cmdline"] or [])
            ):
                yield proc
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue


def _tagged(tag: str) -> Iterator[psutil.Process]:
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TAG_ENV) == tag:
                yield proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue


def end_processes(
    procs: Iterable[psutil.Process | int], grace_s: float = 30, pgid: int | None = None
) -> list[int]:
    """SIGTERM `procs` (and the group `pgid`), wait `grace_s`, SIGKILL survivors; return pids.

    Command line equivalent: `kill -TERM PID...; sleep GRACE; kill -KILL PID...`
    """
    targets = [p for p in (_as_process(x) for x in procs) if p is not None and not _gone(p)]
    if not targets and pgid is None:
        return []
    _signal_all(targets, signal.SIGTERM, pgid)
    survivors = _wait_gone(targets, grace_s)
    if survivors:
        _signal_all(survivors, signal.SIGKILL, pgid)
        _wait_gone(survivors, KILL_WAIT_S)
    return sorted(p.pid for p in targets)


def _as_process(item: psutil.Process | int) -> psutil.Process | None:
    if isinstance(item, psutil.Process):
        return item
    try:
        return psutil.Process(int(item))
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _signal_all(procs: list[psutil.Process], sig: signal.Signals, pgid: int | None) -> None:
    if pgid is not None and pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for proc in procs:
        # psutil checks the create time first, so a reused pid is never signalled.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process has exited (a zombie counts as exited); return the survivors."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline or _HURRY.is_set():
            return alive
        time.sleep(0.05)


def _gone(proc: psutil.Process) -> bool:
    _reap(proc.pid)
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status of a server this process started, so it does not stay a zombie.

    Only through its Popen: a bare waitpid could steal the status of the caller's other children.
    """
    proc = _POPENS.get(pid)
    if proc is not None:
        proc.poll()


# --------------------------------------------------------------------------------------------
# Orphans (`invoke stop --all`)
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """A vLLM-looking process, for `invoke stop --all` to list and end."""

    pid: int
    name: str
    cmdline: str
    create_time: float


def find_orphans(state_path: str | os.PathLike | None = None) -> list[ProcessInfo]:
    """vLLM processes on this machine that the state file does not track.

    Matches a command line with `vllm.entrypoints.openai.api_server`, `vllm serve`, or a
    `VLLM::` title (engine core, TP workers).

    Command line equivalent: `pgrep -af 'vllm.entrypoints.openai.api_server|VLLM::'`
    """
    state = load(state_path) if state_path is not None else None
    tracked = {p.pid for p in tracked_processes(state)} if state is not None else set()
    tracked.add(os.getpid())
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "status"]):
        info = proc.info
        if proc.pid in tracked or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        cmdline = info.get("cmdline") or []
        if _looks_like_vllm(info.get("name") or "", cmdline):
            found.append(
                ProcessInfo(
                    pid=proc.pid,
                    name=info.get("name") or "",
                    cmdline=" ".join(redact_argv(cmdline)),
                    create_time=info.get("create_time") or 0.0,
                )
            )
    return found


def _looks_like_vllm(name: str, cmdline: list[str]) -> bool:
    if name.startswith(VLLM_TITLE_PREFIX) or (cmdline and cmdline[0].startswith(VLLM_TITLE_PREFIX)):
        return True
    if any(VLLM_MODULE in arg for arg in cmdline):
        return True
    # The console script: `.../bin/vllm serve MODEL`, possibly run through python; or the
    # lab's launcher of the same CLI (multi-node: lab/vllm/scripts/vllm_cli.py serve MODEL).
    for i, arg in enumerate(cmdline[:-1]):
        if os.path.basename(arg) in ("vllm", "vllm_cli.py") and cmdline[i + 1] == "serve":
            return True
    return False


def stop_orphans(orphans: Iterable[ProcessInfo], grace_s: float = 30) -> list[int]:
    """End the given orphans and their descendants; return the pids ended."""
    procs: dict[int, psutil.Process] = {}
    for orphan in orphans:
        try:
            proc = psutil.Process(orphan.pid)
            if abs(proc.create_time() - orphan.create_time) > CREATE_TIME_TOLERANCE_S:
                continue  # the pid was reused since we listed it
            procs[proc.pid] = proc
            for child in proc.children(recursive=True):
                procs[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    procs.pop(os.getpid(), None)
    return end_processes(procs.values(), grace_s=grace_s)


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received {_signal_name(signum)}")


def _hurry(signum, frame):
    _HURRY.set()


#: What `signal.signal` returns and takes: a handler, SIG_DFL/SIG_IGN, or None.
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_signal_handlers() -> dict[int, Handler]:
    """Make SIGTERM (and SIGINT) raise KeyboardInterrupt; return the previous handlers.

    Only the main thread can install handlers; elsewhere this does nothing and returns {}.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, _raise_interrupt)
    return previous


def restore_signal_handlers(previous: Mapping[int, Handler]) -> None:
    """Put back the handlers returned by `install_signal_handlers`."""
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_on_interrupt(
    state_path: str | os.PathLike, grace_s: float = 30, wait_released: ReleaseWait | None = None
) -> Iterator[None]:
    """On Ctrl-C or SIGTERM inside the block: stop the server tree, then re-raise KeyboardInterrupt.

    While stopping, a second Ctrl-C/SIGTERM skips the grace period (SIGKILL at once) instead of
    abandoning the server, so the caller can still mark the step interrupted.
    """
    previous = install_signal_handlers()
    try:
        yield
    except KeyboardInterrupt:
        _stop_hurriable(state_path, grace_s, wait_released)
        raise
    finally:
        restore_signal_handlers(previous)


def _stop_hurriable(state_path, grace_s: float, wait_released: ReleaseWait | None = None) -> None:
    on_main = threading.current_thread() is threading.main_thread()
    saved: dict[int, Handler] = {}
    if on_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, _hurry)
    _HURRY.clear()
    try:
        stop_tree(state_path, grace_s=grace_s, wait_released=wait_released)
    finally:
        _HURRY.clear()
        restore_signal_handlers(saved)
