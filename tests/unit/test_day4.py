"""Day 4 steps with fakes: the balance check (worker RSS on CPU, NVML on GPU, the fix when
unbalanced), the bench step against the fake streaming server (rows, a dead server), the
metrics interpretation, the TP crash diagnosis, PLAN in `run_day`, and day4.md."""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from lab.checklist import days, seeds
from lab.commands import run_day, run_step_task, terminal
from lab.core.errors import LabError, ServerDied
from lab.record.logbook import FAIL, PASS, PENDING, SKIPPED
from lab.record.plan import Planned, run_plan
from lab.record.runner import Outcome, check, require, skip
from lab.record.session import Lab
from lab.record.values import (
    BalanceDevice,
    BalanceValues,
    BenchMetrics,
    BenchValues,
    ClientTotals,
    CompareTpValues,
    KvUsage,
    LatencyStats,
    LevelSummary,
    MetricsDelta,
    ServerMeans,
    SweepPlan,
    TpSide,
)
from lab.vllm import process as server
from tests.fakes import fake_pynvml
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer, free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SMALL_BENCH = {"concurrency": "1,2", "num_requests": "6", "input_len": "8", "output_len": "5",
               "warmup": "1", "latency_runs": "2", "latency_max_tokens": "4"}


def make_lab(tmp_path, profile="cpu", port=8000, **cfg) -> Lab:
    out = io.StringIO()
    lab = Lab.from_config({"profile": profile, "logbook_dir": str(tmp_path / "logbook"),
                           "port": str(port), "bench": dict(SMALL_BENCH), **cfg},
                          console=Console(file=out, width=200, highlight=False))
    lab.out = out
    return lab


def fake_state(tp=2, model="fake-model") -> server.ServerState:
    return server.ServerState(pid=999999, pgid=999999, host="127.0.0.1", port=8000, model=model,
                              log_path="/nonexistent.log", started_at=time.time(), argv=[], tp=tp)


@pytest.fixture
def running(monkeypatch):
    """A recorded TP=2 server (state only): steps that need one find it."""
    state = fake_state()
    monkeypatch.setattr(server, "require_running", lambda path: state)
    monkeypatch.setattr(server, "is_alive", lambda st: True)
    return state


def step_row(lab, key):
    return next(s for s in reversed(lab.book.steps(lab.book.runs()[-1]["id"])) if s["key"] == key)


# -- the day's shape ------------------------------------------------------------------
def test_day4_module_has_the_shape_of_a_day():
    day4 = seeds.DAY4
    keys = [s.key for s in day4.steps]
    assert set(days.FUNCS["day4"]) == set(keys)
    assert "compare" in keys and "compare" not in day4.plan and "compare-tp" not in day4.plan
    assert day4.plan == ["gpus", "download", "serve", "balance", "api-test", "bench", "metrics"]
    assert seeds.day4_plan(compare_tp=True) == [*day4.plan, "compare-tp"]
    assert set(day4.needs) <= set(keys) and {n for ns in day4.needs.values() for n in ns} <= set(keys)
    assert {a.step for a in day4.acceptance} <= set(keys)
    assert seeds.DAYS["day4"].title_zh.startswith("Day 4")


# -- balance --------------------------------------------------------------------------
def test_balance_on_cpu_measures_tp_worker_rss_and_says_so(tmp_path, monkeypatch, running):
    from lab.measure import procstats
    monkeypatch.setattr(procstats, "vllm_workers", lambda pid: [
        {"pid": 11, "title": "VLLM::Worker_TP0", "rss_mib": 1750.0},
        {"pid": 12, "title": "VLLM::Worker_TP1", "rss_mib": 1770.0}])
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "balance") == 0
    row = step_row(lab, "balance")
    assert row["status"] == SKIPPED and row["fix"] is None
    gpu = next(c for c in row["criteria"] if c["key"] == "spread_pct")
    assert gpu["status"] == SKIPPED and gpu["reason"] == "no NVIDIA GPU: CPU profile"
    crit = next(c for c in row["criteria"] if c["key"] == "worker_rss_spread_pct")
    assert crit["status"] == PASS
    assert "RSS" in crit["label_en"] and "not GPU memory" in crit["label_en"]
    assert crit["measured"] == pytest.approx(1.13, abs=0.01)
    assert row["values"].source == "process_rss" and row["values"].on_cpu
    assert [d.pid for d in row["values"].devices] == [11, 12]
    assert "not GPU memory" in row["actual"]
    md = (lab.logbook_dir / "day4.md").read_text()
    assert "不是显存" in md
    # The seed's criterion is GPU memory: skipped on CPU, never ticked from RSS.
    assert "- [ ] 两张卡显存占用均衡（误差 < 10%） — ⏭️ 跳过：no NVIDIA GPU: CPU profile（CPU 配置：两个 TP worker 进程的 RSS 相差 " in md


