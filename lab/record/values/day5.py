"""The measured values of the Day 5 steps (seed 002): offline, kv-cache, memory, params."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from lab.record.values.common import StepValues
from lab.vllm.logparse import StartupFacts

#: An engine parameter as vLLM reports it (a path, a count, a fraction, a switch).
Scalar = str | int | float | bool | None


@dataclass
class EngineInfo:
    """The engine's configuration as offline_generate.py read it back from vLLM."""

    params: dict[str, Scalar] = field(default_factory=dict)
    params_missing: list[str] = field(default_factory=list)
    num_gpu_blocks: int | None = None
    num_cpu_blocks: int | None = None
    block_size: int | None = None
    kv_cache_memory_bytes: int | None = None
    device: str | None = None


@dataclass
class GpuMemory:
    """One GPU during an offline run: NVML's peak used, its total, vLLM's budget."""

    index: int
    peak_used_mib: float | None = None
    total_mib: float | None = None
    reserved_budget_mib: float | None = None


@dataclass
class OfflineMemory:
    peak_tree_rss_mib: float | None = None
    samples: int | None = None
    ru_maxrss_self_mib: float | None = None
    gpus: list[GpuMemory] = field(default_factory=list)


@dataclass
class OfflineRequest:
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    ttft_s: float | None = None
    e2el_s: float | None = None
    prompt: str | None = None
    text: str | None = None


@dataclass
class OfflineRun:
    """One LLM.generate call of offline_generate.py."""

    name: str | None = None
    n: int | None = None
    elapsed_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    output_tok_s: float | None = None
    samples_per_min: float | None = None
    latency_s: float | None = None
    latency_basis: str | None = None
    sampling: dict[str, Scalar] = field(default_factory=dict)
    requests: list[OfflineRequest] = field(default_factory=list)


@dataclass
class BatchRow:
    """One row of the seed's batch-size benchmark: Batch, Time, Tokens, Throughput."""

    batch_size: int
    n: int | None = None
    time_s: float | None = None
    output_tokens: int | None = None
    output_tok_s: float | None = None
    prompt_tokens: int | None = None
    ok: bool = False


@dataclass
class OfflineValues(StepValues):
    """`offline`: one engine load, the seed's example, then each batch size."""

    KEY = "offline"
    profile: str | None = None
    model: str | None = None
    model_path: str | None = None
    load_format: str | None = None
    model_built: bool | None = None
    model_build_s: float | None = None
    vllm_version: str | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    engine: EngineInfo = field(default_factory=EngineInfo)
    startup: StartupFacts = field(default_factory=StartupFacts)
    memory: OfflineMemory = field(default_factory=OfflineMemory)
    example: OfflineRun = field(default_factory=OfflineRun)
    batches: list[BatchRow] = field(default_factory=list)
    max_tokens: int | None = None
    batch_sizes: list[int] = field(default_factory=list)
    llm_call: str | None = None
    work_dir: str | None = None
    log_path: str | None = None

    @property
    def throughput_rises(self) -> bool | None:
        """Whether throughput rose with every larger batch (the seed's observation), or None."""
        values = [b.output_tok_s for b in self.batches]
        known = [v for v in values if v is not None]
        if len(values) < 2 or len(known) < len(values):
            return None
        return all(b > a for a, b in itertools.pairwise(known))


@dataclass
class KvCacheValues(StepValues):
    """`kv-cache`: the blocks the engine allocated, against the logged KV-cache capacity."""

    KEY = "kv-cache"
    num_gpu_blocks: int | None = None
    num_cpu_blocks: int | None = None
    block_size: int | None = None
    kv_cache_tokens_log: int | None = None
    kv_cache_device: str | None = None
    max_concurrency_x: float | None = None
    max_concurrency_for_tokens: int | None = None
    cpu_kv_cache_gib: float | None = None
    kv_cache_memory_bytes: int | None = None
    engine_init_s: float | None = None

    @property
    def blocks_x_block_size(self) -> int | None:
        if not self.num_gpu_blocks or not self.block_size:
            return None
        return self.num_gpu_blocks * self.block_size


@dataclass
class MemoryValues(StepValues):
    """`memory`: the offline run's memory (NVML per GPU; on CPU the process tree's RSS)."""

    KEY = "memory"
    peak_tree_rss_mib: float | None = None
    gpus: list[GpuMemory] = field(default_factory=list)
    cpu_kv_cache_gib: float | None = None
    samples: int | None = None

    @property
    def used_of_budget_pct(self) -> float | None:
        """Peak used ÷ vLLM's budget (gpu-memory-utilization × total), all GPUs, in %."""
        budget = sum(g.reserved_budget_mib or 0 for g in self.gpus)
        used = sum(g.peak_used_mib or 0 for g in self.gpus)
        return round(used / budget * 100, 1) if used and budget else None


@dataclass
class ParamReading:
    """One parameter of the seed's table, as the engine really set it (its meaning and the
    seed's default: lab.explain.params)."""

    name: str
    value: Scalar = None
    present: bool = False
    in_this_vllm: bool = True


@dataclass
class ParamsValues(StepValues):
    """`params`: the seed's key-parameter table with the values the engine used."""

    KEY = "params"
    rows: list[ParamReading] = field(default_factory=list)
    on_gpu: bool = False
    llm_call: str | None = None
    server_command: str | None = None
    vllm_version: str | None = None
