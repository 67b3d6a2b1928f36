"""Watch a vLLM server while we wait for it and while a step uses it: follow its log file and
its process tree, and say within seconds when it can no longer serve.

`/health` alone is not enough. On 2×H200 (vLLM 0.26, TP=2) a worker crashed during CUDA-graph
capture ("CUBLAS_STATUS_EXECUTION_FAILED", then "WorkerProc hit an exception"), and the API
server, the engine core and both workers stayed alive holding 130,949 MiB per GPU: `/health`
never answered and nothing exited (docs/facts.md, Known failures). So the watcher fails on

- a fatal line in the log (lab.vllm.diagnose.is_fatal: a worker exception, "EngineCore failed
  to start", CUDA/cuBLAS errors, illegal memory access, CUDA OOM, NCCL errors, "died
  unexpectedly", or any known failure signature); it reads on for `settle_s` so the diagnosis
  sees the whole error, then reports the most specific known failure (or the line itself);
- the exit of any process of the tree: the API server, or one titled `VLLM::…` (the engine core
  and the TP workers), unless the lab is stopping the server on purpose.

While the server starts, it also reads the startup phases from the log (loading weights,
profiling, compiling, capturing CUDA graphs k/n, KV-cache size), for a live status line and
for the record (`PhaseTracker`).

It knows nothing of the state file: lab.vllm.process builds a Watcher for a server
(`process.watcher(state)`) and hands it the callables it needs.

Command line equivalent: `tail -F server.log | grep -E 'ERROR|CUBLAS|died'` beside
`watch -n1 'ps -o pid,stat,args --ppid PID'`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lab.core.lang import pick
from lab.core.poll import polling
from lab.core.text import clean_lines
from lab.vllm import diagnose
from lab.vllm.diagnose import Diagnosis

#: Lines kept for the evidence and the diagnosis.
KEEP_LINES = 400
#: Lines shown as evidence of a failure.
EVIDENCE_LINES = 20
#: After the first fatal line, read on this long before judging (the cuBLAS error comes a
#: moment before "WorkerProc hit an exception" and the traceback).
SETTLE_S = 1.5
#: After a process exit, read on this long for its last words.
EXIT_SETTLE_S = 1.0
#: How often the background watcher polls during a step.
POLL_S = 0.5
#: Most bytes read from the log in one poll (a runaway log must not stall the watcher).
MAX_READ_BYTES = 4_000_000

# vLLM's line prefix "(Worker_TP1 pid=3121) ERROR 11-21 15:20:03 [file.py:671] ": the time of
# the line, in the server's local time, to the second.
_STAMP_RE = re.compile(
    r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) "
)


def line_time(line: str, seen_at: float) -> float:
    """When vLLM printed `line` (its own time stamp, to the second), else when we read it."""
    m = _STAMP_RE.search(line)
    if not m:
        return seen_at
    month, day, hh, mm, ss = (int(g) for g in m.groups())
    now = time.localtime(seen_at)
    year = now.tm_year - (1 if month > now.tm_mon else 0)
    try:
        stamped = time.mktime((year, month, day, hh, mm, ss, 0, 0, -1))
    except (OverflowError, ValueError):
        return seen_at
    # A stamp after we read the line, or from long ago, is not this line's time.
    return stamped if seen_at - 3600 <= stamped <= seen_at + 1 else seen_at


# --------------------------------------------------------------------------------------------
# Startup phases
# --------------------------------------------------------------------------------------------
@dataclass
class Phase:
    """One startup phase as the log showed it: when it began (unix s) and ended."""

    key: str
    started_at: float
    ended_at: float | None = None
    detail: str | None = None
    #: The log line that began it.
    line: str = ""

    def duration_s(self, now: float | None = None) -> float | None:
        end = self.ended_at if self.ended_at is not None else now
        return None if end is None else round(max(0.0, end - self.started_at), 3)


#: Phase key -> (zh, en) label.
PHASE_LABELS: dict[str, tuple[str, str]] = {
    "engine": (
        "启动引擎（进程、分布式初始化）",
        "starting the engine (processes, distributed init)",
    ),
    "loading": ("加载权重", "loading weights"),
    "profiling": ("显存 profiling", "profiling memory"),
    "compiling": ("torch.compile 编译", "compiling (torch.compile)"),
    "kv_cache": ("分配 KV Cache", "allocating the KV cache"),
    "cuda_graphs": ("捕获 CUDA Graph", "capturing CUDA graphs"),
    "warmup": ("预热（捕获之后）", "warming up (after the capture)"),
    "api_server": ("启动 API 服务", "starting the API server"),
    "ready": ("就绪", "ready"),
}

# (pattern, phase key). Texts of vLLM 0.32 (and 0.26 where it differs): v1/engine/core.py
# "Initializing a V1 LLM engine (v…) with config"; older "Initializing an LLM engine";
# v1/worker/gpu_model_runner.py "Starting to load model %s..."; model_loader/default_loader.py
# "Loading weights took %.2f seconds"; gpu_model_runner "Model loading took …";
# compilation/backends.py "Dynamo bytecode transform time", "Compiling a graph for dynamic
# shape takes"; compilation/monitor.py "torch.compile took/takes %.2f s in total";
# v1/worker/gpu_worker.py "Available KV cache memory: %.2f GiB"; v1/core/kv_cache_utils.py
# "GPU KV cache size: %s tokens"; gpu_model_runner's tqdm bar "Capturing CUDA graphs (…): 12%|…| 8/67"
# and "Graph capturing finished in %.0f secs"; v1/engine/core.py "init engine (…) took";
# uvicorn "Application startup complete.".
_PHASE_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"Initializing a V1 LLM engine|Initializing an LLM engine"), "engine"),
    (
        re.compile(
            r"Starting to load model|Loading model from scratch|Loading safetensors checkpoint shards|Loading weights\b(?! took)"
        ),
        "loading",
    ),
    (re.compile(r"Model loading took|Loading weights took"), "profiling"),
    (
        re.compile(
            r"Dynamo bytecode transform time|Compiling a graph for|for vLLM's torch\.compile|torch\.compile (?:takes|took|and initial)|Warming up model for the compilation"
        ),
        "compiling",
    ),
    (
        re.compile(
            r"Available KV cache memory|(?:[A-Z]{2,5}) KV cache size: |Auto set \(|Explicitly set \("
        ),
        "kv_cache",
    ),
    (re.compile(r"Capturing (?:CUDA graphs|cudagraphs)"), "cuda_graphs"),
    (re.compile(r"Graph capturing finished"), "warmup"),
    (re.compile(r"init engine \(profile, create kv cache, warmup model\) took"), "api_server"),
    (re.compile(r"Application startup complete"), "ready"),
)
_GRAPH_PROGRESS_RE = re.compile(r"(\d+)/(\d+) \[")
_KV_TOKENS_RE = re.compile(r"KV cache size: ([\d,]+) tokens")


class PhaseTracker:
    """The startup phases read from the log, in order; a phase ends when the next begins."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.kv_cache_tokens: int | None = None

    @property
    def current(self) -> Phase | None:
        return self.phases[-1] if self.phases else None

    def feed(self, line: str, now: float) -> bool:
        """Read one log line; True when the phase or its detail changed."""
        if m := _KV_TOKENS_RE.search(line):
            self.kv_cache_tokens = int(m.group(1).replace(",", ""))
        for pattern, key in _PHASE_RULES:
            if not pattern.search(line):
                continue
            cur = self.current
            if key == "cuda_graphs":
                m = _GRAPH_PROGRESS_RE.search(line)
                detail = f"{m.group(1)}/{m.group(2)}" if m else None
                if cur is not None and cur.key == "cuda_graphs":
                    changed = detail is not None and detail != cur.detail
                    cur.detail = detail or cur.detail
                    return changed
                return self._begin(key, now, line, detail)
            if cur is not None and _order(key) < _order(cur.key):
                return False  # phases only move forward (TP ranks repeat their lines)
            if key == "kv_cache" and self.kv_cache_tokens is not None:
                detail = f"{self.kv_cache_tokens:,} tokens"
                if cur is not None and cur.key == "kv_cache":
                    changed = cur.detail != detail
                    cur.detail = detail
                    return changed
                return self._begin(key, now, line, detail)
            if cur is not None and cur.key == key:
                return False
            return self._begin(key, now, line, None)
        return False

    def _begin(self, key: str, now: float, line: str, detail: str | None) -> bool:
        if self.current is not None and self.current.ended_at is None:
            self.current.ended_at = now
        phase = Phase(key, now, detail=detail, line=line.strip()[:300])
        if key == "ready":
            phase.ended_at = now
        self.phases.append(phase)
        return True

    def close(self, now: float) -> None:
        """End the open phase (the server became ready or failed)."""
        if self.current is not None and self.current.ended_at is None:
            self.current.ended_at = now

    def describe(self, lang: str = "en", now: float | None = None, spent: bool = True) -> str:
        """The current phase for a status line: "capturing CUDA graphs 8/67 (12 s)" (with
        `spent`, the seconds in this phase)."""
        cur = self.current
        if cur is None:
            return pick(lang, "启动中", "starting")
        label = pick(lang, *PHASE_LABELS[cur.key])
        detail = f" {cur.detail}" if cur.detail else ""
        took = cur.duration_s(now if now is not None else time.time())
        return (
            f"{label}{detail} ({took:.0f} s)" if spent and took is not None else f"{label}{detail}"
        )


