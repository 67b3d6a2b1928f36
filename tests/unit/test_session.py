"""lab.record.session.Lab: the resolved options, the profile (what to serve, with which
environment), the logbook and the server's command line that steps share."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from lab.core.errors import ConfigError
from lab.record.logbook import MIGRATIONS, RUNNING
from lab.record.session import Lab, detect_profile
from lab.vllm.models import REHEARSAL_CONFIGS, TINY_MODEL
from tests.fakes import fake_pynvml


def make_lab(tmp_path, **cfg) -> Lab:
    base = {"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"),
            "data_dir": str(tmp_path / "data")}
    return Lab.from_config({**base, **cfg}, console=Console(file=io.StringIO()))


def test_detect_profile_reads_nvml():
    assert detect_profile(fake_pynvml.two_h200()) == ("gpu", "NVML found a GPU")
    name, why = detect_profile(fake_pynvml.FakePynvml(library_found=False))
    assert name == "cpu" and why


def test_places_and_options(tmp_path):
    lab = make_lab(tmp_path, port="8123", lang="en", api_key="")
    assert lab.lang == "en" and lab.url == "http://127.0.0.1:8123"
    assert lab.api_key is None                         # an empty key is no key
    assert lab.logbook_dir == tmp_path / "logbook" and lab.data_dir == tmp_path / "data"
    assert not lab.has_gpu and lab.no_gpu_reason() == "no NVIDIA GPU: CPU profile"
    assert make_lab(tmp_path, profile="rehearsal").has_gpu
    with pytest.raises(ConfigError):
        make_lab(tmp_path, profile="tpu")


def test_the_book_is_migrated_and_recovers_a_dead_writer(tmp_path):
    lab = make_lab(tmp_path)
    run = lab.book.start_run("day3")
    step = lab.book.start_step(run, "serve", title="t", command="c", expected="")
    lab.book.db["runs"].update(run, {"pid": 2**22 + 12345})   # a writer that is gone
    lab.book.close()
    again = make_lab(tmp_path)
    assert again.book.schema_version == len(MIGRATIONS)
    assert again.book.step(step)["status"] != RUNNING            # marked interrupted on open


def test_cpu_profile_serves_the_tiny_model_with_its_kv_cache_space(tmp_path):
    lab = make_lab(tmp_path, cpu={"kvcache_space_gib": "2"})
    prof = lab.profile("day3")
    assert prof.name == "cpu" and not prof.has_gpu
    assert prof.model == str(tmp_path / "data" / "models" / TINY_MODEL)
    assert prof.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    # TP > 1 on CPU binds one core list per rank (else "Not enough allowed NUMA nodes")
    assert lab.profile("day4", tp=2).env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert lab.profile("day3", model="/models/other").model == "/models/other"


def test_gpu_and_rehearsal_profiles(tmp_path):
    gpu = make_lab(tmp_path, profile="gpu")
    assert gpu.profile("day4").model == gpu.cfg["models"]["day4"] and gpu.profile("day3").has_gpu
    reh = make_lab(tmp_path, profile="rehearsal")
    wanted = next(iter(REHEARSAL_CONFIGS))
    prof = reh.profile("day3", model=wanted)
    assert prof.load_format == "dummy" and prof.served_model_name == wanted
    assert prof.model.endswith(f"rehearsal-{REHEARSAL_CONFIGS[wanted]}")
    with pytest.raises(ConfigError, match="no shipped rehearsal config"):
        reh.profile("day3", model="org/unknown-model")


def test_serve_argv_has_the_options_and_the_extra_args(tmp_path):
    lab = make_lab(tmp_path, port="8001", max_model_len="1024", api_key="sk-x",
                   extra_args="--enforce-eager --max-num-seqs 8")
    argv = lab.serve_argv(lab.profile("day3"), tp=2, extra=["--dtype", "half"])
    assert argv[0] == str(lab.env.python) and "vllm.entrypoints.openai.api_server" in argv
    joined = " ".join(argv)
    assert "--port 8001" in joined and "--max-model-len 1024" in joined
    assert "--tensor-parallel-size 2" in joined and "--api-key sk-x" in joined
    assert argv[-5:] == ["--dtype", "half", "--enforce-eager", "--max-num-seqs", "8"]
    assert "--gpu-memory-utilization" not in argv      # the CPU backend ignores it
    assert lab.extra_args() == ["--enforce-eager", "--max-num-seqs", "8"]


def test_from_config_resolves_auto_by_nvml(tmp_path, monkeypatch):
    import lab.record.session as session
    monkeypatch.setattr(session, "detect_profile", lambda nvml_module=None: ("cpu", "no NVML"))
    assert make_lab(tmp_path, profile="auto").profile_name == "cpu"
