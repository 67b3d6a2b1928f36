"""What the lab saw of a server's life besides its figures: its startup phases, the failure
that ended it (with the seconds to detect it), how its tree and GPU memory were handed back,
and the known fix a retry added (`--fix auto`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.core.lang import pick


@dataclass
class StartupPhase:
    """One startup phase read from the server log (lab.vllm.watch.PhaseTracker)."""

    key: str  # loading | profiling | compiling | kv_cache | cuda_graphs | api_server | ready
    start_s: float  # seconds after the server was started
    duration_s: float | None = None
    detail: str | None = None  # "8/67" (CUDA graphs), "1,041,472 tokens" (KV cache)


@dataclass
class ServerFailure:
    """Why a server could not serve (lab.vllm.watch.Failure), as the step records it."""

    kind: str  # fatal_line | process_exit
    key: str | None = None  # the diagnosis signature (lab.vllm.diagnose), unknown_fatal
    title: str | None = None
    fix: str | None = None
    source: str | None = None
    line: str | None = None  # the first fatal line
    process: str | None = None  # the process whose exit was seen
    #: Seconds from the crash line (vLLM's own stamp, to the second) to the detection.
    detect_s: float | None = None
    #: Seconds after the server was started when the failure was detected.
    detected_after_s: float | None = None
    #: The step it happened in ("serve" during startup, "bench", …).
    during: str | None = None


@dataclass
class StopRecord:
    """How a server's tree was ended and its memory handed back (lab.vllm.process.StopReport)."""

    processes: int = 0
    stop_s: float | None = None
    #: Seconds until NVML showed the GPU memory released; None when not checked (cpu).
    release_s: float | None = None
    survivors: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    why: str | None = None  # failed | end of day | stop | interrupted

    @classmethod
    def of(cls, report: Any, why: str) -> StopRecord:
        """From a lab.vllm.process.StopReport."""
        return cls(
            processes=len(report.pids),
            stop_s=report.stop_s,
            release_s=report.release_s,
            survivors=list(report.survivors),
            held=list(report.held),
            why=why,
        )


@dataclass
class FixApplied:
    """The known fix a retry added (`--fix auto`), and the attempt it follows."""

    added: str  # as typed: `--enforce-eager`, `VLLM_CPU_OMP_THREADS_BIND='0|1'`
    key: str  # the failure it fixes (lab.vllm.diagnose signature)
    why_zh: str
    why_en: str
    cost_zh: str
    cost_en: str
    source: str
    #: How to apply it: vLLM flags to append, lab settings to change, server env variables.
    args: list[str] = field(default_factory=list)
    settings: dict[str, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: It holds for starts with at least this TP (the CUDA-graph crash is a TP>1 crash: a TP=1
    #: start, e.g. `--compare-tp`'s, keeps its graphs, so the comparison measures the cost).
    min_tp: int = 1
    #: The failed attempt it follows (filled in when the retry starts).
    failed_step_id: int | None = None
    failed: ServerFailure | None = None
    failed_stop: StopRecord | None = None

    def why(self, lang: str) -> str:
        return pick(lang, self.why_zh, self.why_en)

    def cost(self, lang: str) -> str:
        return pick(lang, self.cost_zh, self.cost_en)
