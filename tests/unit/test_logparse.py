"""lab.vllm.logparse on real log excerpts (tests/fixtures/*.log; each file says where it comes from)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from lab.core.text import clean_lines
from lab.core.text import tail_text as tail
from lab.vllm.logparse import StartupFacts, parse_startup, parse_startup_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_h100_7b_vllm_0_26_numbers_from_design_md():
    facts = parse_startup(read("vllm_0_26_h100_7b_startup.log"))
    assert facts.kv_cache_tokens == 1_041_472
    assert facts.kv_cache_device == "GPU"
    assert facts.max_concurrency_x == pytest.approx(508.53)
    assert facts.max_concurrency_for_tokens == 2048
    assert facts.model_load_gib == pytest.approx(14.29)
    assert facts.model_load_s == pytest.approx(3.25)
    assert facts.engine_init_s == pytest.approx(143.38)
    # Not in this excerpt: stays None, never a default.
    assert facts.compile_s is None
    assert facts.gpu_blocks is None
    assert facts.vllm_version is None
    assert facts.app_startup_complete is False
    assert "1,041,472" in facts.evidence["kv_cache_tokens"]


def test_cpu_vllm_0_32_banner_merged_kv_line_and_startup():
    facts = parse_startup(read("vllm_0_32_cpu_startup.log"))
    assert facts.vllm_version == "0.32.0"
    assert facts.served_model == "/work/main/models/tiny-qwen2"
    assert facts.kv_cache_device == "CPU"
    assert facts.kv_cache_tokens == 1_048_576
    assert facts.max_concurrency_x == pytest.approx(512.0)
    assert facts.max_concurrency_for_tokens == 2048
    assert facts.engine_init_s == pytest.approx(24.61)
    assert facts.compile_s == pytest.approx(9.87)
    assert facts.app_startup_complete is True
    # The CPU model runner prints no "Model loading took" line.
    assert facts.model_load_gib is None and facts.model_load_s is None


def test_empty_or_unrelated_log_gives_no_numbers():
    facts = parse_startup(read("port_in_use.log"))
    for f in fields(StartupFacts):
        if f.name == "evidence":
            assert getattr(facts, f.name) == {}
        elif f.name == "app_startup_complete":
            assert facts.app_startup_complete is False
        else:
            assert getattr(facts, f.name) is None, f.name


def test_gpu_0_32_merged_line_with_thousands_separators():
    line = (
        "(EngineCore pid=1) INFO 11-21 18:00:00 [kv_cache_utils.py:2327] GPU KV cache size: "
        "1,212,160 tokens, Maximum concurrency for 32,768 tokens per request: 36.99x"
    )
    facts = parse_startup(line)
    assert facts.kv_cache_tokens == 1_212_160
    assert facts.max_concurrency_for_tokens == 32_768
    assert facts.max_concurrency_x == pytest.approx(36.99)


@pytest.mark.parametrize(
    "line, gib, seconds",
    [
        # vLLM 0.32 gpu_model_runner.py: "Model loading took %s GiB memory and %.6f seconds"
        ("Model loading took 0.93 GiB memory and 1.234567 seconds", 0.93, 1.234567),
        # older V1: "Model loading took %.4f GiB and %.6f seconds"
        ("Model loading took 14.2853 GiB and 3.250000 seconds", 14.2853, 3.25),
    ],
)
def test_model_loading_wording_variants(line, gib, seconds):
    facts = parse_startup(f"(EngineCore_DP0 pid=9) INFO 11-21 10:00:00 [gpu_model_runner.py:1] {line}")
    assert facts.model_load_gib == pytest.approx(gib)
    assert facts.model_load_s == pytest.approx(seconds)


def test_compile_lines_and_graph_capture():
    text = "\n".join(
        [
            "(Worker_TP0 pid=1) INFO 11-21 10:00:00 [monitor.py:68] torch.compile takes 23.41 s in total",
            "(Worker_TP1 pid=2) INFO 11-21 10:00:00 [monitor.py:68] torch.compile takes 23.10 s in total",
            "(Worker_TP0 pid=1) INFO 11-21 10:00:10 [gpu_model_runner.py:6582] "
            "Graph capturing finished in 12 secs, took 0.56 GiB",
        ]
    )
    facts = parse_startup(text)
    # TP ranks overlap in time: the largest, not the sum.
    assert facts.compile_s == pytest.approx(23.41)
    assert facts.graph_capture_s == pytest.approx(12)
    assert facts.graph_capture_gib == pytest.approx(0.56)


def test_gpu_blocks_forms():
    assert parse_startup("INFO 03-01 10:00:00 executor_base.py:110] # GPU blocks: 2029, # CPU blocks: 512").gpu_blocks == 2029
    debug = "DEBUG 11-21 [loggers.py:350] Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: 8192"
    assert parse_startup(debug).gpu_blocks == 8192


def test_cpu_kv_cache_gib_line():
    line = "INFO 11-21 [cpu_worker.py:260] Explicitly set (1.0/7.76) GiB for KV cache on node 0."
    assert parse_startup(line).cpu_kv_cache_gib == pytest.approx(1.0)


def test_plain_banner_and_older_banner():
    assert parse_startup("INFO [api_utils.py:327] vLLM server version 0.32.0, serving model m").vllm_version == "0.32.0"
    assert parse_startup("INFO 11-21 api_server.py:712] vLLM API server version 0.6.3.post1").vllm_version == "0.6.3.post1"


def test_coloured_banner_is_read():
    coloured = "INFO [api_utils.py:347]  \x1b[93m\u2584\u2584\x1b[0m \x1b[1m\u2588 \u2580\u2584\u2580 \u2588\x1b[0m  version \x1b[1m0.32.0\x1b[0m"
    assert parse_startup(coloured).vllm_version == "0.32.0"


def test_last_of_several_appended_starts_wins():
    first = read("vllm_0_32_cpu_startup.log")
    second = "\n".join(
        [
            "(APIServer pid=2) INFO 11-21 [api_utils.py:327] vLLM server version 0.32.1, serving model other",
            "(EngineCore pid=3) INFO 11-21 [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens, "
            "Maximum concurrency for 4,096 tokens per request: 512.00x",
        ]
    )
    facts = parse_startup(first + "\n" + second)
    assert facts.vllm_version == "0.32.1"
    assert facts.kv_cache_tokens == 2_097_152
    # The second start has not printed these yet: not carried over from the first.
    assert facts.engine_init_s is None
    assert facts.app_startup_complete is False


def test_crlf_continuation_lines_are_split():
    lines = clean_lines("a\r\nb\rc\n")
    assert lines == ["a", "b", "c"]


def test_parse_startup_file_and_tail(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(read("vllm_0_26_h100_7b_startup.log"), encoding="utf-8")
    assert parse_startup_file(log).kv_cache_tokens == 1_041_472
    assert parse_startup_file(log, max_bytes=200).engine_init_s == pytest.approx(143.38)
    assert tail(read("port_in_use.log"), 1) == "OSError: [Errno 98] Address already in use"


def test_to_dict_is_plain():
    d = parse_startup(read("vllm_0_32_cpu_startup.log")).to_dict()
    assert d["kv_cache_tokens"] == 1_048_576 and isinstance(d["evidence"], dict)