def _order(key: str) -> int:
    return list(PHASE_LABELS).index(key)


def phase_label(key: str, lang: str) -> str:
    """The phase's label in `lang`."""
    return pick(lang, *PHASE_LABELS.get(key, (key, key)))


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------
@dataclass
class Failure:
    """Why the server can no longer serve, and when we knew."""

    kind: str  # "fatal_line" | "process_exit"
    diagnosis: Diagnosis | None
    #: The first fatal line (for a fatal_line failure) and when vLLM printed it.
    line: str | None = None
    line_at: float | None = None
    #: The process whose exit was seen ("VLLM::Worker_TP1 (pid 3121)").
    process: str | None = None
    #: When the watcher declared the failure (unix s).
    detected_at: float = field(default_factory=time.time)
    evidence: str = ""

    @property
    def detect_s(self) -> float | None:
        """Seconds from the crash line to the detection (vLLM stamps lines to the second,
        so this reads up to 1 s long)."""
        if self.line_at is None:
            return None
        return round(max(0.0, self.detected_at - self.line_at), 3)

    def summary(self, lang: str = "en", with_process: bool = True) -> str:
        """One line: what happened, as the user should read it."""
        what = []
        if self.diagnosis is not None:
            what.append(self.diagnosis.title)
        if self.process and with_process:
            what.append(pick(lang, f"进程 {self.process} 已退出", f"process {self.process} exited"))
        if self.line and (self.diagnosis is None or self.diagnosis.key == "unknown_fatal"):
            what.append(f"`{self.diagnosis.matched_line if self.diagnosis else self.line}`")
        return "; ".join(what) or pick(lang, "服务进程已退出", "the server exited")

    def fix(self) -> str | None:
        """The fix with its source, when a signature knows it."""
        d = self.diagnosis
        if d is None or d.key == "unknown_fatal" or not d.fix:
            return None
        return f"{d.fix} (source: {d.source})"


