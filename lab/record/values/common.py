"""Parts that several step types share: latency statistics, one level of a serving benchmark,
what /metrics counted, and the small arithmetic on recorded figures (ratios, cost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from lab.core.units import ratio
from lab.explain.metrics import BenchFigures

#: Seed 004's cost view: the time and device-minutes to infer this many samples.
COST_SAMPLES = 10_000


class StepValues:
    """Base of every step's measured values. `KEY` is the step key it belongs to; `VERSION`
    is bumped when the stored shape changes (and an upgrade is registered in
    lab.record.values.UPGRADES)."""

    KEY: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass
class LatencyStats:
    """mean, median, p90 and p99 in milliseconds (numpy.percentile, linear), as
    `vllm bench serve` computes them; None when nothing was measured."""

    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    p99: float | None = None

    @classmethod
    def of(cls, stats: dict[str, float | None] | None) -> LatencyStats:
        stats = stats or {}
        return cls(stats.get("mean"), stats.get("median"), stats.get("p90"), stats.get("p99"))


@dataclass
class ServerMeans:
    """The server's own means over one level (/metrics Δsum/Δcount, warm-ups included)."""

    mean_ttft_ms: float | None = None
    mean_tpot_ms: float | None = None
    mean_itl_ms: float | None = None
    mean_e2e_ms: float | None = None
    mean_queue_time_ms: float | None = None
    requests_finished: float | None = None
    preemptions: float | None = None


@dataclass
class LevelSummary:
    """One concurrency level of a serving benchmark (lab.measure.stats.summarize's figures)."""

    concurrency: int | None = None
    level: str | None = None
    requests: int | None = None
    completed: int | None = None
    failed: int | None = None
    timeouts: int | None = None
    wall_s: float | None = None
    total_input_tokens: int | None = None
    total_output_tokens: int | None = None
    requests_per_s: float | None = None
    output_tok_s: float | None = None
    total_tok_s: float | None = None
    #: Requests per second that met every goodput target (`request_goodput`), when set.
    goodput_per_s: float | None = None
    ttft_ms: LatencyStats = field(default_factory=LatencyStats)
    tpot_ms: LatencyStats = field(default_factory=LatencyStats)
    itl_ms: LatencyStats = field(default_factory=LatencyStats)
    e2el_ms: LatencyStats = field(default_factory=LatencyStats)
    queue_ms: LatencyStats = field(default_factory=LatencyStats)
    server: ServerMeans | None = None

    @classmethod
    def from_summary(
        cls, summary: dict[str, Any], *, concurrency: int | None = None, level: str | None = None
    ) -> LevelSummary:
        """From a lab.measure.stats.summarize dict (its key names), with the server's means
        over the level when lab.measure.bench.run_level added them (`server`)."""
        server = summary.get("server")
        return cls(
            concurrency=concurrency if concurrency is not None else summary.get("concurrency"),
            level=level if level is not None else summary.get("level"),
            requests=summary.get("requests"),
            completed=summary.get("completed"),
            failed=summary.get("failed"),
            timeouts=summary.get("timeouts"),
            wall_s=summary.get("wall_s"),
            total_input_tokens=summary.get("total_input_tokens"),
            total_output_tokens=summary.get("total_output_tokens"),
            requests_per_s=summary.get("request_throughput"),
            output_tok_s=summary.get("output_throughput"),
            total_tok_s=summary.get("total_token_throughput"),
            goodput_per_s=summary.get("request_goodput"),
            ttft_ms=LatencyStats.of(summary.get("ttft_ms")),
            tpot_ms=LatencyStats.of(summary.get("tpot_ms")),
            itl_ms=LatencyStats.of(summary.get("itl_ms")),
            e2el_ms=LatencyStats.of(summary.get("e2el_ms")),
            queue_ms=LatencyStats.of(summary.get("queue_ms")),
            server=ServerMeans(**server) if isinstance(server, dict) else None,
        )


@dataclass
class MetricsDelta:
    """What the server's /metrics counted between two scrapes (lab.vllm.metrics.delta)."""

    requests_finished: float | None = None
    requests_by_reason: dict[str, float] = field(default_factory=dict)
    prompt_tokens: float | None = None
    generation_tokens: float | None = None
    preemptions: float | None = None
    mean_queue_time_s: float | None = None
    mean_ttft_s: float | None = None
    mean_e2e_s: float | None = None
    mean_tpot_s: float | None = None
    mean_itl_s: float | None = None
    interval_s: float | None = None
    server_restarted: bool | None = None


