"""Typed step values: every step's measured values are one dataclass, with units in the field
names, registered here by step key. The logbook stores them through lab.record.codec with
their type name and version (`steps.value_type`, `steps.value_version`), and reads them back
as these types; nothing reads a step's values by string path.

Adding a step type:
1. a dataclass deriving `StepValues` with `KEY = "<step key>"` (units in field names; parts
   as nested dataclasses; derived figures as properties, not fields);
2. add it to `TYPES` below;
3. the step function returns it in its `Outcome` (and sets it on `err.values` for what it
   measured before failing);
4. deliverables read its fields (lab.deliver.gather hands them over typed).

Changing a stored shape: bump the class's `VERSION` and register an upgrade of the old JSON in
`UPGRADES[(type name, old version)]`; old rows are upgraded when read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.record.values.common import (
    COST_SAMPLES,
    ClientTotals,
    CostSide,
    KvUsage,
    LatencyStats,
    LevelSummary,
    MetricsDelta,
    ServerMeans,
    StepValues,
    VllmVersions,
    bench_figures,
    cost_side,
)
from lab.record.values.day3 import (
    ApiTestValues,
    GpusValues,
    InstallValues,
    LoadPlan,
    LoadSummary,
    MetricsValues,
    MonitorValues,
    OldNameReading,
    SamplerStats,
    SampleSummary,
    SeriesReading,
    ServeValues,
    StreamReply,
    ToolsValues,
    TpWorker,
)
from lab.record.values.day4 import (
    BalanceDevice,
    BalanceValues,
    BenchMetrics,
    BenchValues,
    CompareSide,
    CompareTpValues,
    CompareValues,
    CompareWorkload,
    Cost,
    LatencyLoop,
    Speedup,
    SweepPlan,
    TpRatios,
    TpSide,
)
from lab.record.values.day5 import (
    BatchRow,
    EngineInfo,
    GpuMemory,
    KvCacheValues,
    MemoryValues,
    OfflineMemory,
    OfflineRequest,
    OfflineRun,
    OfflineValues,
    ParamReading,
    ParamsValues,
)

# Day 6: one model across several nodes (issue 12).
from lab.record.values.day6 import (
    CompareNodesValues,
    NodeGpu,
    NodeInfo,
    NodeLayout,
    NodeProc,
    NodeShare,
    NodeShareValues,
    NodesSide,
    NodesValues,
    NodeValues,
    ServeNodesValues,
)
from lab.record.values.download import DownloadValues
from lab.record.values.experiments import (
    ArmInfo,
    ArmStat,
    ArmValues,
    ExperimentValues,
    Finding,
    ProbeResult,
)
from lab.record.values.features import (
    Artefact,
    LoraReadings,
    ModelCard,
    RankMemory,
    SpecReadings,
)
from lab.record.values.lifecycle import FixApplied, ServerFailure, StartupPhase, StopRecord

#: Step key -> the type of its values.
TYPES: dict[str, type[StepValues]] = {
    cls.KEY: cls
    for cls in (
        GpusValues,
        InstallValues,
        ToolsValues,
        DownloadValues,
        ServeValues,
        MonitorValues,
        ApiTestValues,
        MetricsValues,
        BalanceValues,
        BenchValues,
        CompareValues,
        CompareTpValues,
        OfflineValues,
        KvCacheValues,
        MemoryValues,
        ParamsValues,
        # experiments (lab.checklist.experiments)
        ArmValues,
        ExperimentValues,
        # Day 6 (issue 12)
        NodesValues,
        NodeValues,
        ServeNodesValues,
        NodeShareValues,
        CompareNodesValues,
    )
}

#: Type name (as stored in steps.value_type) -> type.
BY_NAME: dict[str, type[StepValues]] = {cls.__name__: cls for cls in TYPES.values()}

#: (type name, stored version) -> a function from that version's JSON to the next version's.
UPGRADES: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}

__all__ = [
    "BY_NAME",
    "COST_SAMPLES",
    "TYPES",
    "UPGRADES",
    "ApiTestValues",
    "ArmInfo",
    "ArmStat",
    "ArmValues",
    "Artefact",
    "BalanceDevice",
    "BalanceValues",
    "BatchRow",
    "BenchMetrics",
    "BenchValues",
    "ClientTotals",
    "CompareNodesValues",
    "CompareSide",
    "CompareTpValues",
    "CompareValues",
    "CompareWorkload",
    "Cost",
    "CostSide",
    "DownloadValues",
    "EngineInfo",
    "ExperimentValues",
    "Finding",
    "FixApplied",
    "GpuMemory",
    "GpusValues",
    "InstallValues",
    "KvCacheValues",
    "KvUsage",
    "LatencyLoop",
    "LatencyStats",
    "LevelSummary",
    "LoadPlan",
    "LoadSummary",
    "LoraReadings",
    "MemoryValues",
    "MetricsDelta",
    "MetricsValues",
    "ModelCard",
    "MonitorValues",
    "NodeGpu",
    "NodeInfo",
    "NodeLayout",
    "NodeProc",
    "NodeShare",
    "NodeShareValues",
    "NodeValues",
    "NodesSide",
    "NodesValues",
    "OfflineMemory",
    "OfflineRequest",
    "OfflineRun",
    "OfflineValues",
    "OldNameReading",
    "ParamReading",
    "ParamsValues",
    "ProbeResult",
    "RankMemory",
    "SampleSummary",
    "SamplerStats",
    "SeriesReading",
    "ServeNodesValues",
    "ServeValues",
    "ServerFailure",
    "ServerMeans",
    "SpecReadings",
    "Speedup",
    "StartupPhase",
    "StepValues",
    "StopRecord",
    "StreamReply",
    "SweepPlan",
    "ToolsValues",
    "TpRatios",
    "TpSide",
    "TpWorker",
    "VllmVersions",
    "bench_figures",
    "cost_side",
]
