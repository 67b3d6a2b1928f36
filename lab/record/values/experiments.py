"""The measured values of an experiment (`invoke experiment NAME`): one `ArmValues` per arm
and round (a step `experiment-arm`), and one `ExperimentValues` with the verdict (a step
`experiment`). Figures are keyed by the experiment's metric keys (`ttft_median_ms`,
`prefix_hit_rate`, ...), declared with their units by the experiment itself
(lab.checklist.experiments)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.record.values.common import LevelSummary, StepValues
from lab.record.values.day3 import ServeValues
from lab.record.values.features import Artefact, LoraReadings, RankMemory, SpecReadings


@dataclass
class ProbeResult:
    """One request whose answer is the point (e.g. the api-key experiment's HTTP status)."""

    name: str
    http_status: int | None = None
    error: str | None = None


@dataclass
class ArmValues(StepValues):
    """One arm in one round: the server it started, the load it ran, what it measured."""

    KEY = "experiment-arm"
    experiment: str = ""
    arm: str = ""
    round: int = 0
    #: The arm's exact serve command (API keys redacted) and the variables it set.
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    serve: ServeValues | None = None
    #: From the server's log: CUDA-graph capture (GPU) and torch.compile time.
    graph_capture_gib: float | None = None
    graph_capture_s: float | None = None
    compile_s: float | None = None
    #: The load's summary over its measured requests (None for an arm without load).
    load: LevelSummary | None = None
    #: Further summaries by request class (e.g. "long" and "short" of a mixed load).
    classes: dict[str, LevelSummary] = field(default_factory=dict)
    #: /metrics counters over the load (end − start): prefix-cache hits, preemptions, ...
    counters: dict[str, float | None] = field(default_factory=dict)
    #: `vllm:cache_config_info`'s labels as the server reported them.
    cache_config: dict[str, str] = field(default_factory=dict)
    probes: list[ProbeResult] = field(default_factory=list)
    #: The metric values of this arm (metric key -> value in the metric's unit).
    figures: dict[str, float | None] = field(default_factory=dict)
    #: The `vllm bench serve --save-result` JSON written for this arm, if any.
    export_path: str | None = None
    # -- advanced features (issue 11; lab.record.values.features) --------------------------
    #: What was built offline for this arm (LoRA adapters, a draft model).
    artefacts: list[Artefact] = field(default_factory=list)
    lora: LoraReadings | None = None
    spec: SpecReadings | None = None
    #: Memory per parallel rank (GPU, or worker process RSS on CPU).
    ranks: list[RankMemory] = field(default_factory=list)


@dataclass
class ArmStat:
    """One metric of one arm over the rounds: the median and the range."""

    arm: str
    metric: str
    values: list[float | None] = field(default_factory=list)
    median: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass
class Finding:
    """One expectation judged from the arms.

    `kind` "change": `treatment`'s metric against `baseline`'s, expected `direction`
    ("lower" or "higher"); the change is (treatment − baseline) / baseline in % per round.
    `kind` "equals": `treatment`'s metric expected to equal `target` in every round.
    """

    kind: str
    metric: str
    treatment: str
    baseline: str | None = None
    direction: str | None = None
    target: float | None = None
    #: Below this |change| an effect counts as not seen (noise): in % when `relative`,
    #: else in the metric's unit.
    min_change_pct: float = 0.0
    #: True: changes are (t − b) / b in %; False: t − b in the metric's unit (counts that
    #: start at 0, e.g. preemptions or prefix-cache hits).
    relative: bool = True
    change_pct: list[float | None] = field(default_factory=list)
    change_pct_median: float | None = None
    change_pct_min: float | None = None
    change_pct_max: float | None = None
    #: Rounds that went the expected way, of the rounds measured.
    rounds_agreeing: int = 0
    rounds_measured: int = 0
    #: True: seen; False: measured and not seen; None: not measured.
    seen: bool | None = None
    #: A finding that must hold (e.g. 401 without a key) fails the experiment when not seen.
    required: bool = False


@dataclass
class ArmInfo:
    """What an arm is: its name, its serve flags and variables, its exact command."""

    name: str
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    label_zh: str = ""
    label_en: str = ""


@dataclass
class ExperimentValues(StepValues):
    """An experiment's verdict: the arms, their statistics over rounds, the findings."""

    KEY = "experiment"
    name: str = ""
    profile: str = ""
    rounds: int = 0
    #: The arms in the order they ran, e.g. ["off", "on", "off", "on"].
    order: list[str] = field(default_factory=list)
    arms: list[ArmInfo] = field(default_factory=list)
    #: The load in one line (en, zh); "" for an experiment measured by probes.
    workload: str = ""
    workload_zh: str = ""
    stats: list[ArmStat] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: The lesson in one sentence, with the measured numbers filled in.
    lesson_zh: str = ""
    lesson_en: str = ""
    #: Why the experiment did not run on this profile (then nothing else is set).
    skipped: str | None = None
    #: Arms the platform did not offer (optional arms whose server did not start): why.
    skipped_arms: dict[str, str] = field(default_factory=dict)
    #: Each arm's `vllm:cache_config_info` labels (its first measured round).
    cache_config: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Step ids of the arm steps, in order (their requests are in the `requests` table).
    arm_steps: list[int] = field(default_factory=list)

    def stat(self, arm: str, metric: str) -> ArmStat | None:
        return next((s for s in self.stats if s.arm == arm and s.metric == metric), None)

    def median(self, arm: str, metric: str) -> float | None:
        """The arm's median of `metric` over the rounds (None: not measured)."""
        stat = self.stat(arm, metric)
        return stat.median if stat is not None else None
