"""What the experiments on vLLM's advanced features measure beyond the load (issue 11): the
artefacts an arm serves (LoRA adapters, a draft model) and how they were built, the LoRA
adapters as the server listed and ran them, the speculative-decoding counters, and the
memory of each parallel rank. They hang off an arm's values (ArmValues)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Artefact:
    """Something built offline for an arm (a LoRA adapter, a draft model)."""

    kind: str  # "lora-adapter" | "draft-model"
    name: str
    path: str
    built: bool = False  # False: it was there already
    build_s: float | None = None
    rank: int | None = None  # LoRA rank
    params: int | None = None  # adapter parameters
    size_bytes: int | None = None


@dataclass
class ModelCard:
    """One entry of `/v1/models`: an adapter has the base model as `parent`."""

    id: str
    parent: str | None = None
    root: str | None = None


@dataclass
class LoraReadings:
    """A LoRA arm: what `/v1/models` listed before the run-time load, after it and after the
    unload; the load and unload call times; and `vllm:lora_requests_info` sampled while
    adapter requests ran."""

    models_at_start: list[ModelCard] = field(default_factory=list)
    models_after_load: list[ModelCard] = field(default_factory=list)
    models_after_unload: list[ModelCard] = field(default_factory=list)
    static_adapter: str = ""
    hot_adapter: str = ""
    load_s: float | None = None
    unload_s: float | None = None
    #: The hot-loaded adapter's first request after the load (TTFT, ms): the load is lazy
    #: in part, the first request pays the rest.
    hot_first_ttft_ms: float | None = None
    hot_requests_ok: int = 0
    hot_requests: int = 0
    #: A request to the unloaded adapter: its HTTP status (404 expected).
    after_unload_status: int | None = None
    max_lora: int | None = None
    #: Adapter names `vllm:lora_requests_info` showed running / waiting while sampled.
    seen_running: list[str] = field(default_factory=list)
    seen_waiting: list[str] = field(default_factory=list)
    max_running_adapters: int | None = None
    samples: int = 0
    #: Greedy replies of the base and the static adapter to the same prompt differ.
    output_differs: bool | None = None


@dataclass
class SpecReadings:
    """The `vllm:spec_decode_*` counters over an arm's load (end − start)."""

    method: str = ""
    num_speculative_tokens: int | None = None
    drafts: float | None = None
    draft_tokens: float | None = None
    accepted_tokens: float | None = None
    accepted_per_pos: list[float] = field(default_factory=list)
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None


@dataclass
class RankMemory:
    """One rank's memory while the server ran: a GPU (NVML used MiB) or, on CPU, one vLLM
    worker or engine process (RSS MiB: host memory, not GPU memory)."""

    rank: str  # "GPU 0", "VLLM::Worker_TP0", …
    kind: str  # "gpu" | "process-rss"
    used_mib: float | None = None
    pid: int | None = None
