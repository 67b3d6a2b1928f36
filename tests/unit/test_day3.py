"""The Day 3 step modules (lab/checklist/steps: gpus, tools, serve, monitor, api_test,
metrics) with fakes: each records its typed values, judges only what it measured, and
day3.md renders them."""
from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from lab.commands import run_step_task
from lab.record.logbook import FAIL, PASS, SKIPPED
from lab.record.session import Lab
from lab.record.values import (
    ApiTestValues,
    GpusValues,
    MetricsValues,
    MonitorValues,
    ServeValues,
    ToolsValues,
)
from lab.vllm import process as server
from tests.fakes import fake_pynvml
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer, free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FAKE_VLLM = ROOT / "tests" / "fakes" / "fake_vllm_server.py"


def make_lab(tmp_path, profile="cpu", port=8000, **cfg) -> Lab:
    out = io.StringIO()
    lab = Lab.from_config({"profile": profile, "logbook_dir": str(tmp_path / "logbook"),
                           "data_dir": str(tmp_path / "data"), "port": str(port), **cfg},
                          console=Console(file=out, width=200, highlight=False))
    return lab


def last(lab: Lab, key: str) -> dict:
    return [s for s in lab.book.steps() if s["key"] == key][-1]


def running_state(port: int, pid: int | None = None) -> server.ServerState:
    return server.ServerState(pid=pid or os.getpid(), pgid=0, host="127.0.0.1", port=port,
                              model="fake-model", log_path="/nonexistent.log",
                              started_at=time.time(), argv=[], tp=1)


# -- gpus -------------------------------------------------------------------------------
def test_gpus_on_the_cpu_profile_is_skipped_with_nvmls_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml.FakePynvml([], init_error="NVMLError_LibraryNotFound"))
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day3", "gpus") == 0
    row = last(lab, "gpus")
    assert row["status"] == SKIPPED and row["reason"] == "no NVIDIA GPU: CPU profile"
    assert isinstance(row["values"], GpusValues) and row["values"].gpus == []
    assert row["values"].nvml_error.startswith("NVML unavailable")


def test_gpus_records_each_gpu_and_counts_the_free_ones(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml.two_h200(memory_used_mib=133000))
    lab = make_lab(tmp_path, profile="gpu", lang="en")
    assert run_step_task(lab, "day3", "gpus") == 1        # 143 GiB H200s, 133 GiB used: < 16 free
    row = last(lab, "gpus")
    v = row["values"]
    assert isinstance(v, GpusValues) and len(v.gpus) == 2 and v.free_gpus == 0
    assert v.gpus[0].name.startswith("NVIDIA H200") and v.gpus[0].peak_memory_bandwidth_gbps
    assert row["status"] == FAIL
    md = (lab.logbook_dir / "day3.md").read_text()
    assert "| 0 | NVIDIA H200" in md and "Driver:" in md


# -- tools ------------------------------------------------------------------------------
def test_tools_finds_nvitop_in_the_vllm_env_and_records_its_version(tmp_path):
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    for name, line in (("nvitop", "nvitop 1.5.3"), ("gpustat", "gpustat 1.1.1")):
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho '{line}'\n")
        script.chmod(0o755)
    lab = make_lab(tmp_path, python=str(bindir / "python"))
    assert run_step_task(lab, "day3", "tools") == 0
    v = last(lab, "tools")["values"]
    assert isinstance(v, ToolsValues) and v.versions == {"nvitop": "nvitop 1.5.3",
                                                         "gpustat": "gpustat 1.1.1"}
    assert v.paths["nvitop"] == str(bindir / "nvitop")


# -- api-test, metrics, monitor against a fake server --------------------------------------
@pytest.fixture
def fake(monkeypatch):
    with FakeServer(FakeConfig(first_token_s=0.005, itl_s=0.001)) as srv:
        state = running_state(srv.port)
        monkeypatch.setattr(server, "require_running", lambda path: state)
        monkeypatch.setattr(server, "is_alive", lambda st: True)
        yield srv


