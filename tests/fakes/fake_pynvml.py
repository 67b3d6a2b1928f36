"""A fake `pynvml` (nvidia-ml-py 12/13 API subset) for unit tests on machines with no GPU.

Names, signatures, return shapes and error classes follow the real module
(site-packages/pynvml.py of nvidia-ml-py 13.x):
- `NVMLError(value)` maps its code to a generated subclass (`NVMLError_NotSupported`, …),
  and `str(err)` is the driver's wording ("Not Supported").
- nvmlInit/nvmlShutdown are reference-counted; any device call while not initialised
  raises NVMLError_Uninitialized, as the real library does, so tests catch a missing init.
- Memory is in bytes; `nvmlDeviceGetMemoryInfo(handle, version=nvmlMemory_v2)` adds
  `reserved`, and `used` then excludes it (as nvidia-smi shows).
- `usedGpuMemory` is None when unavailable.

Build one from a list of GPU dicts (see H100_80GB / H200), or use a preset:
no_library(), zero_gpus(), one_h100(), two_h200().
"""
from __future__ import annotations

import copy
import string
from types import SimpleNamespace
from typing import Any

MIB = 1024 * 1024

# ---- constants (same values as pynvml) -------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NO_DATA = 21
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999

NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_CLOCK_VIDEO = 3

nvmlMemory_v2 = 0x02000028