@dataclass
class KvUsage:
    """vllm:kv_cache_usage_perc polled during a load (a fraction 0-1, despite the name)."""

    samples: int | None = None
    scrape_failures: int | None = None
    #: Why a scrape failed (the poller's error), when one did.
    scrape_error: str | None = None
    duration_s: float | None = None
    interval_s: float | None = None
    peak_kv_usage_frac: float | None = None
    mean_kv_usage_frac: float | None = None
    peak_requests_running: float | None = None
    peak_requests_waiting: float | None = None

    @classmethod
    def from_poller(cls, summary: dict[str, Any]) -> KvUsage:
        """From lab.vllm.metrics.KvUsagePoller.summary()."""
        return cls(
            samples=summary.get("samples"),
            scrape_failures=summary.get("scrape_failures"),
            scrape_error=summary.get("first_error"),
            duration_s=summary.get("duration_s"),
            interval_s=summary.get("interval_s"),
            peak_kv_usage_frac=summary.get("peak_kv_cache_usage_perc"),
            mean_kv_usage_frac=summary.get("mean_kv_cache_usage_perc"),
            peak_requests_running=summary.get("peak_num_requests_running"),
            peak_requests_waiting=summary.get("peak_num_requests_waiting"),
        )


@dataclass
class ClientTotals:
    """Client-side totals over every request of a benchmark (warm-ups and the latency loop
    included), to hold against the server's /metrics counters."""

    requests: int | None = None
    ok: int | None = None
    failed: int | None = None
    timeouts: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None


def bench_figures(
    delta: MetricsDelta | None, kv: KvUsage | None, client: ClientTotals | None
) -> BenchFigures:
    """What lab.explain.metrics.interpret reads: a benchmark's /metrics deltas, its polled
    KV-cache usage and the client's totals, as plain numbers."""
    d, k, c = delta or MetricsDelta(), kv or KvUsage(), client or ClientTotals()
    return BenchFigures(
        requests_finished=d.requests_finished,
        prompt_tokens=d.prompt_tokens,
        generation_tokens=d.generation_tokens,
        preemptions=d.preemptions,
        mean_queue_time_s=d.mean_queue_time_s,
        mean_ttft_s=d.mean_ttft_s,
        mean_tpot_s=d.mean_tpot_s,
        peak_kv_usage_frac=k.peak_kv_usage_frac,
        kv_interval_s=k.interval_s,
        kv_samples=k.samples,
        client_requests=c.requests,
        client_prompt_tokens=c.prompt_tokens,
        client_output_tokens=c.output_tokens,
    )


@dataclass
class CostSide:
    """Time and device-minutes for COST_SAMPLES samples at a measured rate."""

    samples_per_min: float | None
    minutes: float | None
    devices: int | None
    device_minutes: float | None


def cost_side(
    samples_per_min: float | None, devices: int | None, samples: int = COST_SAMPLES
) -> CostSide:
    """Minutes for `samples` at the measured rate, and device-minutes = minutes × devices
    (None without a device count)."""
    minutes = ratio(samples, samples_per_min)
    return CostSide(
        samples_per_min,
        minutes,
        devices,
        minutes * devices if minutes is not None and devices else None,
    )


@dataclass
class VllmVersions:
    """What `import vllm` reports in the vLLM env (lab.vllm.env.VllmEnv.probe)."""

    vllm: str | None = None
    dist: str | None = None
    dist_version: str | None = None
    torch: str | None = None
    transformers: str | None = None
    cuda: str | None = None
    cuda_available: bool | None = None

    @classmethod
    def from_probe(cls, probe: dict[str, Any]) -> VllmVersions:
        """From lab.vllm.env.VllmEnv.probe()'s JSON."""
        return cls(
            vllm=probe.get("vllm"),
            dist=probe.get("dist"),
            dist_version=probe.get("dist_version"),
            torch=probe.get("torch"),
            transformers=probe.get("transformers"),
            cuda=probe.get("cuda"),
            cuda_available=probe.get("cuda_available"),
        )
