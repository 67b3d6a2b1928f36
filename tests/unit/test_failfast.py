"""Fail fast, explain, recover (issue 9), through the step runner with fakes:
- the serve step against tests/fakes/fake_vllm_server.py printing the 2×H200 crash signature
  and hanging fails within 20 s with the `--enforce-eager` fix; `--fix auto` retries with it
  (the fake then starts) and both attempts are in the logbook and the day log;
- a stop waits for NVML (a fake) to show the GPU memory released, records the seconds, and
  fails loudly naming what still holds memory;
- a server that fails while a step uses it fails that step with the diagnosis, keeping what
  it measured; the monitor's requests are recorded with their errors, and a failure names
  the top reasons."""
from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from lab.commands import run_day, run_step_task, stop_report
from lab.core.errors import GpuMemoryHeld
from lab.record.logbook import FAIL, PASS
from lab.record.session import Lab
from lab.record.values import MonitorValues, ServeValues
from lab.vllm import process as server
from tests.fakes import fake_pynvml
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer, free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FAKE_VLLM = ROOT / "tests" / "fakes" / "fake_vllm_server.py"
CRASH = ["--crash-at-s", "0.3", "--spawn-children", "2", "--startup-s", "0.2", "--progress"]


def make_lab(tmp_path, port: int, **cfg) -> tuple[Lab, io.StringIO]:
    out = io.StringIO()
    lab = Lab.from_config({"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"),
                           "data_dir": str(tmp_path / "data"), "port": str(port), "lang": "en",
                           **cfg}, console=Console(file=out, width=200, highlight=False))
    return lab, out


@pytest.fixture
def fake_serve(tmp_path, monkeypatch):
    """The serve step starts the fake vLLM server (crash mode unless --enforce-eager)."""
    from lab.vllm import env as vllm_env
    from lab.vllm import metrics
    from tests.fakes.fake_vllm_scripts import make_model
    make_model(tmp_path / "data")
    port = free_port()
    monkeypatch.setattr(vllm_env.VllmEnv, "probe", lambda self, timeout_s=300: {"vllm": "0.32.0"})
    monkeypatch.setattr(Lab, "serve_argv", lambda self, prof, tp=1, extra=None: [
        sys.executable, str(FAKE_VLLM), "--host", "127.0.0.1", "--port", str(port), *CRASH,
        *self.extra_args(tp)])
    monkeypatch.setattr(metrics, "scrape",
                        lambda *a, **kw: (FIXTURES / "metrics_vllm_0_32.txt").read_text())
    labs: list[Lab] = []
    yield port, labs
    for lab in labs:
        server.stop(lab.state_path, grace_s=1)


def serve_rows(lab: Lab) -> list[dict]:
    return [s for s in lab.book.steps() if s["key"] == "serve"]


def no_fake_left(lab: Lab) -> bool:
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and str(FAKE_VLLM) in " ".join(p.info["cmdline"] or []) \
                and str(lab.logbook_dir) in " ".join(p.info["cmdline"] or []):
            return False
    return not lab.state_path.exists()


def test_the_crash_signature_fails_serve_within_20_s_with_the_eager_fix(tmp_path, fake_serve):
    port, labs = fake_serve
    lab, out = make_lab(tmp_path, port, fix="off")
    labs.append(lab)
    t0 = time.monotonic()
    assert run_step_task(lab, "day3", "serve") == 1
    assert time.monotonic() - t0 < 20
    (row,) = serve_rows(lab)
    assert row["status"] == FAIL
    assert row["reason"].startswith("vLLM server failed during startup: Crash during CUDA-graph capture")
    assert "--enforce-eager" in row["fix"]
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in row["evidence"] and len(row["evidence"].splitlines()) <= 20
    v = row["values"]
    assert isinstance(v, ServeValues) and v.failure.key == "cuda_graph_tp_crash"
    assert v.failure.detect_s is not None and v.failure.detect_s < 15
    assert v.remedy.added == "--enforce-eager" and v.fix is None          # off: reported only
    assert v.stop.processes >= 3 and not v.stop.survivors
    assert [p.key for p in v.phases] == ["cuda_graphs"] and v.phases[0].detail == "8/67"
    assert server.load(lab.state_path) is None and not server.vllm_members(
        server.ServerState(v.pid, 0, "", 0, "", "", 0.0, []))
    md = (lab.logbook_dir / "day3.md").read_text()
    assert "The start failed" in md and "Known fix" in md and "crash line → detected" in md
    assert "retrying once" not in out.getvalue()


