"""The measured values of the Day 4 steps: balance, bench, compare, compare-tp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.core.units import mib_to_gib, ratio
from lab.explain.metrics import BenchFigures
from lab.record.values.common import (
    COST_SAMPLES,
    ClientTotals,
    CostSide,
    KvUsage,
    LevelSummary,
    MetricsDelta,
    StepValues,
    VllmVersions,
    bench_figures,
    cost_side,
)
from lab.vllm.logparse import StartupFacts


@dataclass
class BalanceDevice:
    """One device's memory: a GPU (NVML used) or, on CPU, a TP worker process (RSS)."""

    device: str
    used_mib: float | None
    pid: int | None = None


@dataclass
class BalanceValues(StepValues):
    """`balance`: how evenly the TP server's memory is spread, (max - min) / max."""

    KEY = "balance"
    source: str | None = None  # "nvml" or "process_rss"
    devices: list[BalanceDevice] = field(default_factory=list)
    threshold_pct: float | None = None
    tp: int = 1
    n: int = 0
    max_mib: float | None = None
    min_mib: float | None = None
    spread_pct: float | None = None

    @property
    def gpu_memory(self) -> bool:
        """Measured GPU memory (NVML), not process memory."""
        return self.source == "nvml"

    @property
    def on_cpu(self) -> bool:
        """Measured the RSS of the TP worker processes (the CPU profile): not GPU memory."""
        return self.source == "process_rss"


@dataclass
class SweepPlan:
    """What `bench` was asked to run (lab.measure.bench.BenchPlan as recorded)."""

    levels: list[int]
    input_tokens: int
    output_tokens: int
    num_requests: int | None
    warmup_requests: int
    duration_s: float | None
    latency_runs: int
    latency_prompt: str
    latency_max_tokens: int
    timeout_s: float | None = None
    kv_poll_s: float | None = None
    #: Arrivals (req/s; None: all at once), their gamma burstiness, the goodput targets (ms).
    request_rate: float | None = None
    burstiness: float | None = None
    goodput_ms: dict[str, float] = field(default_factory=dict)
    #: The `vllm bench serve --save-result` JSON written per level (`--save-result`).
    exported: list[str] = field(default_factory=list)


@dataclass
class LatencyLoop:
    """Seed 000's latency script: sequential chat requests (avg/min/max ms, the seed's names,
    plus median/p90/p99)."""

    runs: int = 0
    ok: int = 0
    failed: int = 0
    timeouts: int = 0
    avg_latency_ms: float | None = None
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    median_latency_ms: float | None = None
    p90_latency_ms: float | None = None
    p99_latency_ms: float | None = None
    mean_output_tokens: float | None = None
    mean_output_tok_s: float | None = None
    prompt: str | None = None
    max_tokens: int | None = None

    @classmethod
    def from_summary(cls, lat: dict[str, Any]) -> LatencyLoop:
        """From lab.measure.bench.latency_loop's dict."""
        return cls(
            runs=lat.get("runs") or 0,
            ok=lat.get("ok") or 0,
            failed=lat.get("failed") or 0,
            timeouts=lat.get("timeouts") or 0,
            avg_latency_ms=lat.get("avg_latency_ms"),
            min_latency_ms=lat.get("min_latency_ms"),
            max_latency_ms=lat.get("max_latency_ms"),
            median_latency_ms=lat.get("median_latency_ms"),
            p90_latency_ms=lat.get("p90_latency_ms"),
            p99_latency_ms=lat.get("p99_latency_ms"),
            mean_output_tokens=lat.get("mean_output_tokens"),
            mean_output_tok_s=lat.get("mean_tokens_per_s"),
            prompt=lat.get("prompt"),
            max_tokens=lat.get("max_tokens"),
        )

    @property
    def seed_output(self) -> dict[str, float | None]:
        """What the seed's script prints (json.dumps of these three), rounded."""
        return {
            k: None if v is None else round(v, 2)
            for k, v in (
                ("avg_latency_ms", self.avg_latency_ms),
                ("min_latency_ms", self.min_latency_ms),
                ("max_latency_ms", self.max_latency_ms),
            )
        }


@dataclass
class BenchMetrics:
    """/metrics around the whole benchmark: the deltas, the polled KV-cache usage, and why a
    scrape failed (when one did)."""

    delta: MetricsDelta | None = None
    kv: KvUsage | None = None
    error: str | None = None


@dataclass
class BenchValues(StepValues):
    """`bench`: the latency loop, then the concurrency sweep (each level's summary as the
    client measured it when it ran; the report recomputes them from the requests table)."""

    KEY = "bench"
    plan: SweepPlan | None = None
    latency: LatencyLoop | None = None
    levels: list[LevelSummary] = field(default_factory=list)
    metrics: BenchMetrics = field(default_factory=BenchMetrics)
    client: ClientTotals | None = None
    died_during: str | None = None
    model: str | None = None
    tp: int = 1
    profile: str | None = None

    def figures(self) -> BenchFigures:
        """What /metrics counted during the benchmark and the client's totals
        (lab.explain.metrics.interpret's input)."""
        return bench_figures(self.metrics.delta, self.metrics.kv, self.client)