def test_unbalanced_cpu_workers_fail_with_a_fix(tmp_path, monkeypatch, running):
    from lab.measure import procstats
    monkeypatch.setattr(procstats, "vllm_workers", lambda pid: [
        {"pid": 11, "title": "VLLM::Worker_TP0", "rss_mib": 2000.0},
        {"pid": 12, "title": "VLLM::Worker_TP1", "rss_mib": 1000.0}])
    lab = make_lab(tmp_path, lang="en")
    assert run_step_task(lab, "day4", "balance") == 1
    row = step_row(lab, "balance")
    assert row["status"] == FAIL and "VLLM_CPU_OMP_THREADS_BIND" in row["fix"]
    assert "fix:" in lab.out.getvalue()


def test_unbalanced_gpus_put_diagnose_balance_fix_in_the_step(tmp_path, monkeypatch, running):
    H200 = fake_pynvml.H200
    nv = fake_pynvml.FakePynvml([{**H200, "memory_used_mib": 130000},
                                 {**H200, "uuid": "GPU-2", "memory_used_mib": 90000}])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lab = make_lab(tmp_path, profile="gpu", lang="en")
    assert run_step_task(lab, "day4", "balance") == 1
    row = step_row(lab, "balance")
    assert row["status"] == FAIL
    assert "CUDA_VISIBLE_DEVICES" in row["fix"]          # seed Q2, from lab.vllm.diagnose
    assert "GPU0 uses more" in row["evidence"]
    assert row["values"].source == "nvml" and row["values"].gpu_memory
    assert [d.used_mib for d in row["values"].devices] == [130000, 90000]


def test_balanced_gpus_pass(tmp_path, monkeypatch, running):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml.two_h200(memory_used_mib=133443))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lab = make_lab(tmp_path, profile="gpu")
    assert run_step_task(lab, "day4", "balance") == 0
    assert step_row(lab, "balance")["values"].spread_pct == 0.0


def test_balance_needs_a_tp2_server(tmp_path, monkeypatch):
    from lab.measure import procstats
    monkeypatch.setattr(server, "require_running", lambda path: fake_state(tp=1))
    monkeypatch.setattr(procstats, "vllm_workers", lambda pid: [])
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "balance") == 1
    assert "invoke serve --tp 2" in step_row(lab, "balance")["reason"]


# -- a TP=2 start that crashes: the fix is printed and recorded ---------------------------
def test_failed_tp2_start_prints_the_enforce_eager_fix(tmp_path):
    log = FIXTURES / "h200x2_tp2_cuda_graph_crash.log"
    lab = make_lab(tmp_path, lang="en")

    def start(lab_, ctx):
        argv = [sys.executable, "-c",
                f"import sys; sys.stdout.write(open({str(log)!r}).read()); sys.exit(1)"]
        state = server.start(argv, log_path=tmp_path / "server.log", state_path=lab_.state_path,
                             port=free_port(), tp=2)
        server.wait_ready(state, 30, poll_s=0.1)
        raise AssertionError("the fake server must die")

    plan = [Planned(seeds.DAY4.spec("serve"), start)]
    _, results = run_plan(lab, "day4", plan, task="serve", stop_after=True, **terminal(lab))
    assert results[0].status == FAIL and "--enforce-eager" in results[0].fix
    assert "--enforce-eager" in lab.out.getvalue()
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in step_row(lab, "serve")["evidence"]


