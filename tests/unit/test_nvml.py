"""lab.measure.nvml against the fake pynvml (and, where present, the real one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so `tests.fakes` imports under plain `pytest` too
    sys.path.insert(0, str(ROOT))

from lab.core.errors import LabError, NvmlUnavailable  # noqa: E402
from lab.core.units import balance  # noqa: E402
from lab.measure import nvml  # noqa: E402
from tests.fakes import fake_pynvml as fake  # noqa: E402

# ---------------------------------------------------------------- unavailable NVML


def test_no_library_gives_one_clear_line():
    nv = fake.no_library()
    with pytest.raises(NvmlUnavailable) as info:
        nvml.query_gpus(nv)
    assert str(info.value) == "NVML unavailable: no NVIDIA driver found (NVMLError_LibraryNotFound)"
    assert "\n" not in str(info.value)
    assert info.value.fix and "cpu profile" in info.value.fix
    assert isinstance(info.value, LabError)
    assert nvml.nvml_available(nv) == (False, str(info.value))
    with pytest.raises(NvmlUnavailable):
        nvml.gpu_count(nv)
    with pytest.raises(NvmlUnavailable):
        nvml.sample_gpus(nvml=nv)


@pytest.mark.parametrize("code, words", [
    (fake.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded (NVMLError_DriverNotLoaded)"),
    (fake.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "(NVMLError_LibRmVersionMismatch)"),
    (fake.NVML_ERROR_NO_PERMISSION, "no permission"),
])
def test_init_errors_are_named(code, words):
    nv = fake.FakePynvml([fake.H100_80GB], init_error=code)
    ok, reason = nvml.nvml_available(nv)
    assert not ok
    assert reason.startswith("NVML unavailable: ") and words in reason


def test_missing_nvidia_ml_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    ok, reason = nvml.nvml_available()
    assert not ok
    assert reason in ("NVML unavailable: nvidia-ml-py is not installed (ImportError)",
                      "NVML unavailable: nvidia-ml-py is not installed (ModuleNotFoundError)")


def _real_nvml_works() -> bool:
    return nvml.nvml_available()[0]


@pytest.mark.skipif(_real_nvml_works(), reason="this machine has a working NVIDIA driver")
def test_real_pynvml_without_driver():
    """The installed nvidia-ml-py, on a machine without libnvidia-ml.so.1."""
    ok, reason = nvml.nvml_available()
    assert not ok
    assert reason == "NVML unavailable: no NVIDIA driver found (NVMLError_LibraryNotFound)"


@pytest.mark.skipif(not _real_nvml_works(), reason="no NVIDIA driver here")
def test_real_pynvml_with_driver():
    gpus = nvml.query_gpus()
    assert len(gpus) == nvml.gpu_count() >= 1
    for g in gpus:
        assert isinstance(g.name, str) and g.memory_total_mib > 0
        assert g.memory_used_mib <= g.memory_total_mib
        json.dumps(g.as_dict())
    rows = nvml.sample_gpus()
    assert [r["device"] for r in rows] == [str(g.index) for g in gpus]


# ---------------------------------------------------------------- presets


def test_zero_gpus():
    nv = fake.zero_gpus()
    assert nvml.query_gpus(nv) == []
    assert nvml.gpu_count(nv) == 0
    assert nvml.nvml_available(nv) == (True, "driver 550.54.15, 0 GPU(s)")
    assert nvml.sample_gpus(nvml=nv) == []


def test_one_h100_fields():
    nv = fake.one_h100(memory_used_mib=76735, utilization_gpu_pct=97, utilization_memory_pct=88,
                       processes=[{"pid": os.getpid(), "used_mib": 76200.0}])
    (g,) = nvml.query_gpus(nv)
    assert g.index == 0
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert g.uuid.startswith("GPU-")
    assert g.memory_total_mib == 81559
    assert g.memory_used_mib == 76735
    assert g.memory_reserved_mib == 480
    # nvmlMemory_v2, like nvidia-smi: used + free + reserved = total
    assert g.memory_used_mib + g.memory_free_mib + g.memory_reserved_mib == pytest.approx(81559)
    assert g.memory_used_pct == pytest.approx(76735 / 81559 * 100)
    assert (g.utilization_gpu_pct, g.utilization_memory_pct) == (97, 88)
    assert g.driver_version == "550.54.15"
    assert g.processes == [nvml.GpuProcess(pid=os.getpid(), name=psutil.Process().name(), used_mib=76200.0)]
    assert g.unsupported == []
    # 2619 MHz × 5120 bit × 2 / 8 = 3,352,320 MB/s
    assert g.peak_memory_bandwidth_gbps == pytest.approx(3352.32)
    assert nvml.nvml_available(nv) == (True, "driver 550.54.15, 1 GPU(s)")


def test_two_h200_and_balance():
    nv = fake.two_h200(memory_used_mib=133443)
    gpus = nvml.query_gpus(nv)
    assert [g.index for g in gpus] == [0, 1]
    assert {g.name for g in gpus} == {"NVIDIA H200"}
    assert gpus[0].uuid != gpus[1].uuid
    assert gpus[0].memory_total_mib == 143771
    assert gpus[0].peak_memory_bandwidth_gbps == pytest.approx(4917.0, abs=0.5)
    assert balance([g.memory_used_mib for g in gpus]) == {
        "n": 2, "max": 133443.0, "min": 133443.0, "spread_pct": 0.0}
    assert nvml.gpu_count(nv) == 2


def test_as_dict_is_json_ready():
    nv = fake.one_h100(processes=[{"pid": 4242424, "used_mib": None}])
    d = nvml.query_gpus(nv)[0].as_dict()
    text = json.dumps(d)
    assert '"peak_memory_bandwidth_gbps"' in text and '"memory_used_pct"' in text
    assert d["processes"] == [{"pid": 4242424, "name": None, "used_mib": None}]


# ---------------------------------------------------------------- API differences


def test_unsupported_fields_become_none_and_are_listed():
    nv = fake.one_h100(unsupported=("utilization", "max_clock", "bus_width", "processes", "uuid"))
    (g,) = nvml.query_gpus(nv)
    assert g.utilization_gpu_pct is None and g.utilization_memory_pct is None
    assert g.max_memory_clock_mhz is None and g.memory_bus_width_bits is None
    assert g.peak_memory_bandwidth_gbps is None
    assert g.uuid is None
    assert g.processes == []
    assert g.memory_total_mib == 81559  # the rest still read
    labels = {u.split(":")[0] for u in g.unsupported}
    assert labels == {"utilization", "max_memory_clock", "memory_bus_width", "processes", "uuid"}
    assert "utilization: Not Supported" in g.unsupported
    row = nvml.sample_gpus(nvml=nv)[0]
    assert row["util_pct"] is None and row["mem_used_mib"] == 0.0


def test_memory_v1_fallback_when_driver_lacks_v2():
    nv = fake.one_h100(memory_used_mib=1000, unsupported=("memory_v2",))
    (g,) = nvml.query_gpus(nv)
    assert g.memory_reserved_mib is None
    assert g.memory_used_mib == 1480  # v1's used includes the reserved 480 MiB
    assert g.memory_used_mib + g.memory_free_mib == pytest.approx(81559)


def test_memory_v1_fallback_for_old_pynvml_signature():
    class OldPynvml(fake.FakePynvml):
        def nvmlDeviceGetMemoryInfo(self, handle):  # no `version` argument
            return super().nvmlDeviceGetMemoryInfo(handle)

    nv = OldPynvml([{**fake.H100_80GB, "memory_used_mib": 1000}])
    assert nvml.query_gpus(nv)[0].memory_used_mib == 1480


def test_processes_fall_back_to_v2_on_library_mismatch():
    nv = fake.one_h100(unsupported=("processes_v3",), processes=[{"pid": 4242424, "used_mib": 512}])
    with pytest.raises(fake.NVMLLibraryMismatchError):
        nv.nvmlInit()
        try:
            nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(0))
        finally:
            nv.nvmlShutdown()
    (g,) = nvml.query_gpus(nv)
    assert [(p.pid, p.used_mib) for p in g.processes] == [(4242424, 512.0)]
    assert g.unsupported == []


def test_process_name_falls_back_to_nvml_then_none():
    nv = fake.FakePynvml([{**fake.H100_80GB, "processes": [{"pid": 4242424, "used_mib": 1}, {"pid": 4242425, "used_mib": 1}]}],
                         process_names={4242424: "/usr/bin/python3"})
    names = [p.name for p in nvml.query_gpus(nv)[0].processes]
    assert names == ["python3", None]  # the host pid is not visible to psutil


def test_bytes_names_from_old_pynvml():
    nv = fake.FakePynvml([fake.H100_80GB], names_as_bytes=True)
    (g,) = nvml.query_gpus(nv)
    assert g.name == "NVIDIA H100 80GB HBM3" and isinstance(g.name, str)
    assert isinstance(g.uuid, str) and g.driver_version == "550.54.15"
    assert nvml.nvml_available(nv) == (True, "driver 550.54.15, 1 GPU(s)")


def test_missing_function_in_old_pynvml():
    class NoBusWidth(fake.FakePynvml):
        nvmlDeviceGetMemoryBusWidth = None

    (g,) = nvml.query_gpus(NoBusWidth([fake.H100_80GB]))
    assert g.memory_bus_width_bits is None
    assert "memory_bus_width: not in this pynvml" in g.unsupported


# ---------------------------------------------------------------- init/shutdown


def test_every_call_shuts_down_what_it_inits():
    nv = fake.two_h200()
    nvml.query_gpus(nv)
    nvml.gpu_count(nv)
    nvml.nvml_available(nv)
    nvml.sample_gpus(nvml=nv)
    assert nv.refcount == 0
    assert nv.init_calls == nv.shutdown_calls == 4


def test_lost_gpu_fails_cleanly_and_still_shuts_down():
    nv = fake.two_h200()
    nv.broken[1] = fake.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(NvmlUnavailable) as info:
        nvml.query_gpus(nv)
    assert str(info.value) == "NVML query failed (GPU 1): GPU is lost (NVMLError_GpuIsLost)"
    with pytest.raises(NvmlUnavailable, match="GpuIsLost"):
        nvml.sample_gpus(nvml=nv)
    assert nv.refcount == 0


def test_session_keeps_nvml_initialised():
    nv = fake.one_h100()
    with nvml.nvml_session(nv) as inside:
        assert inside is nv and nv.refcount == 1
        nvml.sample_gpus(nvml=nv)
        nvml.sample_gpus(nvml=nv)
        assert nv.refcount == 1
    assert nv.refcount == 0
    assert nv.init_calls == 3


# ---------------------------------------------------------------- sampling and balance


def test_sample_gpus_rows():
    nv = fake.two_h200()
    nv.set_gpu(1, memory_used_mib=120000, utilization_gpu_pct=95, utilization_memory_pct=70)
    rows = nvml.sample_gpus(nvml=nv)
    assert [r["device"] for r in rows] == ["0", "1"]
    r = rows[1]
    assert set(r) == {"t", "source", "device", "mem_used_mib", "mem_total_mib", "util_pct", "mem_util_pct"}
    assert r["source"] == "nvml"
    assert (r["mem_used_mib"], r["mem_total_mib"], r["util_pct"], r["mem_util_pct"]) == (120000, 143771, 95, 70)
    assert rows[0]["t"] == rows[1]["t"] and abs(r["t"] - __import__("time").time()) < 5
    only = nvml.sample_gpus([1], nvml=nv)
    assert [x["device"] for x in only] == ["1"]
    with pytest.raises(NvmlUnavailable):
        nvml.sample_gpus([5], nvml=nv)


def test_lab_imports_no_heavy_modules():
    code = ("import sys, lab.measure.nvml, lab.measure.procstats, lab.measure.sampler; "
            "print([m for m in ('vllm', 'torch', 'transformers', 'pynvml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
