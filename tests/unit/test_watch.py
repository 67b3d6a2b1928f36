"""lab.vllm.watch: fatal log lines, process exits and startup phases, on fixtures and on
tests/fakes/fake_vllm_server.py (the 2×H200 crash signature, then a hang)."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from lab.core.errors import ServerDied
from lab.vllm import diagnose, watch
from lab.vllm import process as server
from tests.fakes.fake_openai_stream import free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FAKE = ROOT / "tests" / "fakes" / "fake_vllm_server.py"


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# -- fatal lines ------------------------------------------------------------------------
@pytest.mark.parametrize("line", [
    "(Worker_TP1 pid=3) ERROR 11-21 15:20:03 [multiproc_executor.py:671] WorkerProc hit an exception.",
    "(EngineCore_DP0 pid=2) ERROR 11-21 15:20:04 [core.py:1510] EngineCore failed to start.",
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    "(Worker_TP1 pid=3) ERROR 11-21 15:20:03 [x.py:1] gemm_and_bias error: CUBLAS_STATUS_EXECUTION_FAILED",
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
    "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:317",
    "(EngineCore pid=9) ERROR 12-07 16:17:14 [multiproc_executor.py:1] Worker proc VllmWorker-1 died unexpectedly, shutting down executor.",
])
def test_fatal_lines(line):
    assert diagnose.is_fatal(line)


def test_healthy_starts_and_traceback_code_have_no_fatal_line():
    for name in ("vllm_0_26_h100_7b_startup.log", "vllm_0_32_cpu_startup.log"):
        assert not [ln for ln in read(name).splitlines() if diagnose.is_fatal(ln)], name
    assert not diagnose.is_fatal('    raise RuntimeError("Engine core initialization failed. See root cause above.")')
    assert not diagnose.is_fatal("# gemm_and_bias error: CUBLAS_STATUS_EXECUTION_FAILED")
    # The capture hint every healthy older start prints is not an OOM.
    assert not diagnose.is_fatal(read("cuda_oom_cudagraph.log").splitlines()[2])


def test_line_time_reads_vllms_stamp_else_when_seen():
    now = time.time()
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(now - 5))
    assert abs(watch.line_time(f"(W pid=1) ERROR {stamp} [x.py:1] boom", now) - (now - 5)) < 1.01
    assert watch.line_time("no stamp here", now) == now


# -- phases -----------------------------------------------------------------------------
def test_phases_of_a_gpu_start_in_order_with_graph_progress():
    tracker = watch.PhaseTracker()
    lines = [
        "(Worker_TP0 pid=1) INFO 11-21 14:02:20 [gpu_model_runner.py:1] Starting to load model /m...",
        "(Worker_TP0 pid=1) INFO 11-21 14:02:58 [gpu_model_runner.py:2] Model loading took 14.29 GiB and 3.25 seconds",
        "(Worker_TP0 pid=1) INFO 11-21 14:03:10 [backends.py:1] Dynamo bytecode transform time: 5.1 s",
        "(Worker_TP0 pid=1) INFO 11-21 14:03:40 [monitor.py:1] torch.compile took 23.00 s in total",
        "(EngineCore pid=2) INFO 11-21 14:05:21 [kv_cache_utils.py:1087] GPU KV cache size: 1,041,472 tokens",
        "(Worker_TP0 pid=1) Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  12%|█ | 8/67 [00:01<00:09]",
        "(Worker_TP0 pid=1) Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|█ | 30/67 [00:03<00:04]",
        "(Worker_TP1 pid=3) INFO 11-21 14:02:59 [gpu_model_runner.py:2] Model loading took 14.29 GiB and 3.25 seconds",
        "(EngineCore pid=2) INFO 11-21 14:05:40 [core.py:210] init engine (profile, create kv cache, warmup model) took 143.38 s",
        "(APIServer pid=0) INFO:     Application startup complete.",
    ]
    for i, line in enumerate(lines):
        tracker.feed(line, 100.0 + i)
    keys = [p.key for p in tracker.phases]
    assert keys == ["loading", "profiling", "compiling", "kv_cache", "cuda_graphs", "api_server", "ready"]
    graphs = tracker.phases[4]
    assert graphs.detail == "30/67" and graphs.duration_s() == 3.0  # 105 -> 108
    assert tracker.phases[3].detail == "1,041,472 tokens"
    assert "capturing CUDA graphs 30/67" in watch.PhaseTracker.describe(_at(tracker, 4), "en", now=106)


def _at(tracker: watch.PhaseTracker, i: int) -> watch.PhaseTracker:
    cut = watch.PhaseTracker()
    cut.phases = tracker.phases[:i + 1]
    return cut


def test_phases_of_the_real_cpu_tp2_start():
    tracker = watch.PhaseTracker()
    for i, line in enumerate([
        "(Worker_TP0 pid=10063) INFO 12-07 16:16:33 [cpu_model_runner.py:68] Starting to load model /x/tiny-qwen2...",
        "(Worker_TP0 pid=10063) INFO 12-07 16:16:33 [default_loader.py:501] Loading weights took 0.01 seconds",
        "(Worker_TP1 pid=10064) INFO 12-07 16:16:34 [cpu_model_runner.py:87] Warming up model for the compilation...",
        "(Worker_TP0 pid=10063) INFO 12-07 16:17:06 [cpu_worker.py:260] Explicitly set (1.0/23.54) GiB for KV cache on node 0.",
        "(EngineCore pid=9692) INFO 12-07 16:17:06 [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens, Maximum concurrency for 2,048 tokens per request: 1024.00x",
        "(EngineCore pid=9692) INFO 12-07 16:17:10 [core.py:402] init engine (profile, create kv cache, warmup model) took 35.21 s",
    ]):
        tracker.feed(line, float(i))
    assert [p.key for p in tracker.phases] == ["loading", "profiling", "compiling", "kv_cache", "api_server"]
    assert tracker.phases[3].detail == "2,097,152 tokens"


# -- the watcher on a fake server ---------------------------------------------------------
@pytest.fixture
def paths(tmp_path):
    state_path = tmp_path / "logbook" / "server.json"
    log_path = tmp_path / "logbook" / "server.log"
    yield state_path, log_path
    server.stop(state_path, grace_s=1)


def start_fake(paths, *extra: str) -> server.ServerState:
    state_path, log_path = paths
    port = free_port()
    return server.start([sys.executable, str(FAKE), "--host", "127.0.0.1", "--port", str(port), *extra],
                        log_path=log_path, state_path=state_path, port=port, model="fake-model", tp=2)


def test_the_2xh200_crash_then_hang_fails_the_wait_fast_with_the_eager_fix(paths):
    state = start_fake(paths, "--crash-at-s", "0.3", "--spawn-children", "2", "--startup-s", "0.2")
    t0 = time.monotonic()
    with pytest.raises(ServerDied) as info:
        server.wait_ready(state, timeout_s=120, poll_s=0.2)
    took = time.monotonic() - t0
    assert took < 20, took                          # not the 900 s startup timeout
    err = info.value
    assert "\n" not in str(err) and str(err).startswith("vLLM server failed during startup: Crash during CUDA-graph capture")
    assert "--enforce-eager" in err.fix and "docs/facts.md" in err.fix
    assert "WorkerProc hit an exception" in err.evidence and len(err.evidence.splitlines()) <= 20
    failure = err.failure
    assert failure.kind == "fatal_line" and failure.diagnosis.key == "cuda_graph_tp_crash"
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in failure.line
    assert failure.detect_s is not None and failure.detect_s < 15
    report = err.stop_report
    assert len(report.pids) >= 3 and report.clean and report.stop_s < 10
    assert not paths[0].exists() and not server.is_alive(state)       # handed back


def test_an_unknown_fatal_line_fails_fast_with_the_line_itself(paths):
    state = start_fake(paths, "--startup-s", "30")
    with open(state.log_path, "a") as log:
        log.write("(EngineCore pid=1) ERROR 12-07 10:00:00 [core.py:1] EngineCore failed to start.\n")
        log.write("SomeNewError: the frobnicator overflowed\n")
    with pytest.raises(ServerDied) as info:
        server.wait_ready(state, timeout_s=60, poll_s=0.2)
    assert info.value.failure.diagnosis.key == "unknown_fatal"
    assert "EngineCore failed to start." in str(info.value)


def test_a_killed_worker_fails_the_wait_naming_it(paths):
    state = start_fake(paths, "--startup-s", "30", "--spawn-children", "2")
    watcher = server.make_watcher(state)
    deadline = time.monotonic() + 10
    while len(server.vllm_members(state)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watcher.check() is None
    title, victim = server.vllm_members(state)[-1]
    victim.send_signal(signal.SIGKILL)
    with pytest.raises(ServerDied) as info:
        server.wait_ready(state, timeout_s=60, poll_s=0.2, watcher=watcher)
    assert f"(pid {victim.pid}) exited" in str(info.value)
    assert title.startswith("VLLM::Worker_TP")
    assert not server.is_alive(state)


def test_a_server_stopped_on_purpose_is_no_failure(paths):
    state = start_fake(paths, "--startup-s", "0.2", "--spawn-children", "1")
    server.wait_ready(state, timeout_s=20, poll_s=0.1)
    failures = []
    with watch.watching(server.make_watcher(state, from_start=False), failures.append, poll_s=0.05):
        report = server.stop_tree(paths[0], grace_s=2)
        time.sleep(0.5)
    assert report.pids and failures == []


def test_the_background_watcher_ends_the_server_on_a_fatal_line(paths):
    state = start_fake(paths, "--startup-s", "0.2", "--spawn-children", "1")
    server.wait_ready(state, timeout_s=20, poll_s=0.1)
    ended = []
    with watch.watching(server.make_watcher(state, from_start=False),
                        lambda f: ended.append(server.stop_tree(paths[0], 2)), poll_s=0.1) as w:
        with open(state.log_path, "a") as log:
            log.write("(Worker_TP0 pid=1) ERROR 12-07 10:00:00 [x.py:1] RuntimeError: CUDA error: an illegal memory access was encountered\n")
        deadline = time.monotonic() + 15
        while not ended and time.monotonic() < deadline:
            time.sleep(0.1)
    assert w.failure is not None and w.failure.diagnosis.key == "cuda_graph_tp_crash"
    assert ended and ended[0].pids
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                   for p in map(_proc, ended[0].pids) if p is not None)
    assert os.getpid() not in ended[0].pids


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def test_a_crash_still_settling_when_the_block_ends_is_judged_before_the_step_reads_it(tmp_path):
    """Seen on an H100: the engine core was killed mid-bench, every request then failed at
    once and the bench returned 0.7 s later, before the watcher's next poll; the step must
    still get the diagnosis (the exit of the engine core), not only its failed requests."""
    log = tmp_path / "server.log"
    log.write_text("INFO ready\n")
    alive = {"root": True}
    w = watch.Watcher(log, root_alive=lambda: alive["root"], members=lambda: [],
                      from_start=False, exit_settle_s=0.3)
    declared = []
    with watch.watching(w, on_failure=declared.append, poll_s=5.0):
        time.sleep(0.1)              # the watcher polled once: all fine
        alive["root"] = False        # the server dies; the block returns at once
    assert w.failure is not None and w.failure.process == "API server"
    assert declared == [w.failure]


def test_a_block_that_ends_with_the_server_fine_has_no_failure(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("INFO ready\n")
    w = watch.Watcher(log, root_alive=lambda: True, members=lambda: [], from_start=False)
    started = time.monotonic()
    with watch.watching(w, poll_s=5.0):
        pass
    assert w.failure is None and time.monotonic() - started < 1.0
