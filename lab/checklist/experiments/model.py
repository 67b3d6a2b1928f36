"""What an experiment is, as data: its question, its arms (exact serve flags and variables),
the profiles it runs on (and why not on the others), its load, its metrics and what it
expects to see. The runner (lab.checklist.experiments.runner) does the rest."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lab.core.lang import pick

if TYPE_CHECKING:
    from lab.record.values import ArmValues

T = TypeVar("T")

#: Profile kinds: "cpu", or "gpu" (the gpu and rehearsal profiles).
KINDS = ("cpu", "gpu")
PROFILES = ("cpu", "gpu", "rehearsal")


def kind_of(profile: str) -> str:
    """ "cpu" for the cpu profile, "gpu" for gpu and rehearsal."""
    return "cpu" if profile == "cpu" else "gpu"


def for_kind(value: T | Mapping[str, T], profile: str) -> T:
    """`value`, or its entry for the profile's kind when it is a {"cpu": …, "gpu": …} map."""
    if isinstance(value, Mapping) and set(value) <= set(KINDS):
        return value[kind_of(profile)]
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Arm:
    """One configuration under test. `flags` go on the serve command line after the lab's
    own; `env` is set for the server; `cfg` overrides the lab's options for this arm
    (e.g. {"gpu_memory_utilization": 0.5}, which the serve command already carries)."""

    name: str
    flags: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cfg: Mapping[str, Any] = field(default_factory=dict)
    label_zh: str = ""
    label_en: str = ""
    #: Start the server with a fresh random API key (the api-key experiment); never stored.
    api_key: bool = False
    #: An arm the platform may not offer (e.g. an attention backend that is not installed):
    #: when its server does not start, the arm is skipped with the reason, not failed.
    optional: bool = False
    #: Builds what the arm serves before its server starts (a LoRA adapter, a draft model)
    #: and returns the arm with its real flags: `prepare(lab, values) -> Arm` (it records
    #: what it built in the ArmValues). Runs inside the arm's step: a failure is that step's.
    prepare: Callable[[Any, Any], Arm] | None = None

    def label(self, lang: str) -> str:
        return pick(lang, self.label_zh, self.label_en) or self.name


@dataclass(frozen=True)
class Load:
    """The load every arm runs (lab.measure.workloads builds the prompts, lab.measure.loadgen
    sends them).

    kind: "random" (independent prompts of `input_len`), "shared-prefix" (every prompt starts
    with the same `prefix_len` tokens, then `input_len` − `prefix_len` of its own), "mixed"
    (`long_count` prompts of `long_len` tokens with `long_output_len` outputs spread among
    short ones of `input_len` → `output_len`: a decode-heavy load with long prefills).
    Arrivals: all at once under the `concurrency` cap (`request_rate` inf), or Poisson at
    `request_rate` req/s with gamma `burstiness` (as `vllm bench serve`).
    """

    kind: str = "random"
    input_len: int = 64
    output_len: int = 32
    num_requests: int = 16
    concurrency: int = 4
    warmup: int = 1
    request_rate: float = math.inf
    burstiness: float = 1.0
    prefix_len: int = 0
    long_len: int = 0
    long_count: int = 0
    long_output_len: int = 4
    #: Latency targets for goodput, ms ({"ttft": 500, "tpot": 50}), as `--goodput`.
    goodput: Mapping[str, float] = field(default_factory=dict)
    #: Run each arm's load this many times at concurrency values (e.g. (1, 64)); empty: once.
    levels: tuple[int, ...] = ()

    def describe(self, lang: str = "en") -> str:
        """One line a learner can read (and redo with `vllm bench serve`)."""
        parts = [
            pick(
                lang,
                f"{self.num_requests} 个请求 × {self.input_len}→{self.output_len} token",
                f"{self.num_requests} × {self.input_len}→{self.output_len} tokens",
            )
        ]
        if self.kind == "shared-prefix":
            parts.append(
                pick(
                    lang,
                    f"共享前缀 {self.prefix_len} tokens",
                    f"a shared prefix of {self.prefix_len} tokens",
                )
            )
        if self.kind == "mixed":
            parts.append(
                pick(
                    lang,
                    f"其中 {self.long_count} 个长提示 {self.long_len}→{self.long_output_len}",
                    f"{self.long_count} of them long: {self.long_len}→{self.long_output_len}",
                )
            )
        levels = self.levels or (self.concurrency,)
        parts.append(pick(lang, "并发 ", "concurrency ") + ", ".join(map(str, levels)))
        if not math.isinf(self.request_rate):
            parts.append(
                pick(
                    lang,
                    f"到达率 {self.request_rate:g} req/s（burstiness {self.burstiness:g}）",
                    f"{self.request_rate:g} req/s (burstiness {self.burstiness:g})",
                )
            )
        if self.goodput:
            parts.append("goodput " + " ".join(f"{k}:{v:g}" for k, v in self.goodput.items()))
        parts.append(pick(lang, f"预热 {self.warmup}", f"{self.warmup} warm-up"))
        return "; ".join(parts)