# -- bench --------------------------------------------------------------------------------
def test_bench_step_records_every_request_and_a_summary(tmp_path, monkeypatch, running):
    with FakeServer(FakeConfig(first_token_s=0.01, itl_s=0.002)) as fake:
        lab = make_lab(tmp_path, port=fake.port)
        assert run_step_task(lab, "day4", "bench") == 0
    row = step_row(lab, "bench")
    assert row["status"] == PASS
    reqs = lab.book.requests(row["id"])
    assert len(lab.book.requests(row["id"], "latency")) == 2
    sweep = lab.book.requests(row["id"], "sweep")
    assert len(sweep) == 2 * (1 + 6) and sum(r["warmup"] for r in sweep) == 2
    assert all(r["ok"] for r in reqs)
    v = row["values"]
    assert isinstance(v, BenchValues) and v.plan.levels == [1, 2] and v.plan.output_tokens == 5
    assert [lvl.concurrency for lvl in v.levels] == [1, 2]
    assert all(lvl.completed == 6 and lvl.output_tok_s for lvl in v.levels)
    assert v.latency.seed_output["avg_latency_ms"] > 0 and v.client.requests == 2 + 14
    assert "c=1:" in row["actual"] and "0 failed, 0 timeouts" in row["actual"]
    md = (lab.logbook_dir / "day4.md").read_text()
    assert "avg_latency_ms" in md and "| 2 | 6/0/0 |" in md
    assert "- [x] 完成性能基准测试" in md


def test_bench_server_dying_fails_the_step_and_keeps_the_partial_rows(tmp_path, monkeypatch):
    state = fake_state()
    monkeypatch.setattr(server, "require_running", lambda path: state)
    with FakeServer(FakeConfig(first_token_s=0.01, itl_s=0.004, die_after=4)) as fake:
        monkeypatch.setattr(server, "is_alive", lambda st: not fake.app.dead)
        monkeypatch.setattr(server, "died_error", lambda st, during: ServerDied(
            f"vLLM server exited {during}; last log lines below", evidence="(log)"))
        lab = make_lab(tmp_path, port=fake.port, lang="en")
        assert run_step_task(lab, "day4", "bench") == 1
    row = step_row(lab, "bench")
    assert row["status"] == FAIL
    assert row["reason"].startswith("vLLM server exited during the benchmark (level c=1)")
    assert "finished requests kept" in row["reason"]
    sweep = lab.book.requests(row["id"], "sweep")
    ok = [r for r in sweep if r["ok"]]
    assert ok and len(sweep) == 2 * 6 + 1             # every planned request has a row
    assert all(r["error"] for r in sweep if not r["ok"])
    assert row["values"].died_during == "level c=1"  # partial results kept in the record
    assert "Traceback" not in lab.out.getvalue()


def test_bench_rejects_bad_options_before_any_request(tmp_path):
    with pytest.raises(LabError, match="bench concurrency must be"):
        make_lab(tmp_path, bench={**SMALL_BENCH, "concurrency": "4,0"})


# -- metrics interpretation ------------------------------------------------------------------
def _record_bench(lab, values, day="day4"):
    run = lab.book.start_run(day, task="bench", profile="cpu")
    sid = lab.book.start_step(run, "bench", title="bench", command="", expected="")
    lab.book.end_step(sid, status=PASS, values=values)
    lab.book.end_run(run, PASS)
    return sid


def test_metrics_step_explains_the_benchmark_deltas(tmp_path, monkeypatch, running):
    from lab.vllm import metrics
    text = (FIXTURES / "metrics_vllm_0_32.txt").read_text()
    monkeypatch.setattr(metrics, "scrape", lambda *a, **kw: text)
    lab = make_lab(tmp_path)
    sid = _record_bench(lab, BenchValues(
        client=ClientTotals(requests=10, ok=10, failed=0, output_tokens=640, prompt_tokens=320),
        metrics=BenchMetrics(delta=MetricsDelta(requests_finished=10.0, generation_tokens=640.0,
                                                prompt_tokens=320.0, preemptions=0.0,
                                                mean_queue_time_s=0.0001),
                             kv=KvUsage(peak_kv_usage_frac=0.2, samples=4, interval_s=0.5))))
    assert run_step_task(lab, "day4", "metrics") == 0
    row = step_row(lab, "metrics")
    crits = {c["key"]: c for c in row["criteria"]}
    assert crits["bench_deltas"]["status"] == PASS and crits["tokens_match"]["status"] == PASS
    assert row["values"].bench_step_id == sid and row["values"].delta.generation_tokens == 640.0
    md = (lab.logbook_dir / "day4.md").read_text()
    assert "关键指标解读" in md and "没有请求被抢占" in md and "KV Cache 最高用了 20.00%" in md
    assert "- [x] 能解读关键性能指标" in md


