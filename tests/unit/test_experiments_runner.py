"""The experiment runner with fakes: arms alternate over rounds, every arm is a recorded step
with its requests, the verdict comes from what the arms measured, experiments.md shows it,
and a profile the experiment does not run on records a skip."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from lab.checklist.experiments import measures, runner
from lab.checklist.experiments import metrics as M
from lab.checklist.experiments.model import Arm, Change, Experiment, Load
from lab.commands import records_with_measurements
from lab.deliver.experiments import render_experiments
from lab.record.logbook import PASS, SKIPPED
from lab.record.runner import Outcome
from lab.record.session import Lab
from lab.record.values import ArmValues, ExperimentValues, ServeValues
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer


def make_lab(tmp_path: Path, port: int, profile: str = "cpu") -> Lab:
    return Lab.from_config({"profile": profile, "logbook_dir": str(tmp_path / "logbook"),
                            "data_dir": str(tmp_path / "data"), "port": str(port)},
                           console=Console(file=io.StringIO(), width=200))


@pytest.fixture
def fake_starts(monkeypatch):
    """start_and_wait / require_running / stop / is_alive faked: the 'server' of every arm is
    the fake stream server already listening on the lab's port; the first token comes
    later for the arm called "slow" (the fake's delay is set per start)."""
    started: list[tuple[str, list[str], dict]] = []

    def start_and_wait(lab, ctx, day, tp, model=None, extra=None, env_extra=None):
        started.append((lab.cfg["port"], list(extra or []), dict(env_extra or {})))
        FAKE.config.first_token_s = 0.08 if "--slow" in (extra or []) else 0.01
        return Outcome([], "ready", ServeValues(ready_s=1.0, kv_cache_tokens=1000),
                       command="python -m vllm.entrypoints.openai.api_server " + " ".join(extra or []))

    class State:
        served_model_name = "fake-model"
        model = "fake-model"
    monkeypatch.setattr("lab.checklist.steps.serve.start_and_wait", start_and_wait)
    monkeypatch.setattr(runner.server, "require_running", lambda path: State())
    monkeypatch.setattr(runner.server, "stop", lambda path, grace_s=30: [])
    monkeypatch.setattr(runner.server, "is_alive", lambda state: True)
    return started


FAKE: FakeServer

EXP = Experiment(
    name="toy", question_zh="快吗？", question_en="Is it fast?",
    arms=(Arm("slow", flags=("--slow",)), Arm("fast", env={"X": "1"})),
    load=Load(input_len=8, output_len=3, num_requests=4, concurrency=2, warmup=1),
    metrics=(M.TTFT_MEDIAN, M.OUTPUT_TOK_S),
    expect=(Change("ttft_median_ms", baseline="slow", treatment="fast", direction="lower",
                   min_change_pct=20),),
    rounds=2)


def test_arms_alternate_record_requests_and_give_a_measured_verdict(tmp_path, fake_starts):
    global FAKE
    with FakeServer(FakeConfig(first_token_s=0.01, itl_s=0.002, metrics=True)) as fake:
        FAKE = fake
        lab = make_lab(tmp_path, int(fake.base_url.rsplit(":", 1)[1]))
        run_id, values, results = runner.run_experiment(lab, EXP)
    assert [r.status for r in results] == [PASS] * 5
    assert values.order == ["slow", "fast", "slow", "fast"]
    assert [f[1] for f in fake_starts] == [["--slow"], [], ["--slow"], []]
    assert fake_starts[1][2] == {"X": "1"}
    steps = lab.book.steps(run_id)
    assert [s["key"] for s in steps] == ["experiment-arm"] * 4 + ["experiment"]
    for s in steps[:4]:
        rows = lab.book.requests(s["id"], phase=measures.PHASE)
        assert len(rows) == 5 and sum(not r["warmup"] for r in rows) == 4  # 1 warm-up + 4
        assert isinstance(s["values"], ArmValues)
    slow = values.stat("slow", "ttft_median_ms")
    fast = values.stat("fast", "ttft_median_ms")
    assert slow.median > 70 and fast.median < 60 and len(slow.values) == 2
    (f,) = values.findings
    assert f.seen is True and f.rounds_measured == 2 and f.change_pct_median < -20
    verdict = steps[-1]["values"]
    assert isinstance(verdict, ExperimentValues) and verdict.arm_steps == [s["id"] for s in steps[:4]]
    # each arm's level exported as `vllm bench serve` JSON
    path = Path(steps[0]["values"].export_path)
    assert json.loads(path.read_text())["completed"] == 4

    md, *_ = render_experiments(records_with_measurements(lab), "en", lab.logbook_dir)
    text = md.read_text()
    assert "## toy" not in text  # only registered experiments are rendered
    assert "## prefix-caching" in text and "not measured yet — run `invoke experiment prefix-caching`" in text


def test_a_profile_it_does_not_run_on_is_recorded_as_skipped(tmp_path, fake_starts):
    exp = Experiment(name="gpu-only", question_zh="?", question_en="?", arms=(Arm("a"),),
                     metrics=(M.TTFT_MEDIAN,), expect=(), skip={"cpu": "no NVIDIA GPU: why"})
    lab = make_lab(tmp_path, 8000)
    _, values, results = runner.run_experiment(lab, exp)
    assert values.skipped == "no NVIDIA GPU: why" and fake_starts == []
    assert [r.status for r in results] == [SKIPPED]
    assert lab.book.runs()[-1]["status"] == SKIPPED


def test_an_unavailable_optional_arm_is_skipped_not_failed(tmp_path, fake_starts, monkeypatch):
    from lab.core.errors import LabError

    def refuse(lab, ctx, day, tp, model=None, extra=None, env_extra=None):
        raise LabError("the server exited during startup",
                       evidence="ValueError: Backend FLEX_ATTENTION is not supported")
    monkeypatch.setattr("lab.checklist.steps.serve.start_and_wait", refuse)
    exp = Experiment(name="b", question_zh="?", question_en="?",
                     arms=(Arm("X", optional=True), Arm("Y", optional=True)),
                     metrics=(M.TTFT_MEDIAN,), expect=(Change("ttft_median_ms", "X", "Y", "lower"),),
                     rounds=1)
    lab = make_lab(tmp_path, 8000)
    _, values, results = runner.run_experiment(lab, exp)
    assert [r.status for r in results] == [SKIPPED, SKIPPED, SKIPPED]
    assert "FLEX_ATTENTION is not supported" in values.skipped_arms["X"]


def test_a_server_that_cannot_start_stops_the_experiment_with_one_clear_reason(
        tmp_path, fake_starts, monkeypatch):
    from lab.core.errors import LabError
    from lab.record.logbook import FAIL, PENDING
    from lab.record.plan import exit_code

    def refuse(lab, ctx, day, tp, model=None, extra=None, env_extra=None):
        raise LabError("port 8000 is in use by pid 1 (python)", fix="`invoke stop`")
    monkeypatch.setattr("lab.checklist.steps.serve.start_and_wait", refuse)
    lab = make_lab(tmp_path, 8000)
    _, _, results = runner.run_experiment(lab, EXP)
    assert [r.status for r in results] == [FAIL, PENDING, PENDING, PENDING, FAIL]
    assert results[0].reason == "port 8000 is in use by pid 1 (python)"
    assert results[1].reason == "not run: the server of arm `slow` did not start"
    assert results[-1].reason.startswith("every expectation judged from measured arms")
    assert exit_code(results) == 1 and lab.book.runs()[-1]["status"] == FAIL