@dataclass
class CompareSide:
    """One side of vLLM vs HuggingFace: throughput, latency and memory, with what each is."""

    output_tok_s: float | None = None
    samples_per_min: float | None = None
    latency_s: float | None = None
    latency_basis: str | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    num_prompts: int | None = None
    batch_size: int | None = None
    load_s: float | None = None
    device: str | None = None
    source: str | None = None
    tp: int | None = None
    devices: int | None = None
    gpus: int | None = None
    peak_mem_mib: float | None = None
    peak_mem_pct: float | None = None
    mem_basis: str | None = None
    max_memory_reserved_mib: float | None = None
    device_used_mib: float | None = None
    device_total_mib: float | None = None
    gpu_memory_utilization: float | None = None
    sampling: dict[str, str | float | bool | None] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    vllm_version: str | None = None

    @property
    def peak_mem_gib(self) -> float | None:
        return mib_to_gib(self.peak_mem_mib)

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency_s is None else self.latency_s * 1000

    @property
    def measured(self) -> bool:
        """Throughput, latency and a memory reading. On GPU vLLM's `peak_mem_mib` is its
        computed budget, so the reading that counts there is NVML's `device_used_mib`."""
        memory = (
            self.device_used_mib
            if (self.mem_basis or "").startswith("reserved")
            else self.peak_mem_mib
        )
        return bool(self.output_tok_s) and self.latency_s is not None and memory is not None


@dataclass
class Speedup:
    """vLLM ÷ HF for throughput (tok/s, samples/min); HF ÷ vLLM for latency."""

    throughput_x: float | None
    samples_x: float | None
    latency_x: float | None


@dataclass
class Cost:
    """Seed 004's cost table for `samples` samples. On CPU the unit is CPU-minutes (the
    machine counts as one device) and `note` says it is not a GPU figure."""

    samples: int
    unit: str
    note: str | None
    hf: CostSide
    vllm: CostSide
    saving_x: float | None


@dataclass
class CompareWorkload:
    num_prompts: int | None = None
    max_new_tokens: int | None = None
    hf_batch_size: int | None = None
    ignore_eos: bool | None = None
    greedy: bool | None = None


@dataclass
class CompareValues(StepValues):
    """`compare`: vLLM against a HuggingFace transformers baseline on the same token ids."""

    KEY = "compare"
    profile: str | None = None
    on_gpu: bool = False
    source: str | None = None  # "server" or "offline"
    model: str | None = None
    dummy_weights: bool | None = None
    hf: CompareSide | None = None
    vllm: CompareSide | None = None
    workload: CompareWorkload | None = None
    versions: VllmVersions | None = None
    startup: StartupFacts | None = None
    work_dir: str | None = None
    inputs_identical: bool | None = None

    @property
    def speedup(self) -> Speedup:
        h, v = self.hf or CompareSide(), self.vllm or CompareSide()
        return Speedup(
            throughput_x=ratio(v.output_tok_s, h.output_tok_s),
            samples_x=ratio(v.samples_per_min, h.samples_per_min),
            latency_x=ratio(h.latency_s, v.latency_s),
        )

    @property
    def cost(self) -> Cost:
        h, v = self.hf or CompareSide(), self.vllm or CompareSide()
        hc, vc = cost_side(h.samples_per_min, h.devices), cost_side(v.samples_per_min, v.devices)
        return Cost(
            samples=COST_SAMPLES,
            unit="GPU-minutes" if self.on_gpu else "CPU-minutes",
            note=None if self.on_gpu else "CPU profile: CPU-minutes, not a GPU figure",
            hf=hc,
            vllm=vc,
            saving_x=ratio(hc.device_minutes, vc.device_minutes),
        )


@dataclass
class TpRatios:
    """TP=2 ÷ TP=1 of the same level."""

    output_tok_s: float | None
    tpot_median: float | None
    ttft_median: float | None
    e2el_median: float | None
    server_tpot: float | None
    server_ttft: float | None


@dataclass
class TpSide:
    """One TP size's run of the level, and what its server start cost."""

    tp: int
    summary: LevelSummary
    ready_s: float | None = None
    kv_cache_tokens: int | None = None
    argv: list[str] = field(default_factory=list)


@dataclass
class CompareTpValues(StepValues):
    """`compare-tp`: one benchmark level on TP=2 and on TP=1 with the same prompts."""

    KEY = "compare-tp"
    concurrency: int | None = None
    plan: SweepPlan | None = None
    sides: list[TpSide] = field(default_factory=list)
    profile: str | None = None

    def side(self, tp: int) -> TpSide | None:
        return next((s for s in self.sides if s.tp == tp), None)

    @property
    def ratios(self) -> TpRatios | None:
        a, b = self.side(2), self.side(1)
        if a is None or b is None:
            return None
        s2, s1 = a.summary, b.summary
        m2, m1 = s2.server, s1.server
        r = ratio
        return TpRatios(
            output_tok_s=r(s2.output_tok_s, s1.output_tok_s),
            tpot_median=r(s2.tpot_ms.median, s1.tpot_ms.median),
            ttft_median=r(s2.ttft_ms.median, s1.ttft_ms.median),
            e2el_median=r(s2.e2el_ms.median, s1.e2el_ms.median),
            server_tpot=r(m2.mean_tpot_ms if m2 else None, m1.mean_tpot_ms if m1 else None),
            server_ttft=r(m2.mean_ttft_ms if m2 else None, m1.mean_ttft_ms if m1 else None),
        )