def test_fix_auto_retries_once_with_enforce_eager_and_records_both_attempts(tmp_path, fake_serve):
    port, labs = fake_serve
    lab, out = make_lab(tmp_path, port)                                   # fix: auto (default)
    labs.append(lab)
    assert run_step_task(lab, "day3", "serve") == 0
    first, second = serve_rows(lab)
    assert first["status"] == FAIL and second["status"] == PASS
    assert first["values"].failure.key == "cuda_graph_tp_crash"
    fix = second["values"].fix
    assert fix.added == "--enforce-eager" and fix.failed_step_id == first["id"]
    assert fix.failed.detect_s is not None and fix.failed_stop.processes >= 3
    assert "--enforce-eager" in second["command"] and "--enforce-eager" not in first["command"]
    assert second["values"].ready_s > 0
    text = out.getvalue()
    assert "retrying once with the known fix: --enforce-eager" in text and "cost:" in text
    md = (lab.logbook_dir / "day3.md").read_text()
    assert "Two attempts" in md and "first attempt failed" in md
    assert f"step #{first['id']}" in md and "retried with the known fix" in md
    assert "TPOT about 29 ms" in md                                       # the cost, said
    server.stop(lab.state_path, grace_s=2)
    assert no_fake_left(lab)


def test_a_retry_that_fails_again_is_not_retried_twice(tmp_path, fake_serve, monkeypatch):
    port, labs = fake_serve
    lab, _ = make_lab(tmp_path, port)
    labs.append(lab)
    # The fake ignores the flag: it crashes with or without --enforce-eager.
    monkeypatch.setattr(Lab, "serve_argv", lambda self, prof, tp=1, extra=None: [
        sys.executable, str(FAKE_VLLM), "--host", "127.0.0.1", "--port", str(port), *CRASH])
    assert run_step_task(lab, "day3", "serve") == 1
    assert [r["status"] for r in serve_rows(lab)] == [FAIL, FAIL]


# -- stop: the GPU memory handed back ------------------------------------------------------
class ReleasingNvml(fake_pynvml.FakePynvml):
    """Two H200s whose memory is held while the tracked server lives, then (after `lag_s`)
    falls back to the baseline, like the driver freeing it; `never` keeps it held."""

    def __init__(self, state_path: Path, lag_s: float = 0.3, never: bool = False):
        super().__init__([fake_pynvml.H200, {**fake_pynvml.H200, "uuid": "GPU-2"}])
        self.state_path, self.lag_s, self.never, self.gone_at = state_path, lag_s, never, None

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        state = server.load(self.state_path)
        alive = state is not None and server.is_alive(state)
        if not alive and self.gone_at is None and state is not None:
            self.gone_at = time.monotonic()
        held = alive or self.never or (self.gone_at is not None
                                       and time.monotonic() - self.gone_at < self.lag_s)
        self.gpus[handle.index]["memory_used_mib"] = 130949 if held and state is not None else 500
        return super().nvmlDeviceGetMemoryInfo(handle, version)


def started_gpu_server(tmp_path, monkeypatch, never=False, timeout_s=30):
    lab, _out = make_lab(tmp_path, free_port(), profile="rehearsal", release_timeout_s=str(timeout_s))
    nv = ReleasingNvml(lab.state_path, never=never)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    state = server.start([sys.executable, str(FAKE_VLLM), "--host", "127.0.0.1", "--port",
                          str(lab.cfg["port"]), "--startup-s", "0.1", "--spawn-children", "2"],
                         log_path=tmp_path / "s.log", state_path=lab.state_path,
                         port=lab.cfg["port"], profile="rehearsal",
                         gpu_baseline_mib=lab.gpu_baseline())
    server.wait_ready(state, 20, poll_s=0.1)
    return lab, state


def test_stop_waits_until_nvml_shows_the_memory_released(tmp_path, monkeypatch):
    lab, state = started_gpu_server(tmp_path, monkeypatch)
    assert state.gpu_baseline_mib == {"0": 500, "1": 500}
    ended, line = stop_report(lab)
    assert state.pid in ended and "GPU memory released in" in line
    assert not server.is_alive(state)


