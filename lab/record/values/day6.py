"""The measured values of Day 6 (one model across several nodes): the nodes, the node ranks
started, the multi-node serve, each node's share of memory, and one node against several."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.units import ratio
from lab.record.values.common import LevelSummary, StepValues
from lab.record.values.day3 import ServeValues
from lab.record.values.day4 import SweepPlan


@dataclass
class NodeLayout:
    """How the model is spread (lab.vllm.nodes.Layout as recorded)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29555
    tp: int = 1
    pp: int = 1
    dp: int = 1
    executor: str = "mp"
    per_node: int = 1
    local: bool = True


@dataclass
class NodeGpu:
    index: int
    name: str | None = None
    memory_total_mib: float | None = None
    memory_free_mib: float | None = None
    #: Memory held by the lab's own node processes on this GPU (counted as available).
    memory_ours_mib: float | None = None


@dataclass
class NodeInfo:
    """One node rank as the `nodes` step saw it."""

    rank: int
    host: str
    #: "nvml" (its GPUs on this host), "cores" (cpu profile: its CPU cores, not GPUs),
    #: "ray" (from the Ray cluster), "remote" (another host: not measured from here).
    source: str
    devices: list[int] = field(default_factory=list)
    gpus: list[NodeGpu] = field(default_factory=list)
    cores_available: int | None = None
    rss_mib: float | None = None
    ready_gpus: int | None = None


@dataclass
class NodesValues(StepValues):
    """`nodes`: each node's devices and free memory before (or under) the multi-node serve."""

    KEY = "nodes"
    layout: NodeLayout = field(default_factory=NodeLayout)
    nodes: list[NodeInfo] = field(default_factory=list)
    free_gib_threshold: float | None = None
    cluster_running: bool = False
    #: The GPU figures were measured before the running cluster started (NVML could not tell
    #: which processes were the cluster's).
    before_start: bool = False
    ray_error: str | None = None


@dataclass
class NodeProc:
    """One node rank's process (the head's API server, or a headless rank)."""

    rank: int
    pid: int | None
    alive: bool
    headless: bool
    command: str
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeValues(StepValues):
    """`node`: a headless node rank started on this host (`invoke node`)."""

    KEY = "node"
    layout: NodeLayout = field(default_factory=NodeLayout)
    node: NodeProc | None = None
    started_s: float | None = None
    head_command: str | None = None


@dataclass
class ServeNodesValues(StepValues):
    """`serve-nodes`: the model served across nodes; the head's startup figures in `serve`."""

    KEY = "serve-nodes"
    layout: NodeLayout = field(default_factory=NodeLayout)
    serve: ServeValues | None = None
    nodes: list[NodeProc] = field(default_factory=list)
    #: True when a running cluster (`invoke cluster`) was verified rather than started.
    adopted: bool = False
    skipped_reason: str | None = None

    @property
    def tp(self) -> int:
        return self.layout.tp

    @property
    def ready_s(self) -> float | None:
        return self.serve.ready_s if self.serve else None


@dataclass
class NodeShare:
    """One node rank's memory: NVML used on its GPUs, or (cpu) the RSS of its processes."""

    rank: int
    used_mib: float | None
    pids: list[int] = field(default_factory=list)
    devices: list[int] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


@dataclass
class NodeShareValues(StepValues):
    """`node-share`: does every node hold its share? (max - min) / max per node."""

    KEY = "node-share"
    source: str | None = None  # "nvml" or "process_rss"
    nodes: list[NodeShare] = field(default_factory=list)
    threshold_pct: float | None = None
    max_mib: float | None = None
    min_mib: float | None = None
    spread_pct: float | None = None

    @property
    def on_cpu(self) -> bool:
        return self.source == "process_rss"


@dataclass
class NodesSide:
    """One arm of the comparison: its shape, startup and one benchmark level."""

    label: str
    tp: int
    pp: int
    nnodes: int
    ready_s: float | None = None
    summary: LevelSummary = field(default_factory=LevelSummary)
    command: str | None = None


@dataclass
class CompareNodesValues(StepValues):
    """`compare-nodes`: the same model on one node (TP) against across nodes (PP)."""

    KEY = "compare-nodes"
    concurrency: int | None = None
    plan: SweepPlan | None = None
    sides: list[NodesSide] = field(default_factory=list)
    profile: str | None = None

    def side(self, nnodes_gt_1: bool) -> NodesSide | None:
        return next((s for s in self.sides if (s.nnodes > 1) == nnodes_gt_1), None)

    @property
    def throughput_ratio(self) -> float | None:
        """Across nodes ÷ one node, output tok/s."""
        a, b = self.side(True), self.side(False)
        return ratio(a.summary.output_tok_s, b.summary.output_tok_s) if a and b else None

    @property
    def tpot_ratio(self) -> float | None:
        """Across nodes ÷ one node, median TPOT."""
        a, b = self.side(True), self.side(False)
        return ratio(a.summary.tpot_ms.median, b.summary.tpot_ms.median) if a and b else None
