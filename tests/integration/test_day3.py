"""`invoke day3` on the CPU profile, against a real vLLM server, as a user runs it."""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from integration.conftest import invoke, logged_steps, vllm_processes
from lab.record.values import ApiTestValues, MonitorValues, ServeValues

pytestmark = pytest.mark.vllm


def test_day3_runs_verifies_records_and_renders(lab_env):
    proc = invoke(["day3", "--duration", "8"], lab_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out

    logbook = Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"])
    db = sqlite3.connect(logbook / "lab.db")
    db.row_factory = sqlite3.Row
    steps = {r["key"]: r for r in db.execute("select * from steps")}
    assert list(steps) == ["gpus", "install", "tools", "download", "serve", "monitor", "api-test", "metrics"]
    # GPU-only criteria are skipped with their reason, never passed.
    for key in ("gpus", "monitor"):
        assert steps[key]["status"] == "skipped", dict(steps[key])
        assert steps[key]["reason"] == "no NVIDIA GPU: CPU profile"
    assert steps["download"]["status"] == "skipped"      # the cpu profile builds its model
    assert "builds its model offline" in steps["download"]["reason"]
    for key in ("install", "tools", "serve", "api-test", "metrics"):
        assert steps[key]["status"] == "pass", dict(steps[key])
    assert db.execute("select status from runs").fetchone()[0] == "pass"

    serve = steps["serve"]
    assert "vllm.entrypoints.openai.api_server" in serve["command"]
    typed = {s["key"]: s["values"] for s in logged_steps(lab_env)}
    values = typed["serve"]
    assert isinstance(values, ServeValues) and db.execute(
        "select value_type from steps where key = 'serve'").fetchone()[0] == "ServeValues"
    assert values.ready_s > 0 and values.profile == "cpu" and values.tp == 1
    assert values.kv_cache_tokens > 0          # from vllm:cache_config_info
    assert values.max_concurrency_x > 0
    # monitor drove a real load and sampled the server's processes
    mon = typed["monitor"]
    assert isinstance(mon, MonitorValues) and mon.on_cpu and mon.peak_rss_mib > 0
    assert mon.load.completed > 0 and mon.load.failed == 0
    assert db.execute("select count(*) from samples where field = 'rss_mib'").fetchone()[0] > 0
    api = typed["api-test"]
    assert isinstance(api, ApiTestValues)
    assert api.completion_tokens > 0 and api.stream.chunks > 0 and api.output_tok_s > 0
    assert {r.name for r in typed["metrics"].series if r.present} >= {"vllm:kv_cache_usage_perc"}

    md = (logbook / "day3.md").read_text()
    assert "步骤 5：单卡部署 7B 模型" in md
    assert f"{values.kv_cache_tokens:,}" in md   # the measured figure, rendered
    assert "待记录" not in md                      # every step has its actual result
    assert "- [x] vLLM 服务成功启动" in md
    assert "- [x] API 请求返回正常响应" in md
    assert re.search(r"- \[ \] GPU 利用率 > 80% — ⏭️ 跳过：no NVIDIA GPU: CPU profile", md)
    # no vLLM process is left behind
    assert not vllm_processes(lab_env)
    assert not (logbook / "server.json").exists()

    # the log renders again from the database, in English
    again = invoke(["log", "--lang", "en"], lab_env, timeout_s=120)
    assert again.returncode == 0, again.stderr
    assert "Step 4" in (logbook / "day3.md").read_text()