def test_api_test_records_the_reply_usage_and_judges_the_stream(tmp_path, fake):
    """The chat reply, /v1/models and a streamed reply, each judged from what was measured."""
    lab = make_lab(tmp_path, port=fake.port)
    assert run_step_task(lab, "day3", "api-test") == 0
    row = last(lab, "api-test")
    v = row["values"]
    assert isinstance(v, ApiTestValues) and v.prompt == "你好，请介绍一下你自己"
    assert v.reply and v.completion_tokens > 0 and v.output_tok_s > 0 and v.latency_s > 0
    assert v.models == ["fake-model"] and v.stream.chunks > 0 and v.stream.ttft_s > 0
    crits = {c["key"]: c["status"] for c in row["criteria"]}
    assert crits == dict.fromkeys(("chat_200", "content", "usage", "models", "stream"), PASS)
    md = (lab.logbook_dir / "day3.md").read_text()
    assert "模型回复（不可信文本，已转义）" in md and "| /v1/models | fake-model |" in md


def test_metrics_records_the_key_series_and_explains_them_at_render(tmp_path, fake, monkeypatch):
    from lab.vllm import metrics
    monkeypatch.setattr(metrics, "scrape",
                        lambda *a, **kw: (FIXTURES / "metrics_vllm_0_32.txt").read_text())
    lab = make_lab(tmp_path, port=fake.port, lang="en")
    assert run_step_task(lab, "day3", "metrics") == 0
    v = last(lab, "metrics")["values"]
    assert isinstance(v, MetricsValues) and v.vllm_series > 0 and v.bench_step_id is None
    assert all(r.present for r in v.series) and len(v.series) == len(metrics.KEY_SERIES)
    assert {o.old_name for o in v.old_names} == set(metrics.OLD_NAMES)
    md = (lab.logbook_dir / "day3.md").read_text()
    # meanings come from lab.explain at render time, in the render's language
    assert "Fraction of KV-cache blocks in use" in md and "`vllm:gpu_cache_usage_perc`" in md
    assert "in the V1 engine (old name deprecated by vLLM PR #18354)" in md


def test_monitor_on_cpu_samples_the_process_tree_under_a_load(tmp_path, fake):
    lab = make_lab(tmp_path, port=fake.port, monitor={"duration_s": "1", "interval_s": "0.2",
                                                      "concurrency": "2", "input_len": "8",
                                                      "output_len": "4"})
    assert run_step_task(lab, "day3", "monitor") == 0
    row = last(lab, "monitor")
    v = row["values"]
    assert row["status"] == SKIPPED                      # the GPU criteria: skipped, never passed
    assert isinstance(v, MonitorValues) and v.on_cpu and v.peak_rss_mib > 0
    assert v.load.completed > 0 and v.load.failed == 0 and v.load.output_tok_s > 0
    assert v.workload.input_tokens == 8 and v.sampler.samples > 0
    assert {s.field for s in v.summary} >= {"rss_mib"}
    assert lab.book.samples(row["id"])


# -- serve against the fake vLLM server ----------------------------------------------------
def test_serve_records_what_the_start_cost_in_the_step_and_the_servers_row(tmp_path, monkeypatch):
    from lab.vllm import env as vllm_env
    from lab.vllm import metrics
    from tests.fakes.fake_vllm_scripts import make_model
    make_model(tmp_path / "data")
    port = free_port()
    monkeypatch.setattr(vllm_env.VllmEnv, "probe", lambda self, timeout_s=300: {"vllm": "0.32.0"})
    monkeypatch.setattr(Lab, "serve_argv", lambda self, prof, tp=1, extra=None: [
        sys.executable, str(FAKE_VLLM), "--host", "127.0.0.1", "--port", str(port),
        "--startup-s", "0.2"])
    monkeypatch.setattr(metrics, "scrape",
                        lambda *a, **kw: (FIXTURES / "metrics_vllm_0_32.txt").read_text())
    lab = make_lab(tmp_path, port=port, lang="en")
    try:
        assert run_step_task(lab, "day3", "serve") == 0
    finally:
        server.stop(lab.state_path)
    row = last(lab, "serve")
    v = row["values"]
    assert isinstance(v, ServeValues) and v.ready_s > 0 and v.tp == 1 and v.profile == "cpu"
    assert v.kv_cache_tokens and v.block_size and v.model_built is False
    (srv,) = lab.book.servers()
    assert srv["step_id"] == row["id"] and srv["facts"] == v    # the servers row holds the same
    md = (lab.logbook_dir / "day3.md").read_text()
    assert f"{v.kv_cache_tokens:,} tokens" in md
