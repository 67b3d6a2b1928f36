"""Day 4 on the CPU profile against real vLLM: TP=2 serving of the tiny model, the balance
check on worker RSS, a small benchmark, TP=1 vs TP=2, and a server killed mid-benchmark.
Kept small (few requests, short prompts): the box has 2 cores shared with other servers."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.conftest import ROOT, invoke, logged_steps, vllm_processes
from lab.record.values import (
    ApiTestValues,
    BalanceValues,
    BenchValues,
    CompareTpValues,
    MetricsValues,
    ServeValues,
)

pytestmark = pytest.mark.vllm

SMALL = ["--concurrency", "1,4", "--num-requests", "8", "--input-len", "32", "--output-len", "32",
         "--warmup", "1", "--latency-runs", "3"]


def _db(env) -> sqlite3.Connection:
    db = sqlite3.connect(Path(env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db", timeout=30)
    db.row_factory = sqlite3.Row
    return db


def test_day4_tp2_balance_bench_metrics_and_compare_tp(lab_env):
    proc = invoke(["day4", "--compare-tp", *SMALL], lab_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out

    db = _db(lab_env)
    steps = {r["key"]: r for r in db.execute("select * from steps")}
    assert list(steps) == ["gpus", "download", "serve", "balance", "api-test", "bench", "metrics", "compare-tp"]
    for key in ("gpus", "serve", "balance"):   # GPU-only criteria: skipped, never passed
        assert steps[key]["status"] == "skipped", dict(steps[key])
        assert steps[key]["reason"] == "no NVIDIA GPU: CPU profile"
    for key in ("api-test", "bench", "metrics", "compare-tp"):
        assert steps[key]["status"] == "pass", dict(steps[key])

    typed = {s["key"]: s["values"] for s in logged_steps(lab_env)}
    serve = typed["serve"]
    assert isinstance(serve, ServeValues) and serve.tp == 2 and len(serve.tp_workers) == 2
    assert "--tensor-parallel-size 2" in steps["serve"]["command"]
    assert "VLLM_CPU_OMP_THREADS_BIND='0|1'" in steps["serve"]["command"]

    bal = typed["balance"]
    assert isinstance(bal, BalanceValues) and bal.source == "process_rss" and bal.on_cpu
    rss = next(c for c in json.loads(steps["balance"]["criteria"]) if c["key"] == "worker_rss_spread_pct")
    assert rss["status"] == "pass"
    assert [d.device for d in bal.devices] == ["VLLM::Worker_TP0", "VLLM::Worker_TP1"]
    assert all(d.used_mib > 100 for d in bal.devices) and bal.spread_pct < 10

    api = typed["api-test"]
    assert isinstance(api, ApiTestValues)
    assert api.prompt == "写一首关于春天的诗" and api.max_tokens == 512
    assert api.completion_tokens > 0 and api.output_tok_s > 0

    bench_id = steps["bench"]["id"]
    phases = dict(db.execute("select phase, count(*) from requests where step_id = ? group by phase",
                             [bench_id]).fetchall())
    assert phases == {"latency": 3, "sweep": 2 * (1 + 8)}
    assert db.execute("select count(*) from requests where step_id = ? and ok = 0",
                      [bench_id]).fetchone()[0] == 0
    bench = typed["bench"]
    assert isinstance(bench, BenchValues) and bench.plan.levels == [1, 4]
    assert [lvl.concurrency for lvl in bench.levels] == [1, 4]
    assert all(lvl.output_tok_s > 0 and lvl.total_output_tokens == 8 * 32
               for lvl in bench.levels)
    assert bench.metrics.delta.requests_finished == bench.client.requests
    assert bench.metrics.kv.samples > 0

    met = typed["metrics"]
    assert isinstance(met, MetricsValues) and met.bench_step_id == bench_id
    assert met.delta.generation_tokens == bench.client.output_tokens
    assert met.delta.preemptions == 0

    cmp = typed["compare-tp"]
    assert isinstance(cmp, CompareTpValues) and [s.tp for s in cmp.sides] == [2, 1]
    assert all(s.summary.completed == 8 for s in cmp.sides) and cmp.ratios.output_tok_s > 0
    tps = [r[0] for r in db.execute("select tp from servers order by id")]
    assert tps == [2, 1]                       # the TP=2 server of `serve`, then TP=1

    md = (Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "day4.md").read_text()
    assert "### 上午：双卡张量并行" in md and "待记录" not in md
    assert "⏳ 待执行（本次未运行：运行 `invoke compare`）" in md
    assert "- [ ] 双卡 14B 模型成功部署 — ⏭️ 跳过：no NVIDIA GPU: CPU profile" in md
    # The seed's criterion is GPU memory: skipped on CPU, never ticked from RSS.
    assert "- [ ] 两张卡显存占用均衡（误差 < 10%） — ⏭️ 跳过：no NVIDIA GPU: CPU profile（CPU 配置：两个 TP worker 进程的 RSS 相差 " in md
    assert "- [x] 完成性能基准测试" in md and "- [x] 能解读关键性能指标" in md
    assert "GPU 多了，每个 token 并不会自动变快" in md
    assert f"{bench.levels[1].output_tok_s:,.2f}" in md    # a measured figure, rendered
    assert "没有请求被抢占：KV Cache 一直够用" in md                  # explained from the figures
    assert not vllm_processes(lab_env)
    assert not (Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "server.json").exists()


def test_server_killed_mid_benchmark_keeps_finished_requests(lab_env):
    logbook = Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"])
    served = invoke(["serve", "--tp", "2"], lab_env)
    assert served.returncode == 0, (served.stdout + served.stderr)[-3000:]
    try:
        balance = invoke(["balance"], lab_env, timeout_s=120)
        assert balance.returncode == 0, balance.stdout + balance.stderr
        assert "TP worker RSS (not GPU memory)" in balance.stdout

        bench = subprocess.Popen(
            [sys.executable, "-m", "invoke", "bench", "--concurrency", "2", "--num-requests", "400",
             "--input-len", "32", "--output-len", "64", "--warmup", "0", "--latency-runs", "1"],
            cwd=ROOT, env=lab_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:   # wait until some sweep requests have finished
            time.sleep(1)
            if (logbook / "lab.db").exists() and _db(lab_env).execute(
                    "select count(*) from requests where phase = 'sweep' and ok = 1").fetchone()[0] >= 4:
                break
        state = json.loads((logbook / "server.json").read_text())
        os.kill(state["pid"], signal.SIGKILL)  # the server we started dies mid-benchmark
        out, err = bench.communicate(timeout=300)
    finally:
        invoke(["stop"], lab_env, timeout_s=120)

    assert bench.returncode == 1, out + err
    assert "Traceback" not in out + err
    assert "during the benchmark (level c=2)" in out
    db = _db(lab_env)
    step = db.execute("select * from steps where key = 'bench'").fetchone()
    assert step["status"] == "fail"
    assert "during the benchmark (level c=2)" in step["reason"] and "finished requests kept" in step["reason"]
    ok, failed = db.execute("select sum(ok), sum(1 - ok) from requests where step_id = ? and phase = 'sweep'",
                            [step["id"]]).fetchone()
    assert ok >= 4 and failed > 0 and ok + failed == 400   # every request has a row
    kept = logged_steps(lab_env, "bench")[-1]["values"]
    assert isinstance(kept, BenchValues) and kept.died_during == "level c=2"   # what was measured is kept
    assert not vllm_processes(lab_env)
    # the orphaned engine core and TP workers (setproctitle erased their environment) are gone
    assert not _session_members(state["pgid"])


def _session_members(sid: int) -> list:
    import psutil
    alive = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except (ProcessLookupError, PermissionError):
            continue
    return alive
