"""CPU-side measurements of the vLLM server's process tree, with psutil.

On the cpu profile there is no NVML, so TP=2 balance is measured on the RSS of the two
`VLLM::Worker_TP*` processes instead of GPU memory. vLLM names them with setproctitle
(`f"{VLLM_PROCESS_NAME_PREFIX}::Worker_{PPn_}TPn"`, prefix "VLLM" by default), which
rewrites /proc/PID/cmdline and sets /proc/PID/comm to the first 15 characters.

Processes come and go while we look (the server forks compile workers, a worker dies):
every psutil call here tolerates a process vanishing between listing and reading it.

RSS counts shared pages in every process that maps them, so the tree's sum overstates
real memory use; it is the number `ps`/`top` show, and what the seed compares.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any

import psutil

from lab.core.units import mib

#: Title prefix of a vLLM worker; a PP>1 worker is "VLLM::Worker_PP0_TP1".
WORKER_TITLE_PREFIX = "VLLM::Worker_"
#: The kernel keeps 15 characters of a process name (TASK_COMM_LEN - 1).
_COMM_LEN = 15

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def process_tree(root_pid: int) -> list[psutil.Process]:
    """The root process and all its descendants; [] when the root is gone.

    Command line equivalent:
        ps --forest -o pid,ppid,rss,pcpu,args -g $(ps -o sid= -p ROOT_PID)   (or: pstree -p ROOT_PID)
    """
    try:
        root = psutil.Process(root_pid)
        children = root.children(recursive=True)
    except _GONE:
        return []
    alive = []
    for proc in children:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except _GONE:
            continue
    return [root, *alive]


def _rss_mib(proc: psutil.Process) -> float | None:
    try:
        return mib(proc.memory_info().rss)
    except _GONE:
        return None


def tree_rss_mib(root_pid: int) -> float | None:
    """Sum of RSS over the root and its descendants, in MiB; None when the root is gone.

    Command line equivalent:
        ps -o rss= -p $(pstree -p ROOT_PID | grep -o '([0-9]*)' | tr -d '()' | paste -sd,) | awk '{s+=$1} END {print s/1024}'
    """
    procs = process_tree(root_pid)
    if not procs:
        return None
    return sum(r for r in (_rss_mib(p) for p in procs) if r is not None)


def worker_title(
    name: str | None, cmdline: list[str] | None, prefix: str = WORKER_TITLE_PREFIX
) -> str | None:
    """The vLLM worker title of a process, from its psutil name() and cmdline(); else None.

    cmdline is preferred: setproctitle writes the whole title there, while the kernel
    name (comm) keeps only 15 characters ("VLLM::Worker_TP" without the rank).
    """
    if cmdline:
        first = cmdline[0].strip()
        if first.startswith(prefix):
            # setproctitle may leave the title as one argv entry with trailing text.
            return first.split()[0]
    if name and name.startswith(prefix):
        return name.split()[0]
    return None


def _natural_key(text: str) -> list[Any]:
    # "TP10" after "TP2".
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _worker_title_of(proc: psutil.Process, prefix: str = WORKER_TITLE_PREFIX) -> str | None:
    try:
        cmdline = proc.cmdline()
    except _GONE:
        cmdline = None
    title = worker_title(None, cmdline, prefix)
    if title is not None:
        return title
    try:
        name = proc.name()
    except _GONE:
        return None
    title = worker_title(name, None, prefix)
    if title is not None and len(title) >= _COMM_LEN:
        # Only the truncated kernel name is known: add the pid so two workers stay distinct.
        title = f"{title}(pid {proc.pid})"
    return title


def vllm_workers(root_pid: int, prefix: str = WORKER_TITLE_PREFIX) -> list[dict[str, Any]]:
    """The `VLLM::Worker_*` processes under root_pid (or those whose title starts with
    `prefix`): [{pid, title, rss_mib}], by title.

    Command line equivalent:
        ps -eo pid,rss,args | grep 'VLLM::Worker_TP'
    """
    out: list[dict[str, Any]] = []
    for proc in process_tree(root_pid):
        title = _worker_title_of(proc, prefix)
        if title is None:
            continue
        rss = _rss_mib(proc)
        if rss is None:  # exited between listing and reading
            continue
        out.append({"pid": proc.pid, "title": title, "rss_mib": rss})
    out.sort(key=lambda w: (_natural_key(w["title"]), w["pid"]))
    return out


def vllm_ranks(root_pid: int) -> list[dict[str, Any]]:
    """The processes that hold a parallel rank's model: the `VLLM::Worker_*` processes
    (tensor and pipeline ranks), else the data-parallel engines (`VLLM::EngineCore_DP*`),
    else the one engine (`VLLM::EngineCore`). [{pid, title, rss_mib}], by title.

    Command line equivalent: `ps -eo pid,rss,args | grep 'VLLM::'`
    """
    for prefix in (WORKER_TITLE_PREFIX, "VLLM::EngineCore_DP", "VLLM::EngineCore"):
        found = vllm_workers(root_pid, prefix)
        if found:
            return found
    return []


class ProcessSampler:
    """Timeline sampler for one process tree; keeps psutil.Process objects between calls.

    psutil's cpu_percent() measures since the previous call on the same object, so the
    first sample of a new process has no CPU figure (None, not a fake 0).
    """

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    def _cpu_pct(self, proc: psutil.Process) -> float | None:
        cached = self._procs.get(proc.pid)
        # is_running() compares create times, so a reused pid gets a fresh object.
        if cached is not None and cached.is_running():
            try:
                return cached.cpu_percent(None)
            except _GONE:
                return None
        self._procs[proc.pid] = proc
        with contextlib.suppress(*_GONE):
            proc.cpu_percent(None)  # prime; the next call returns a real figure
        return None

    def __call__(self) -> list[dict[str, Any]]:
        """Rows: t, source 'process', device ('tree' or a worker title), rss_mib, cpu_pct.

        cpu_pct is psutil's percent of one core (a busy 4-thread process shows ~400).
        Returns [] when the root process is gone.
        """
        with self._lock:
            t = time.time()
            procs = process_tree(self.root_pid)
            if not procs:
                self._procs.clear()
                return []
            seen = set()
            tree_rss = 0.0
            tree_cpu: float | None = None
            workers: list[dict[str, Any]] = []
            for proc in procs:
                rss = _rss_mib(proc)
                if rss is None:
                    continue
                seen.add(proc.pid)
                cpu = self._cpu_pct(proc)
                tree_rss += rss
                if cpu is not None:
                    tree_cpu = (tree_cpu or 0.0) + cpu
                title = _worker_title_of(proc)
                if title is not None:
                    workers.append(
                        {
                            "t": t,
                            "source": "process",
                            "device": title,
                            "rss_mib": rss,
                            "cpu_pct": cpu,
                        }
                    )
            for pid in list(self._procs):
                if pid not in seen:
                    del self._procs[pid]
            workers.sort(key=lambda r: _natural_key(r["device"]))
            return [
                {
                    "t": t,
                    "source": "process",
                    "device": "tree",
                    "rss_mib": tree_rss,
                    "cpu_pct": tree_cpu,
                },
                *workers,
            ]


_SAMPLERS: dict[int, ProcessSampler] = {}
_SAMPLERS_LOCK = threading.Lock()


def sample_process(root_pid: int) -> list[dict[str, Any]]:
    """One timeline sample of the tree under root_pid (see ProcessSampler.__call__).

    Keeps a ProcessSampler per root pid between calls, so cpu_pct is real from the
    second call on.

    Command line equivalent:
        top -b -n 1 -p ROOT_PID   (plus its children)
    """
    with _SAMPLERS_LOCK:
        sampler = _SAMPLERS.get(root_pid)
        if sampler is None:
            sampler = _SAMPLERS[root_pid] = ProcessSampler(root_pid)
    rows = sampler()
    if not rows:
        with _SAMPLERS_LOCK:
            _SAMPLERS.pop(root_pid, None)
    return rows
