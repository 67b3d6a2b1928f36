"""GPU queries through NVML (`import pynvml`, provided by the nvidia-ml-py package).

Modelled on nvitop's Device API: units are in the names (`memory_used_mib`,
`utilization_gpu_pct`), and every public function names its nvidia-smi equivalent so a
user can check a number by hand.

Every function takes `nvml=None`: the real `pynvml` module is imported lazily, and unit
tests pass `tests.fakes.fake_pynvml.FakePynvml` instead. Each call does its own
`nvmlInit()` / `nvmlShutdown()`. NVML reference-counts init, so nesting is cheap; wrap a
long sampling loop in `nvml_session()` so the per-sample init is a counter bump and not a
full driver attach.

NVML indices are not CUDA indices: NVML ignores `CUDA_VISIBLE_DEVICES` and orders by PCI
bus, while CUDA orders fastest-first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.core.errors import NvmlUnavailable
from lab.core.units import mib

#: NVML errors that mean "this one field cannot be read here" (a MIG slice, an old driver,
#: a container without permission): the field becomes None instead of failing the query.
_SOFT_ERRORS = frozenset(
    {
        "NVMLError_NotSupported",
        "NVMLError_NoPermission",
        "NVMLError_FunctionNotFound",
        "NVMLError_NotFound",
        "NVMLError_NoData",
        # pynvml raises this (not an NVMLError) when an unversioned call is newer than the driver.
        "NVMLLibraryMismatchError",
    }
)

#: Why NVML did not start, in words, by the error's class name (real and fake pynvml alike).
_INIT_REASONS = {
    "NVMLError_LibraryNotFound": "no NVIDIA driver found",
    "NVMLError_DriverNotLoaded": "the NVIDIA driver is not loaded",
    "NVMLError_NoPermission": "no permission to access the NVIDIA driver",
    "NVMLError_LibRmVersionMismatch": "the NVML library and the kernel driver differ in version (reboot after a driver upgrade)",
    "NVMLError_Uninitialized": "NVML did not initialise",
    "NVMLError_Unknown": "NVML failed with an unknown error",
}


# --------------------------------------------------------------------------- data


@dataclass
class GpuProcess:
    """A compute process on one GPU.

    Command line equivalent:
        nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv
    """

    pid: int
    #: From psutil (works when the pid is visible in this pid namespace), else NVML, else None.
    name: str | None
    #: None when the driver does not report it (e.g. Windows WDDM, some containers).
    used_mib: float | None


@dataclass
class GpuInfo:
    """One GPU as NVML sees it. Memory in MiB (2**20 bytes), like nvidia-smi.

    A field is None when NVML answers NotSupported / NoPermission for it; the field's
    label is then listed in `unsupported`, so a missing value is never silent.

    Command line equivalent:
        nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,memory.free,utilization.gpu,utilization.memory,driver_version,clocks.max.memory --format=csv
    """

    index: int
    name: str
    uuid: str | None
    memory_total_mib: float | None
    memory_used_mib: float | None
    memory_free_mib: float | None
    utilization_gpu_pct: int | None
    utilization_memory_pct: int | None
    driver_version: str | None
    processes: list[GpuProcess] = field(default_factory=list)
    max_memory_clock_mhz: int | None = None
    memory_bus_width_bits: int | None = None
    #: Reserved by driver/firmware (nvmlMemory_v2 only). nvidia-smi's "used" excludes it,
    #: so used + free + reserved = total; with the v1 API it is None and folded into used.
    memory_reserved_mib: float | None = None
    #: Labels of the fields NVML refused, e.g. ["utilization: Not Supported"].
    unsupported: list[str] = field(default_factory=list)

    @property
    def memory_used_pct(self) -> float | None:
        """Used / total × 100, as nvidia-smi's Memory-Usage column implies."""
        if not self.memory_total_mib or self.memory_used_mib is None:
            return None
        return self.memory_used_mib / self.memory_total_mib * 100.0

    @property
    def peak_memory_bandwidth_gbps(self) -> float | None:
        """Theoretical peak memory bandwidth in GB/s (10**9 bytes/s).

        = max memory clock (MHz) × bus width (bits) × 2 (DDR: two transfers per clock)
          / 8 (bits → bytes) / 1000 (MB/s → GB/s).

        This is the bound the roofline uses: a decode step of batch 1 must read every
        weight once, so TPOT >= weight bytes / this. An H100 SXM gives 2619 MHz × 5120 bit
        → 3352 GB/s; an H200 gives 3201 MHz × 6144 bit → 4917 GB/s. Real kernels reach
        roughly 80-90 % of it.

        Command line equivalent (the clock; the bus width has no nvidia-smi query field):
            nvidia-smi --query-gpu=clocks.max.memory --format=csv
        """
        if not self.max_memory_clock_mhz or not self.memory_bus_width_bits:
            return None
        return self.max_memory_clock_mhz * self.memory_bus_width_bits * 2 / 8 / 1000.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for the logbook), with the derived properties included."""
        d = asdict(self)
        d["memory_used_pct"] = self.memory_used_pct
        d["peak_memory_bandwidth_gbps"] = self.peak_memory_bandwidth_gbps
        return d


# --------------------------------------------------------------------------- helpers


def _err_name(err: BaseException) -> str:
    return type(err).__name__


def _to_str(value: Any) -> str:
    # nvidia-ml-py >= 11.515 returns str; older pynvml returned bytes.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _load(nvml: Any | None) -> Any:
    if nvml is not None:
        return nvml
    try:
        import pynvml  # lazy: importing it is cheap, but keep `invoke --list` free of it
    except ImportError as err:
        raise NvmlUnavailable(
            f"NVML unavailable: nvidia-ml-py is not installed ({_err_name(err)})",
            fix="pip install nvidia-ml-py",
        ) from None
    return pynvml


def _unavailable(err: BaseException) -> NvmlUnavailable:
    name = _err_name(err)
    reason = _INIT_REASONS.get(name) or str(err) or "NVML failed"
    fix = None
    if name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"):
        fix = "install/load the NVIDIA driver (nvidia-smi must work), or use the cpu profile"
    elif name == "NVMLError_LibRmVersionMismatch":
        fix = "reboot (or reload the nvidia kernel modules) after the driver upgrade"
    return NvmlUnavailable(f"NVML unavailable: {reason} ({name})", fix=fix)


@contextlib.contextmanager
def nvml_session(nvml: Any | None = None) -> Iterator[Any]:
    """Hold NVML initialised for the block; yields the module.

    nvmlInit is reference-counted by the driver, so functions called inside (which init
    and shut down themselves) stay cheap. Raises NvmlUnavailable when NVML cannot start.

    Command line equivalent: none (nvidia-smi -l N keeps its own session).
    """
    nv = _load(nvml)
    try:
        nv.nvmlInit()
    except Exception as err:  # NVMLError subclasses; also OSError from odd ctypes setups
        raise _unavailable(err) from None
    try:
        yield nv
    finally:
        # Shutdown failing must not hide the block's own exception or result.
        with contextlib.suppress(Exception):
            nv.nvmlShutdown()


def _soft(unsupported: list[str], label: str, fn: Callable[..., Any] | None, *args: Any) -> Any:
    """Call one NVML getter; a NotSupported-like error makes the field None and notes it."""
    if fn is None:  # an older pynvml without this function
        unsupported.append(f"{label}: not in this pynvml")
        return None
    try:
        return fn(*args)
    except Exception as err:
        if _err_name(err) in _SOFT_ERRORS:
            unsupported.append(f"{label}: {err}")
            return None
        raise


def _memory_info(nv: Any, handle: Any, unsupported: list[str]) -> Any:
    """nvmlMemory_v2 when the driver has it (matches nvidia-smi's "used"), else v1."""
    version = getattr(nv, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nv.nvmlDeviceGetMemoryInfo(handle, version=version)
        except Exception:
            # TypeError: a pynvml without `version`; FunctionNotFound/ArgumentVersionMismatch:
            # a driver without _v2. The v1 call below reports any real failure.
            pass
    return _soft(unsupported, "memory", nv.nvmlDeviceGetMemoryInfo, handle)


def _process_name(nv: Any, pid: int) -> str | None:
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:
        # Inside a container NVML reports host pids that psutil cannot see.
        pass
    getter = getattr(nv, "nvmlSystemGetProcessName", None)
    if getter is not None:
        try:
            return _to_str(getter(pid)).rsplit("/", 1)[-1] or None
        except Exception:
            pass
    return None


def _compute_processes(nv: Any, handle: Any, unsupported: list[str]) -> list[GpuProcess]:
    raw = None
    reason = "not in this pynvml"
    # The unversioned call raises NVMLLibraryMismatchError on drivers older than the
    # bindings (it maps to _v3); _v2 is the fallback nvitop also uses.
    for fname in (
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetComputeRunningProcesses_v2",
    ):
        fn = getattr(nv, fname, None)
        if fn is None:
            continue
        try:
            raw = fn(handle)
            break
        except Exception as err:
            if _err_name(err) not in _SOFT_ERRORS:
                raise
            reason = str(err) or _err_name(err)
    else:
        unsupported.append(f"processes: {reason}")
        return []
    out = []
    for p in raw or []:
        used = getattr(p, "usedGpuMemory", None)
        pid = int(p.pid)
        out.append(GpuProcess(pid=pid, name=_process_name(nv, pid), used_mib=mib(used)))
    return out


def _read_gpu(nv: Any, index: int, driver: str | None) -> GpuInfo:
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    unsupported: list[str] = []
    name = _soft(unsupported, "name", nv.nvmlDeviceGetName, handle)
    uuid = _soft(unsupported, "uuid", getattr(nv, "nvmlDeviceGetUUID", None), handle)
    mem = _memory_info(nv, handle, unsupported)
    util = _soft(
        unsupported, "utilization", getattr(nv, "nvmlDeviceGetUtilizationRates", None), handle
    )
    clock_mem = getattr(nv, "NVML_CLOCK_MEM", 2)
    max_mem_clock = _soft(
        unsupported,
        "max_memory_clock",
        getattr(nv, "nvmlDeviceGetMaxClockInfo", None),
        handle,
        clock_mem,
    )
    bus_width = _soft(
        unsupported, "memory_bus_width", getattr(nv, "nvmlDeviceGetMemoryBusWidth", None), handle
    )
    reserved = getattr(mem, "reserved", None) if mem is not None else None
    return GpuInfo(
        index=index,
        name=_to_str(name) if name is not None else f"GPU {index}",
        uuid=_to_str(uuid) if uuid is not None else None,
        memory_total_mib=mib(mem.total) if mem is not None else None,
        memory_used_mib=mib(mem.used) if mem is not None else None,
        memory_free_mib=mib(mem.free) if mem is not None else None,
        utilization_gpu_pct=int(util.gpu) if util is not None else None,
        utilization_memory_pct=int(util.memory) if util is not None else None,
        driver_version=driver,
        processes=_compute_processes(nv, handle, unsupported),
        max_memory_clock_mhz=int(max_mem_clock) if max_mem_clock else None,
        memory_bus_width_bits=int(bus_width) if bus_width else None,
        memory_reserved_mib=mib(reserved),
        unsupported=unsupported,
    )


def _query_failed(err: BaseException, what: str) -> NvmlUnavailable:
    return NvmlUnavailable(f"NVML query failed ({what}): {err} ({_err_name(err)})")


# --------------------------------------------------------------------------- public


def query_gpus(nvml: Any | None = None) -> list[GpuInfo]:
    """Every GPU NVML sees, with memory, utilization, driver, processes and memory clocks.

    Raises NvmlUnavailable (one clear line) when NVML cannot load or start, or when a
    GPU stops answering (e.g. "GPU is lost"). Returns [] when the driver sees no GPU.

    Command line equivalent:
        nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,memory.free,utilization.gpu,utilization.memory,driver_version,clocks.max.memory --format=csv
        nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory --format=csv
    """
    with nvml_session(nvml) as nv:
        try:
            driver = _soft([], "driver", getattr(nv, "nvmlSystemGetDriverVersion", None))
            driver = _to_str(driver) if driver is not None else None
            count = nv.nvmlDeviceGetCount()
        except Exception as err:
            raise _query_failed(err, "device count") from None
        gpus = []
        for index in range(count):
            try:
                gpus.append(_read_gpu(nv, index, driver))
            except Exception as err:
                raise _query_failed(err, f"GPU {index}") from None
        return gpus


def gpu_count(nvml: Any | None = None) -> int:
    """How many GPUs NVML sees (all of them: CUDA_VISIBLE_DEVICES does not apply).

    Raises NvmlUnavailable when NVML cannot start; use nvml_available() to ask first.

    Command line equivalent:
        nvidia-smi --query-gpu=count --format=csv,noheader
    """
    with nvml_session(nvml) as nv:
        try:
            return int(nv.nvmlDeviceGetCount())
        except Exception as err:
            raise _query_failed(err, "device count") from None


def nvml_available(nvml: Any | None = None) -> tuple[bool, str]:
    """(True, "driver 550.54.15, 2 GPU(s)") or (False, "NVML unavailable: … (NVMLError_…)").

    True means NVML itself works, even with 0 GPUs (the reason says so); the profile
    choice should look at the count too. Never raises.

    Command line equivalent:
        nvidia-smi -L
    """
    try:
        with nvml_session(nvml) as nv:
            driver = _soft([], "driver", getattr(nv, "nvmlSystemGetDriverVersion", None))
            count = int(nv.nvmlDeviceGetCount())
    except NvmlUnavailable as err:
        return False, str(err)
    except Exception as err:
        return False, str(_query_failed(err, "device count"))
    driver_txt = _to_str(driver) if driver is not None else "unknown"
    return True, f"driver {driver_txt}, {count} GPU(s)"


def sample_gpus(indices: list[int] | None = None, nvml: Any | None = None) -> list[dict[str, Any]]:
    """One timeline row per GPU, for the sampler; cheap (no process list, no clocks).

    Row: t (unix seconds), source 'nvml', device (NVML index as str), mem_used_mib,
    mem_total_mib, util_pct, mem_util_pct. Fields NVML refuses are None.
    `indices` picks GPUs by NVML index (default: all).

    Command line equivalent:
        nvidia-smi --query-gpu=timestamp,index,memory.used,memory.total,utilization.gpu,utilization.memory --format=csv -lms 500
    """
    rows = []
    with nvml_session(nvml) as nv:
        try:
            wanted = list(range(nv.nvmlDeviceGetCount())) if indices is None else list(indices)
            t = time.time()
            for index in wanted:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                ignored: list[str] = []
                mem = _memory_info(nv, handle, ignored)
                util = _soft(
                    ignored,
                    "utilization",
                    getattr(nv, "nvmlDeviceGetUtilizationRates", None),
                    handle,
                )
                rows.append(
                    {
                        "t": t,
                        "source": "nvml",
                        "device": str(index),
                        "mem_used_mib": mib(mem.used) if mem is not None else None,
                        "mem_total_mib": mib(mem.total) if mem is not None else None,
                        "util_pct": int(util.gpu) if util is not None else None,
                        "mem_util_pct": int(util.memory) if util is not None else None,
                    }
                )
        except Exception as err:
            raise _query_failed(err, "sample") from None
    return rows


def wait_released(
    indices: list[int] | None,
    baseline_mib: dict[str, float] | None,
    timeout_s: float = 60.0,
    margin_mib: float = 1024.0,
    poll_s: float = 0.5,
    nvml: Any | None = None,
) -> tuple[float | None, list[str]]:
    """Wait until the GPUs' used memory is back to what it was before the server started
    (`baseline_mib` by NVML index, plus `margin_mib`; without a baseline, `margin_mib`).
    Returns (seconds waited, []) once released, or (None, what still holds memory) after
    `timeout_s`: one entry per GPU with its used MiB and the processes NVML lists on it.
    A stopped server's memory can stay held for a while after its processes are gone (the
    driver frees it), or for good when an orphan keeps it (seen on 2×H200: 130,949 MiB).

    Command line equivalent:
        until nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | …; do sleep 0.5; done
    """
    baseline = baseline_mib or {}
    t0 = time.monotonic()
    while True:
        try:
            gpus = query_gpus(nvml)
        except NvmlUnavailable as err:
            return None, [f"NVML: {err}"]
        wanted = [g for g in gpus if indices is None or g.index in indices]
        held = [
            g
            for g in wanted
            if g.memory_used_mib is not None
            and g.memory_used_mib > baseline.get(str(g.index), 0.0) + margin_mib
        ]
        if not held:
            return round(time.monotonic() - t0, 3), []
        if time.monotonic() - t0 >= timeout_s:
            return None, [_held_line(g, baseline.get(str(g.index))) for g in held]
        time.sleep(poll_s)


def _held_line(gpu: GpuInfo, baseline: float | None) -> str:
    procs = (
        ", ".join(
            f"pid {p.pid} {p.name or '?'}"
            + (f" {p.used_mib:,.0f} MiB" if p.used_mib is not None else "")
            for p in gpu.processes
        )
        or "no process listed"
    )
    before = f" (before the server: {baseline:,.0f} MiB)" if baseline is not None else ""
    return f"GPU{gpu.index}: {gpu.memory_used_mib:,.0f} MiB used{before}: {procs}"


def used_mib_by_index(nvml: Any | None = None) -> dict[str, float]:
    """NVML used MiB of every GPU by index (str), for a stop's release baseline; {} when NVML
    is unavailable."""
    try:
        return {
            str(g.index): g.memory_used_mib
            for g in query_gpus(nvml)
            if g.memory_used_mib is not None
        }
    except NvmlUnavailable:
        return {}