# ---- errors (same construction as pynvml._extractNVMLErrorsAsClasses) -------------------
class NVMLLibraryMismatchError(Exception):
    """Raised by pynvml's unversioned wrappers when the driver lacks the newest version."""


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}  # noqa: RUF012 (pynvml's shape)
    _errcode_to_string = {  # noqa: RUF012 (pynvml's shape)
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_NO_DATA: "No data",
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return self.value == other.value

    __hash__ = Exception.__hash__


def _make_error_classes() -> dict[str, type]:
    made = {}
    for const, val in list(globals().items()):
        if not const.startswith("NVML_ERROR_"):
            continue
        cls_name = "NVMLError_" + string.capwords(const.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def gen_new(v):
            def new(typ, *args):
                return NVMLError.__new__(typ, v)
            return new

        cls = type(cls_name, (NVMLError,), {"__new__": gen_new(val)})
        cls.__module__ = __name__
        NVMLError._valClassMapping[val] = cls
        made[cls_name] = cls
    return made


_ERROR_CLASSES = _make_error_classes()
globals().update(_ERROR_CLASSES)  # NVMLError_NotSupported, NVMLError_LibraryNotFound, …


# ---- GPU descriptions -------------------------------------------------------------------
#: One idle H100 SXM as the lent machine reports it (driver 580: total 81,559 MiB,
#: reserved 480, used 0; max memory clock 2619 MHz; bus 5120 bit).
H100_80GB: dict[str, Any] = {
    "name": "NVIDIA H100 80GB HBM3",
    "uuid": "GPU-11111111-2222-3333-4444-555555555555",
    "memory_total_mib": 81559,
    "memory_used_mib": 0,
    "memory_reserved_mib": 480,
    "utilization_gpu_pct": 0,
    "utilization_memory_pct": 0,
    "max_memory_clock_mhz": 2619,
    "memory_bus_width_bits": 5120,
    "processes": [],  # [{"pid": int, "used_mib": float | None}]
    "unsupported": (),  # any of: name uuid memory memory_v2 utilization max_clock bus_width processes processes_v3
}

#: One H200 (143,771 MiB total; 3201 MHz × 6144 bit). The reserved figure is a guess.
H200: dict[str, Any] = {
    **H100_80GB,
    "name": "NVIDIA H200",
    "uuid": "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "memory_total_mib": 143771,
    "memory_reserved_mib": 580,
    "max_memory_clock_mhz": 3201,
    "memory_bus_width_bits": 6144,
}


class _Handle:
    """Stands in for c_nvmlDevice_t (an opaque pointer in the real module)."""

    def __init__(self, index: int):
        self.index = index

    def __repr__(self):
        return f"<fake nvmlDevice {self.index}>"


class FakePynvml:
    """Use an instance wherever `pynvml` the module is expected (`nvml=` arguments).

    gpus: list of dicts shaped like H100_80GB (missing keys come from H100_80GB).
    library_found=False: nvmlInit raises NVMLError_LibraryNotFound (no driver).
    init_error: an NVML error code that nvmlInit raises instead (e.g. DRIVER_NOT_LOADED).
    names_as_bytes: return bytes from string getters, like pynvml < 11.515.
    process_names: pid -> name for nvmlSystemGetProcessName.
    """

    def __init__(self, gpus: list[dict[str, Any]] | None = None, *, library_found: bool = True,
                 init_error: int | None = None, driver_version: str = "550.54.15",
                 names_as_bytes: bool = False, process_names: dict[int, str] | None = None):
        self.gpus = [{**H100_80GB, **g} for g in copy.deepcopy(gpus or [])]
        self.library_found = library_found
        self.init_error = init_error
        self.driver_version = driver_version
        self.names_as_bytes = names_as_bytes
        self.process_names = dict(process_names or {})
        self.refcount = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        #: Per-index NVML error code raised by every device getter (e.g. GPU_IS_LOST).
        self.broken: dict[int, int] = {}

    # -- test helpers
    def set_gpu(self, index: int, **changes: Any) -> None:
        self.gpus[index].update(changes)

    def _str(self, s: str) -> str | bytes:
        return s.encode() if self.names_as_bytes else s

    def _check_init(self) -> None:
        if self.refcount <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: _Handle, feature: str) -> dict[str, Any]:
        self._check_init()
        if not isinstance(handle, _Handle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.index in self.broken:
            raise NVMLError(self.broken[handle.index])
        gpu = self.gpus[handle.index]
        if feature in gpu.get("unsupported", ()):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    # -- library
    def nvmlInit(self) -> None:
        if not self.library_found:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.init_calls += 1
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.shutdown_calls += 1
        self.refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check_init()
        return self._str(self.driver_version)

    def nvmlSystemGetProcessName(self, pid: int) -> str | bytes:
        self._check_init()
        if pid not in self.process_names:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return self._str(self.process_names[pid])

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    # -- device getters
    def nvmlDeviceGetName(self, handle: _Handle) -> str | bytes:
        return self._str(self._gpu(handle, "name")["name"])

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str | bytes:
        return self._str(self._gpu(handle, "uuid")["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> SimpleNamespace:
        gpu = self._gpu(handle, "memory")
        total = int(gpu["memory_total_mib"] * MIB)
        used = int(gpu["memory_used_mib"] * MIB)
        reserved = int(gpu.get("memory_reserved_mib", 0) * MIB)
        if not version:
            # v1: "used" includes what the driver reserved.
            return SimpleNamespace(total=total, free=total - used - reserved, used=used + reserved)
        if "memory_v2" in gpu.get("unsupported", ()):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        return SimpleNamespace(version=version, total=total, reserved=reserved,
                               free=total - used - reserved, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> SimpleNamespace:
        gpu = self._gpu(handle, "utilization")
        return SimpleNamespace(gpu=gpu["utilization_gpu_pct"], memory=gpu["utilization_memory_pct"])

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, type: int) -> int:
        gpu = self._gpu(handle, "max_clock")
        if type == NVML_CLOCK_MEM:
            return gpu["max_memory_clock_mhz"]
        if type in (NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM):
            return 1980
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetMemoryBusWidth(self, device: _Handle) -> int:
        return self._gpu(device, "bus_width")["memory_bus_width_bits"]

    def _procs(self, gpu: dict[str, Any]) -> list[SimpleNamespace]:
        out = []
        for p in gpu.get("processes", []):
            used = p.get("used_mib")
            out.append(SimpleNamespace(pid=p["pid"], usedGpuMemory=None if used is None else int(used * MIB),
                                       gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF))
        return out

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: _Handle) -> list[SimpleNamespace]:
        return self._procs(self._gpu(handle, "processes"))

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: _Handle) -> list[SimpleNamespace]:
        gpu = self._gpu(handle, "processes")
        if "processes_v3" in gpu.get("unsupported", ()):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._procs(gpu)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[SimpleNamespace]:
        # pynvml wraps _v3 in throwOnVersionMismatch.
        try:
            return self.nvmlDeviceGetComputeRunningProcesses_v3(handle)
        except NVMLError_FunctionNotFound:  # noqa: F821 (generated above)
            raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not "
                                           "match the NVML lib version.") from None


# Module-level names a caller reads from `pynvml` (error classes, NVML_* constants) are
# also attributes of the fake, so `nvml.NVMLError_NotSupported` works on an instance.
for _name, _value in list(globals().items()):
    if _name.startswith(("NVMLError", "NVML_")) or _name in ("NVMLLibraryMismatchError", "nvmlMemory_v2"):
        setattr(FakePynvml, _name, _value)
del _name, _value


# ---- presets ------------------------------------------------------------------------------
def no_library() -> FakePynvml:
    """A machine with no NVIDIA driver: nvmlInit raises NVMLError_LibraryNotFound."""
    return FakePynvml([], library_found=False)


def zero_gpus() -> FakePynvml:
    """A driver that sees no GPU (e.g. a container without --gpus)."""
    return FakePynvml([])


def one_h100(**changes: Any) -> FakePynvml:
    """One idle H100 80GB HBM3 (81,559 MiB)."""
    return FakePynvml([{**H100_80GB, **changes}])


def two_h200(**changes: Any) -> FakePynvml:
    """Two idle H200s (143,771 MiB each), as on the lent 2×H200 machine."""
    return FakePynvml([{**H200, **changes}, {**H200, "uuid": "GPU-ffffffff-0000-1111-2222-333333333333", **changes}])
