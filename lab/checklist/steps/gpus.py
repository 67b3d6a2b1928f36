"""Step 1: GPU resources through NVML (seed: `nvidia-smi`, a GPU with > 16 GB free)."""

from __future__ import annotations

from lab.core.errors import NvmlUnavailable
from lab.core.fmt import fixed
from lab.core.units import mib_to_gib
from lab.record.runner import Outcome, StepContext, check, skip
from lab.record.session import Lab
from lab.record.values import GpusValues


def gpus(lab: Lab, ctx: StepContext, min_gpus: int = 1) -> Outcome:
    """At least `min_gpus` GPUs with more free memory than the threshold (seed: > 16 GB)."""
    from lab.measure import nvml

    threshold = lab.cfg["thresholds"]["gpu_free_gib"]
    label = (f"空闲显存 > {threshold:g} GiB 的 GPU 数", f"GPUs with > {threshold:g} GiB free")
    try:
        found = nvml.query_gpus()
    except NvmlUnavailable as err:
        if lab.has_gpu:
            raise  # a GPU profile without NVML is a failure, not a skip
        return Outcome(
            [skip("free_gpus", *label, lab.no_gpu_reason(), ">=", min_gpus)],
            f"NVML: {err}",
            GpusValues(nvml_error=str(err)),
        )
    free = [g for g in found if mib_to_gib(g.memory_free_mib or 0) > threshold]
    summary = (
        "; ".join(
            f"GPU{g.index} {g.name}: {fixed(mib_to_gib(g.memory_free_mib))}/"
            f"{fixed(mib_to_gib(g.memory_total_mib))} GiB free, util {g.utilization_gpu_pct}%"
            for g in found
        )
        or "no GPU"
    )
    values = GpusValues(
        gpus=found, free_gpus=len(free), driver=found[0].driver_version if found else None
    )
    return Outcome([check("free_gpus", *label, len(free), ">=", min_gpus)], summary, values)
