"""`invoke day5` and `invoke compare` on the CPU profile with real vLLM (and real
transformers for the HF baseline), as a user runs them; asserts on the logbook rows and the
rendered markdown. Small sizes keep them quick on a 2-core machine."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from integration.conftest import invoke, logged_steps, vllm_processes
from lab.record.values import CompareValues, MemoryValues, OfflineValues

pytestmark = pytest.mark.vllm


@pytest.fixture
def env_ready(lab_env):
    """The CPU vLLM env exists (installed once by the real `invoke install`)."""
    proc = invoke(["install"], lab_env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return lab_env


def rows(lab_env: dict, key: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    db.row_factory = sqlite3.Row
    return db.execute("select * from steps where key = ? order by id", [key]).fetchall()


def test_day5_offline_batches_blocks_and_params(lab_env):
    proc = invoke(["day5", "--batch-sizes", "1,4", "--max-tokens", "16"], lab_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out

    off = logged_steps(lab_env, "offline")[-1]
    assert off["status"] == "pass", off
    v = off["values"]
    assert isinstance(v, OfflineValues) and v.profile == "cpu"
    assert [b.batch_size for b in v.batches] == [1, 4]
    for b in v.batches:
        assert b.ok and b.output_tokens > 0 and b.output_tok_s > 0 and b.time_s > 0
    assert len(v.example.requests) == 3
    assert v.engine.num_gpu_blocks > 0 and v.engine.block_size > 0
    assert v.startup.kv_cache_tokens == v.engine.num_gpu_blocks * v.engine.block_size

    kv = rows(lab_env, "kv-cache")[-1]
    assert kv["status"] == "pass", dict(kv)
    mem = rows(lab_env, "memory")[-1]
    assert (mem["status"], mem["reason"]) == ("skipped", "no NVIDIA GPU: CPU profile")
    mem_values = logged_steps(lab_env, "memory")[-1]["values"]
    assert isinstance(mem_values, MemoryValues) and mem_values.peak_tree_rss_mib > 0
    assert rows(lab_env, "params")[-1]["status"] == "pass"

    md = (Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "day5.md").read_text()
    assert "步骤 2：离线推理示例与 batch size 测试" in md
    assert f"| 4 | {v.batches[1].time_s:.3f} |" in md
    assert f"{v.engine.num_gpu_blocks:,}" in md
    assert "CPU 配置没有显存：记录的是离线推理进程树" in md
    assert "- [x] 成功运行vLLM离线推理示例" in md and "- [x] 每个 batch size 记录了 tok/s" in md
    assert "- [ ] 记录显存占用（nvidia-smi） — ⏭️ 跳过：no NVIDIA GPU: CPU profile" in md
    assert "待记录" not in md
    assert not vllm_processes(lab_env)  # the engine processes ended with the script


def _check_compare(lab_env: dict, source: str) -> CompareValues:
    row = logged_steps(lab_env, "compare")[-1]
    assert row["status"] == "pass", row
    v = row["values"]
    assert isinstance(v, CompareValues)
    assert v.source == source and v.profile == "cpu" and not v.on_gpu and v.inputs_identical
    for s in (v.hf, v.vllm):
        assert s.output_tok_s > 0 and s.samples_per_min > 0 and s.latency_s > 0
        assert s.peak_mem_mib > 0 and s.mem_basis
        assert s.output_tokens == 4 * 8   # the same prompts, the same token count
    assert v.hf.prompt_tokens == v.vllm.prompt_tokens
    assert v.speedup.throughput_x == pytest.approx(v.vllm.output_tok_s / v.hf.output_tok_s)
    assert v.speedup.latency_x == pytest.approx(v.hf.latency_s / v.vllm.latency_s)
    assert v.cost.unit == "CPU-minutes"
    assert row["actual"].startswith("CPU profile (not GPU figures)")
    db = sqlite3.connect(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    phases = dict(db.execute("select phase, count(*) from requests where step_id = ? "
                             "and warmup = 0 group by phase", [row["id"]]).fetchall())
    assert phases == {"compare-hf": 4, "compare-vllm": 4}
    md = (Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "day4.md").read_text()
    assert f"{v.vllm.output_tok_s:,.1f} tok/s (CPU)" in md
    assert f"{v.hf.output_tok_s:,.1f} tok/s (CPU)" in md
    return v


def test_compare_offline_measures_both_sides(env_ready):
    proc = invoke(["compare", "--num-prompts", "4", "--max-new-tokens", "8", "--batch-size", "2",
                   "--source", "offline"], env_ready)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    v = _check_compare(env_ready, "offline")
    assert v.vllm.latency_basis == "engine timestamps"
    assert v.startup.kv_cache_tokens > 0
    assert not vllm_processes(env_ready)


def test_compare_uses_the_running_server(env_ready):
    served = invoke(["serve"], env_ready)
    try:
        assert served.returncode == 0, (served.stdout + served.stderr)[-3000:]
        proc = invoke(["compare", "--num-prompts", "4", "--max-new-tokens", "8", "--batch-size", "2"],
                      env_ready)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert "Traceback" not in out
        v = _check_compare(env_ready, "server")
        assert v.vllm.latency_basis == "E2EL (streamed)" and v.startup is None
    finally:
        invoke(["stop"], env_ready, timeout_s=120)
    assert not vllm_processes(env_ready)
