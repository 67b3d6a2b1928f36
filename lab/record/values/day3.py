"""The measured values of the Day 3 steps (also run on Day 4): gpus, install, tools, serve,
monitor, api-test, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.explain.metrics import BenchFigures
from lab.measure.nvml import GpuInfo
from lab.record.values.common import (
    ClientTotals,
    KvUsage,
    MetricsDelta,
    StepValues,
    VllmVersions,
    bench_figures,
)
from lab.record.values.lifecycle import FixApplied, ServerFailure, StartupPhase, StopRecord


@dataclass
class GpusValues(StepValues):
    """`gpus`: the GPUs NVML found (none on the CPU profile, with NVML's reason)."""

    KEY = "gpus"
    gpus: list[GpuInfo] = field(default_factory=list)
    free_gpus: int | None = None
    driver: str | None = None
    nvml_error: str | None = None


@dataclass
class InstallValues(StepValues):
    """`install`: the vLLM env and the versions `import vllm` reports in it."""

    KEY = "install"
    python: str | None = None
    managed: bool | None = None
    install_s: float | None = None
    install_log: str | None = None
    #: Who made the env this time: "uv" or "pip" (None: it was there already).
    installer: str | None = None
    uv_version: str | None = None
    #: Why uv was not used when pip made the env (None when uv did, or pip was asked for).
    installer_fallback: str | None = None
    versions: VllmVersions | None = None


@dataclass
class ToolsValues(StepValues):
    """`tools`: nvitop and gpustat, their `--version` line and where they were found."""

    KEY = "tools"
    versions: dict[str, str | None] = field(default_factory=dict)
    paths: dict[str, str | None] = field(default_factory=dict)


@dataclass
class TpWorker:
    """One `VLLM::Worker_TP*` process of a TP server."""

    pid: int
    title: str
    rss_mib: float | None


@dataclass
class ServeValues(StepValues):
    """`serve`: what one server start cost (also the `facts` of its `servers` row)."""

    KEY = "serve"
    model: str | None = None
    model_path: str | None = None
    profile: str | None = None
    tp: int = 1
    pid: int | None = None
    server_id: int | None = None
    log_path: str | None = None
    ready_s: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency_x: float | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    kv_cache_memory_bytes: int | None = None
    model_load_gib: float | None = None
    model_load_s: float | None = None
    weights_load_s: float | None = None
    engine_init_s: float | None = None
    vllm_version: str | None = None
    model_built: bool | None = None
    model_build_s: float | None = None
    tp_workers: list[TpWorker] = field(default_factory=list)
    #: NVML used memory of the server's GPUs, by NVML index (GPU profiles, TP > 1).
    gpu_used_mib: dict[str, float | None] = field(default_factory=dict)
    #: Startup phases read from the log while waiting (lab.vllm.watch).
    phases: list[StartupPhase] = field(default_factory=list)
    #: Why this start failed, when it did (fatal log line or process exit), and how the tree
    #: and its GPU memory were handed back.
    failure: ServerFailure | None = None
    stop: StopRecord | None = None
    #: The known fix this start added after a failed attempt (`--fix auto`).
    fix: FixApplied | None = None
    #: For a failed start: the known safe fix of its failure, if there is one (`--fix auto`
    #: retries once with it; `--fix off` only reports it).
    remedy: FixApplied | None = None


@dataclass
class SampleSummary:
    """Peak, lowest and mean of one sampled field on one device."""

    source: str
    device: str
    field: str
    peak: float
    min: float
    mean: float
    n: int


@dataclass
class SamplerStats:
    """The sampler's counters and first errors (so a lost sample is never silent)."""

    samples: int = 0
    rows: int = 0
    rows_written: int = 0
    rows_pending: int = 0
    rows_dropped: int = 0
    errors: int = 0
    first_error: str | None = None
    sink_errors: int = 0
    first_sink_error: str | None = None
    interval_s: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None


@dataclass
class LoadSummary:
    """The load driven while sampling."""

    completed: int | None = None
    failed: int | None = None
    output_tok_s: float | None = None
    requests_per_s: float | None = None
    #: The most frequent errors of the failed requests, with their counts (every request
    #: and its error is also in the `requests` table, phase "monitor").
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadPlan:
    """A load of fixed-length prompts (lab.measure.loadgen.Workload as recorded)."""

    input_tokens: int
    output_tokens: int
    concurrency: int
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    timeout_s: float | None = None
    seed: int = 0


@dataclass
class MonitorValues(StepValues):
    """`monitor`: NVML (or, on CPU, the server's process tree) sampled under a load."""

    KEY = "monitor"
    source: str | None = None  # "nvml" or "process"
    summary: list[SampleSummary] = field(default_factory=list)
    sampler: SamplerStats | None = None
    load: LoadSummary | None = None
    workload: LoadPlan | None = None
    peak_mem_used_pct: float | None = None
    peak_util_pct: float | None = None
    mean_util_pct: float | None = None
    peak_rss_mib: float | None = None
    peak_cpu_pct: float | None = None

    @property
    def on_cpu(self) -> bool:
        """Sampled the server's process tree (the CPU profile), not NVML."""
        return self.source == "process"


@dataclass
class StreamReply:
    """The streamed chat reply of api-test."""

    chunks: int | None = None
    ttft_s: float | None = None
    e2el_s: float | None = None
    completion_tokens: int | None = None
    reply: str | None = None


@dataclass
class ApiTestValues(StepValues):
    """`api-test`: the seed's chat prompt, /v1/models and a streamed reply."""

    KEY = "api-test"
    prompt: str | None = None
    max_tokens: int | None = None
    reply: str | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    output_tok_s: float | None = None
    finish_reason: str | None = None
    models: list[str] = field(default_factory=list)
    stream: StreamReply | None = None


@dataclass
class SeriesReading:
    """One key `vllm:` series as the server exported it (its meaning: lab.explain.metrics)."""

    name: str
    present: bool
    value: float | None = None
    count: float | None = None
    #: Set when only a former vLLM name of the series was exported.
    found_as: str | None = None


@dataclass
class OldNameReading:
    """Whether the server exports a name the seeds cite, and today's names for it."""

    old_name: str
    old_present: bool | None = None
    current_present: list[bool] = field(default_factory=list)


@dataclass
class MetricsValues(StepValues):
    """`metrics`: the key series now (Day 3 and Day 4); on Day 4 also what the server counted
    during the recorded benchmark (its step, the deltas, the KV-cache usage, the client's
    totals), read from that bench step's record."""

    KEY = "metrics"
    series: list[SeriesReading] = field(default_factory=list)
    old_names: list[OldNameReading] = field(default_factory=list)
    vllm_series: int | None = None
    bench_step_id: int | None = None
    bench_run_id: int | None = None
    delta: MetricsDelta | None = None
    kv: KvUsage | None = None
    client: ClientTotals | None = None

    def figures(self) -> BenchFigures:
        """The benchmark's figures this step read (lab.explain.metrics.interpret's input)."""
        return bench_figures(self.delta, self.kv, self.client)