def test_metrics_step_ignores_a_benchmark_of_an_earlier_server(tmp_path, monkeypatch, running):
    from lab.vllm import metrics
    monkeypatch.setattr(metrics, "scrape", lambda *a, **kw: (FIXTURES / "metrics_vllm_0_32.txt").read_text())
    lab = make_lab(tmp_path)
    _record_bench(lab, BenchValues(
        client=ClientTotals(requests=1, ok=1, failed=0, output_tokens=64),
        metrics=BenchMetrics(delta=MetricsDelta(requests_finished=1.0, generation_tokens=64.0))))
    running.started_at = time.time() + 1   # the server running now started after that bench
    assert run_step_task(lab, "day4", "metrics") == 1
    assert "run `invoke bench` first" in step_row(lab, "metrics")["reason"]


def test_metrics_step_without_a_benchmark_fails_with_one_line(tmp_path, monkeypatch, running):
    from lab.vllm import metrics
    monkeypatch.setattr(metrics, "scrape", lambda *a, **kw: (FIXTURES / "metrics_vllm_0_32.txt").read_text())
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "metrics") == 1
    assert "run `invoke bench` first" in step_row(lab, "metrics")["reason"]


# -- the whole day: PLAN, pending steps, acceptance, day4.md ---------------------------------
def _stub_funcs(monkeypatch, calls):
    def stub(key, crits, values=None):
        def fn(lab, ctx, **kw):
            calls.append(key)
            return Outcome(crits(lab), f"{key} measured", values)
        return fn
    reason = "no NVIDIA GPU: CPU profile"
    funcs = {
        "gpus": stub("gpus", lambda lab: [skip("free_gpus", "g", "g", reason)]),
        "download": stub("download", lambda lab: [skip("files_verified", "d", "d", "cpu profile "
                                                        "builds its model offline: no download")]),
        "serve": stub("serve", lambda lab: [check("ready_s", "r", "r", 50.0, "<", 900),
                                            skip("tp_gpus", "t", "t", reason)]),
        "balance": stub("balance", lambda lab: [check("spread_pct", "b", "b", 1.0, "<", 10)],
                        BalanceValues(source="process_rss", devices=[
                            BalanceDevice("VLLM::Worker_TP0", 1.0, 1), BalanceDevice("VLLM::Worker_TP1", 1.0, 2)],
                            max_mib=1.0, min_mib=1.0, spread_pct=0.0, threshold_pct=10.0)),
        "api-test": stub("api-test", lambda lab: [require("chat_200", "c", "c", True)]),
        "bench": stub("bench", lambda lab: [require("levels", "l", "l", True)]),
        "metrics": stub("metrics", lambda lab: [require("key_series", "k", "k", True)]),
        "compare-tp": stub("compare-tp", lambda lab: [require("tp1", "t", "t", True)]),
        "compare": stub("compare", lambda lab: [require("x", "x", "x", True)]),
    }
    monkeypatch.setitem(days.FUNCS, "day4", funcs)


def test_run_day_honours_plan_and_renders_steps_not_run_as_pending(tmp_path, monkeypatch):
    calls = []
    _stub_funcs(monkeypatch, calls)
    lab = make_lab(tmp_path)
    assert run_day(lab, "day4") == 0
    assert calls == seeds.DAY4.plan                       # compare and compare-tp not run
    run_id = lab.book.runs()[-1]["id"]
    assert [s["key"] for s in lab.book.steps(run_id)] == seeds.DAY4.plan
    md = (lab.logbook_dir / "day4.md").read_text()
    assert "步骤 7：对比 vLLM vs HuggingFace" in md
    assert "⏳ 待执行（本次未运行：运行 `invoke compare`）" in md
    assert "运行 `invoke day4 --compare-tp`" in md
    assert "- [ ] 双卡 14B 模型成功部署 — ⏭️ 跳过：no NVIDIA GPU: CPU profile" in md
    assert "- [x] 完成性能基准测试" in md
    # the seed's layout: morning, afternoon, evening
    assert md.index("上午：双卡张量并行") < md.index("下午：性能对比测试") < md.index("晚上：监控与日志")

    calls.clear()
    assert run_day(lab, "day4", keys=seeds.day4_plan(compare_tp=True)) == 0
    assert calls == [*seeds.DAY4.plan, "compare-tp"]


def test_run_day_without_plan_runs_every_step(tmp_path, monkeypatch):
    calls = []
    _stub_funcs(monkeypatch, calls)
    import dataclasses
    monkeypatch.setitem(seeds.DAYS, "day4", dataclasses.replace(seeds.DAY4, plan=None))
    assert run_day(make_lab(tmp_path), "day4") == 0
    assert calls == [s.key for s in seeds.DAY4.steps]