# --------------------------------------------------------------------------------------------
# The watcher
# --------------------------------------------------------------------------------------------
class LogFollower:
    """The lines appended to a log file since the last read (a partial last line waits)."""

    def __init__(self, path: str | Path, from_start: bool = True) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        if not from_start:
            with contextlib.suppress(OSError):
                self.offset = self.path.stat().st_size

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, 2)
                if size < self.offset:  # truncated: a new server wrote a new log
                    self.offset, self._partial = 0, b""
                fh.seek(self.offset)
                data = fh.read(MAX_READ_BYTES)
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        # A line ends at \n, or at \r (progress bars redraw with \r).
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut < 0:
            self._partial = data
            return []
        self._partial = data[cut + 1 :]
        return [
            line
            for line in clean_lines(data[: cut + 1].decode("utf-8", errors="replace"))
            if line.strip()
        ]


class Watcher:
    """Follows one server's log and process tree; `check()` polls once.

    `root_alive()` says whether the server process lives; `members()` lists the vLLM
    processes of its tree (title, psutil.Process); `stopping()` is True while the lab ends the
    server on purpose (an exit then is no failure). `from_start=False` ignores what the log
    held before (a step watching a server that is already up).
    """

    def __init__(
        self,
        log_path: str | Path,
        *,
        root_alive: Callable[[], bool],
        members: Callable[[], list[tuple[str, psutil.Process]]],
        stopping: Callable[[], bool] = lambda: False,
        root_name: str = "API server",
        root_pid: int | None = None,
        from_start: bool = True,
        lang: str = "en",
        settle_s: float = SETTLE_S,
        exit_settle_s: float = EXIT_SETTLE_S,
    ) -> None:
        self.log = LogFollower(log_path, from_start)
        self.root_alive = root_alive
        self.members = members
        self.stopping = stopping
        self.root = f"{root_name} (pid {root_pid})" if root_pid else root_name
        self.lang = lang
        self.settle_s = settle_s
        self.exit_settle_s = exit_settle_s
        self.lines: deque[str] = deque(maxlen=KEEP_LINES)
        self.phases = PhaseTracker()
        self.seen: dict[int, tuple[str, psutil.Process]] = {}
        self.failure: Failure | None = None
        self._first_fatal: tuple[str, float] | None = None
        self._exit: tuple[str, float] | None = None
        self._on_phase: Callable[[PhaseTracker], None] | None = None

    @property
    def pending(self) -> bool:
        """A fatal line or an exit was seen and is settling (not yet declared)."""
        return self.failure is None and (self._first_fatal is not None or self._exit is not None)

    def on_phase(self, callback: Callable[[PhaseTracker], None] | None) -> None:
        """Call `callback(tracker)` when the startup phase (or its k/n) changes."""
        self._on_phase = callback

    # -- one poll ---------------------------------------------------------------------------
    def check(self) -> Failure | None:
        """Read new log lines and look at the tree; the Failure once it is settled, else None.
        A server being stopped on purpose never fails."""
        if self.failure is not None:
            return self.failure
        now = time.time()
        self._read_log(now)
        if self.stopping():
            return None
        if self._exit is None:
            gone = self._gone_member()
            if gone is not None:
                self._exit = (gone, now)
        if self._exit is not None and now - self._exit[1] >= self.exit_settle_s:
            return self._declare("process_exit", now)
        if self._first_fatal is not None and now - self._first_fatal[1] >= self.settle_s:
            return self._declare("fatal_line", now)
        return None

    def settle(self, limit_s: float | None = None) -> Failure | None:
        """Check once more and, while a fatal line or an exit is settling, until it is
        declared (at most `limit_s`, default the longer settle time plus a margin): the
        Failure, or None when the server is fine."""
        limit = limit_s if limit_s is not None else max(self.settle_s, self.exit_settle_s) + 1.0
        deadline = time.monotonic() + limit
        failure = self.check()
        while failure is None and self.pending and time.monotonic() < deadline:
            time.sleep(0.1)
            failure = self.check()
        return failure

    def _read_log(self, now: float) -> None:
        changed = False
        for line in self.log.read():
            self.lines.append(line)
            changed |= self.phases.feed(line, now)
            if self._first_fatal is None and diagnose.is_fatal(line):
                self._first_fatal = (line, line_time(line, now))
        if changed and self._on_phase is not None:
            self._on_phase(self.phases)

    def _gone_member(self) -> str | None:
        if not self.root_alive():
            return self.root
        for title, proc in self.members():
            self.seen[proc.pid] = (title, proc)  # the latest title: vLLM sets it in steps
        for pid, (title, proc) in list(self.seen.items()):
            if _exited(proc):
                del self.seen[pid]
                return f"{title} (pid {pid})"
        return None

    def _declare(self, kind: str, now: float) -> Failure:
        self._read_log(now)
        text = "\n".join(self.lines)
        diag = diagnose.first_diagnosis(text, self.lang)
        line, line_at = self._first_fatal or (None, None)
        if diag is None and line is not None:
            diag = diagnose.unknown_fatal(line, self.lang)
        if line is not None:
            kind = "fatal_line"
        self.phases.close(now)
        self.failure = Failure(
            kind,
            diag,
            line=line,
            line_at=line_at,
            process=self._exit[0] if self._exit else None,
            detected_at=now,
            evidence="\n".join(list(self.lines)[-EVIDENCE_LINES:]),
        )
        return self.failure


def _exited(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False


@contextlib.contextmanager
def watching(
    watcher: Watcher, on_failure: Callable[[Failure], None] | None = None, poll_s: float = POLL_S
) -> Iterator[Watcher]:
    """Poll `watcher` in a background thread while the block runs (lab.core.poll). On a
    failure, call `on_failure(failure)` once from that thread (e.g. end the server tree, so
    that the step's requests fail at once instead of hanging) and stop polling; the block
    reads `watcher.failure` when its work returns or fails."""
    try:
        with polling(watcher.check, on_failure, poll_s, name="vllm-watch"):
            yield watcher
    finally:
        # The block may end while a crash is still settling (its requests fail fast when the
        # engine dies, before the watcher's next poll): finish judging it, so the step gets
        # the diagnosis, not only its failed requests.
        if watcher.failure is None:
            failure = None
            with contextlib.suppress(Exception):
                failure = watcher.settle()
            if failure is not None and on_failure is not None:
                with contextlib.suppress(Exception):
                    on_failure(failure)