@dataclass(frozen=True)
class Metric:
    """A figure every arm measures. `read` takes the arm's values and returns the figure in
    `unit` (None: not measured). `better` says which way is good ("lower"/"higher"/"")."""

    key: str
    label_zh: str
    label_en: str
    unit: str
    read: Callable[[ArmValues], float | None]
    better: str = ""

    def label(self, lang: str) -> str:
        return pick(lang, self.label_zh, self.label_en)


@dataclass(frozen=True)
class Change:
    """Expect `treatment`'s `metric` to be `direction` ("lower"/"higher") than `baseline`'s
    by more than `min_change_pct` % (smaller changes are noise: not seen); "same": within
    `min_change_pct` % of it. With
    `relative=False` the change is the difference in the metric's unit (for counts that are
    0 on the baseline, such as preemptions)."""

    metric: str
    baseline: str
    treatment: str
    direction: str
    min_change_pct: float = 5.0
    relative: bool = True


@dataclass(frozen=True)
class Equals:
    """Expect `arm`'s `metric` to equal `target` in every round; `required` fails the
    experiment when it does not (e.g. HTTP 401 without the API key)."""

    metric: str
    arm: str
    target: float
    required: bool = True


Expectation = Change | Equals


@dataclass(frozen=True)
class Experiment:
    """One lesson, measured.

    arms / load may be {"cpu": …, "gpu": …} maps when the two kinds differ (e.g. the KV cache
    is sized by VLLM_CPU_KVCACHE_SPACE on CPU, by --gpu-memory-utilization on a GPU).
    `skip` maps a profile to why the experiment cannot run there; it runs on the others.
    `measure` names another measurement than the standard load (measures.MEASURES: it
    receives the ArmRun and fills its values, e.g. probes).
    `lesson` turns the verdict into one sentence (zh, en) with its numbers; None uses the
    generic sentence of the first finding.
    """

    name: str
    question_zh: str
    question_en: str
    arms: tuple[Arm, ...] | Mapping[str, tuple[Arm, ...]]
    metrics: tuple[Metric, ...]
    expect: tuple[Expectation, ...] | Mapping[str, tuple[Expectation, ...]]
    load: Load | Mapping[str, Load] = field(default_factory=Load)
    skip: Mapping[str, str] = field(default_factory=dict)
    rounds: int | Mapping[str, int] = 2
    #: How an arm is measured: a name in lab.checklist.experiments.measures.MEASURES
    #: (None: "load", the experiment's Load).
    measure: str | None = None
    lesson: Callable[[Any, str], str] | None = None
    #: Roadmap items (lab.checklist.roadmap) a measured verdict of this experiment ticks.
    ticks: tuple[str, ...] = ()
    #: Where the seeds discuss it (shown with the question), e.g. "seed 003 phase 2".
    seed_ref: str = ""
    #: The model of which day it serves (lab config `models`).
    model_of: str = "day3"

    def question(self, lang: str) -> str:
        return pick(lang, self.question_zh, self.question_en)

    def arms_for(self, profile: str) -> tuple[Arm, ...]:
        return for_kind(self.arms, profile)

    def load_for(self, profile: str) -> Load:
        return for_kind(self.load, profile)

    def expect_for(self, profile: str) -> tuple[Expectation, ...]:
        return for_kind(self.expect, profile)

    def rounds_for(self, profile: str) -> int:
        return for_kind(self.rounds, profile)

    def runs_on(self) -> tuple[str, ...]:
        """The profiles it runs on."""
        return tuple(p for p in PROFILES if p not in self.skip)

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)