def test_memory_still_held_fails_loudly_naming_it(tmp_path, monkeypatch):
    lab, _state = started_gpu_server(tmp_path, monkeypatch, never=True, timeout_s=1)
    with pytest.raises(GpuMemoryHeld) as info:
        stop_report(lab)
    msg = str(info.value)
    assert "not handed back" in msg and "GPU0: 130,949 MiB used (before the server: 500 MiB)" in msg
    assert "\n" not in msg


# -- a server that fails while a step uses it ----------------------------------------------
def test_a_fatal_line_mid_step_fails_the_step_with_the_diagnosis_keeping_what_it_measured(tmp_path):
    with FakeServer(FakeConfig(first_token_s=0.005, itl_s=0.002)) as api:
        lab, _ = make_lab(tmp_path, api.port, monitor={"duration_s": "3", "interval_s": "0.2",
                                                       "concurrency": "2", "input_len": "8",
                                                       "output_len": "4"},
                          cpu={"monitor_duration_s": "3"})
        # The tracked server (watched) is the fake vLLM process; the load goes to `api`.
        port = free_port()
        state = server.start([sys.executable, str(FAKE_VLLM), "--host", "127.0.0.1", "--port",
                              str(port), "--startup-s", "0.1", "--spawn-children", "1"],
                             log_path=tmp_path / "s.log", state_path=lab.state_path,
                             port=port, model="fake-model")
        server.wait_ready(state, 20, poll_s=0.1)

        def crash():
            time.sleep(1.0)
            with open(state.log_path, "a") as log:
                log.write("(Worker_TP0 pid=7) ERROR 12-07 10:00:00 [multiproc_executor.py:1] "
                          "WorkerProc hit an exception.\n")
        threading.Thread(target=crash, daemon=True).start()
        t0 = time.monotonic()
        code = run_step_task(lab, "day3", "monitor")
        took = time.monotonic() - t0
    assert code == 1 and took < 15
    row = [s for s in lab.book.steps() if s["key"] == "monitor"][-1]
    assert row["status"] == FAIL
    assert row["reason"].startswith("vLLM server failed during `monitor`:")
    assert "WorkerProc hit an exception" in row["reason"] and "what the step measured is kept" in row["reason"]
    assert isinstance(row["values"], MonitorValues) and row["values"].load.completed > 0
    assert lab.book.requests(row["id"], "monitor")                       # every request recorded
    assert not server.is_alive(state) and server.load(lab.state_path) is None


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.005, itl_s=0.002,
                                             http_error_indices=frozenset({1, 3}))], indirect=True)
def test_monitor_records_every_request_and_names_the_top_errors(tmp_path, fake, monkeypatch):
    state = server.ServerState(pid=psutil.Process().pid, pgid=0, host="127.0.0.1", port=fake.port,
                               model="fake-model", log_path="/nonexistent", started_at=time.time(),
                               argv=[])
    monkeypatch.setattr(server, "require_running", lambda path: state)
    lab, _ = make_lab(tmp_path, fake.port, monitor={"duration_s": "1", "interval_s": "0.2",
                                                    "concurrency": "2", "input_len": "8",
                                                    "output_len": "4"},
                      cpu={"monitor_duration_s": "1"})
    assert run_step_task(lab, "day3", "monitor") == 1
    row = [s for s in lab.book.steps() if s["key"] == "monitor"][-1]
    rows = lab.book.requests(row["id"], "monitor")
    failed = [r for r in rows if not r["ok"]]
    assert len(failed) == 2 and all(r["error"].startswith("HTTP 500") for r in failed)
    assert "2 requests failed: HTTP 500" in row["reason"] and "×2" in row["reason"]
    assert sum(row["values"].load.errors.values()) == 2


def test_end_of_day_stops_the_tree(tmp_path, fake_serve):
    port, labs = fake_serve
    lab, _ = make_lab(tmp_path, port)
    labs.append(lab)
    run_day(lab, "day3", keys=["serve"])
    assert no_fake_left(lab)


def test_the_tp_crash_fix_holds_for_tp2_starts_only(tmp_path):
    from lab.checklist.steps.serve import remedy_of
    lab, _ = make_lab(tmp_path, free_port())
    fix = remedy_of("cuda_graph_tp_crash", ["python", "--tensor-parallel-size", "2"], {}, 2, "")
    lab.apply_fix(fix)
    assert "--enforce-eager" in lab.extra_args(2)
    assert "--enforce-eager" not in lab.extra_args(1)  # --compare-tp's TP=1 keeps its graphs
    assert remedy_of("cuda_graph_tp_crash", ["python", "--enforce-eager"], {}, 2, "") is None