def test_a_failed_serve_leaves_the_rest_pending(tmp_path, monkeypatch):
    calls = []
    _stub_funcs(monkeypatch, calls)
    funcs = dict(days.FUNCS["day4"])
    funcs["serve"] = lambda lab, ctx, **kw: (_ for _ in ()).throw(ServerDied("vLLM server exited during startup"))
    monkeypatch.setitem(days.FUNCS, "day4", funcs)
    lab = make_lab(tmp_path)
    assert run_day(lab, "day4") == 1
    steps = {s["key"]: s for s in lab.book.steps(lab.book.runs()[-1]["id"])}
    assert steps["serve"]["status"] == FAIL
    assert steps["balance"]["status"] == PENDING and steps["metrics"]["status"] == PENDING


def test_compare_tp_renders_side_by_side_with_the_learner_sentence(tmp_path):
    lab = make_lab(tmp_path)

    def side(tp, thr, tpot, ready_s, kv):
        return TpSide(tp, LevelSummary(
            output_tok_s=thr, requests_per_s=1.0, completed=8, failed=0,
            ttft_ms=LatencyStats(median=20.0), tpot_ms=LatencyStats(median=tpot),
            e2el_ms=LatencyStats(median=500.0),
            server=ServerMeans(mean_tpot_ms=tpot, mean_ttft_ms=19.0)), ready_s, kv)
    plan = SweepPlan([1], 128, 128, 8, 1, None, 3, "p", 256)
    values = CompareTpValues(concurrency=1, profile="gpu", plan=plan,
                             sides=[side(2, 33.5, 29.1, 150.0, 1212160),
                                    side(1, 113.5, 8.73, 84.0, 526576)])
    assert values.ratios.output_tok_s == pytest.approx(33.5 / 113.5)
    run = lab.book.start_run("day4", task="day4", profile="gpu")
    sid = lab.book.start_step(run, "compare-tp", title="x", command="", expected="")
    lab.book.end_step(sid, status=PASS, values=values)
    from lab.commands import records
    from lab.deliver import day_log
    md = day_log.render_day(records(lab), "day4", "zh", lab.logbook_dir).read_text()
    assert "| 输出吞吐 tok/s | 33.50 | 113.50 | 0.30× |" in md
    assert "GPU 多了，每个 token 并不会自动变快" in md
    assert "TP=2 的 TPOT（服务端均值）是 TP=1 的 3.33×" in md
    en = day_log.render_day(records(lab), "day4", "en", lab.logbook_dir).read_text()
    assert "more GPUs do not make each token faster" in en


def test_bad_bench_option_on_the_command_line_is_one_line(tmp_path):
    import subprocess
    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "INVOKE_LAB_LOGBOOK_DIR": str(tmp_path / "lb"),
           "INVOKE_LAB_PROFILE": "cpu"}
    for args, message in ((["bench", "--concurrency", "1,0"], "bench concurrency must be"),
                          (["day4", "--input-len", "4000"], "exceeds max-model-len"),
                          (["day4", "--duration", "-1"], "bench duration (s) must be at least")):
        proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not (tmp_path / "lb" / "lab.db").exists()   # rejected before any work started


def test_stop_after_the_api_server_died_ends_its_orphaned_engine(tmp_path):
    """vLLM's EngineCore and TP workers rename themselves with setproctitle, which erases
    their environment (and the tag): after a mid-benchmark death they are found by session."""
    import os
    import signal as sig

    import psutil
    child = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'VLLM::EngineCor', 0, 0, 0); "
             "time.sleep(120)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}], env={{}}); "
              "print('child', p.pid, flush=True); time.sleep(120)")
    state_path = tmp_path / "server.json"
    state = server.start([sys.executable, "-c", parent], log_path=tmp_path / "s.log",
                         state_path=state_path, port=free_port())
    deadline = time.monotonic() + 20
    while "child" not in (tmp_path / "s.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int((tmp_path / "s.log").read_text().split()[1])
    time.sleep(0.3)                                   # let the child set its title
    assert psutil.Process(child_pid).environ().get(server.TAG_ENV) is None
    os.kill(state.pid, sig.SIGKILL)                   # the API server dies
    server._POPENS[state.pid].wait(5)
    assert child_pid in server.stop(state_path, grace_s=5)
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
