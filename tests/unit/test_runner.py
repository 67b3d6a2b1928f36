import pytest

from lab.core.errors import ServerDied
from lab.record.logbook import FAIL, INTERRUPTED, PASS, SKIPPED
from lab.record.runner import Outcome, StepSpec, check, require, run_step, skip, verdict
from lab.record.values import GpusValues, ServeValues

SPEC = StepSpec("gpus", 1, "检查 GPU 资源", "Check GPU resources", "nvidia-smi")


def test_check_compares_measured_with_threshold():
    assert check("k", "a", "b", 17.0, ">", 16).status == PASS
    assert check("k", "a", "b", 15.0, ">", 16).status == FAIL
    c = check("k", "a", "b", None, ">", 16)
    assert c.status == FAIL and c.reason == "not measured"


def test_a_skipped_criterion_never_makes_a_pass():
    status, reason = verdict([require("a", "a", "a", True),
                              skip("gpu", "g", "g", "no NVIDIA GPU: CPU profile")])
    assert status == SKIPPED and reason == "no NVIDIA GPU: CPU profile"


def test_any_failure_fails_and_empty_criteria_fail():
    assert verdict([require("a", "a", "a", True), check("b", "b", "b", 1, ">", 2)])[0] == FAIL
    assert verdict([])[0] == FAIL


def test_run_step_records_pass_with_expected_and_criteria(fresh_db):
    run = fresh_db.start_run("day3")
    res = run_step(fresh_db, run, SPEC, "en",
                   lambda ctx: Outcome([check("free", "空闲", "free GiB", 20.0, ">", 16, "GiB")],
                                       "20 GiB free", GpusValues(free_gpus=1)))
    row = fresh_db.step(fresh_db.steps(run)[0]["id"])
    assert res.status == PASS and row["status"] == PASS
    assert res.values == row["values"] == GpusValues(free_gpus=1)
    assert row["expected"] == "free GiB > 16 GiB"
    assert row["criteria"][0]["measured"] == 20.0


def test_lab_error_becomes_failed_step_with_diagnosed_fix(fresh_db):
    run = fresh_db.start_run("day3")

    def boom(ctx):
        raise ServerDied("vLLM server exited", evidence="torch.OutOfMemoryError: CUDA out of memory")

    res = run_step(fresh_db, run, SPEC, "en", boom, diagnose=lambda text: "lower it")
    assert res.status == FAIL and res.reason == "vLLM server exited" and res.fix == "lower it"
    assert "CUDA out of memory" in fresh_db.steps(run)[0]["evidence"]
    assert res.values is None


def test_a_failed_step_keeps_what_it_measured(fresh_db):
    run = fresh_db.start_run("day3")

    def partial(ctx):
        err = ServerDied("vLLM server exited during the benchmark")
        err.values = ServeValues(ready_s=12.5, tp=2)
        raise err

    res = run_step(fresh_db, run, SPEC, "en", partial)
    assert res.status == FAIL and res.values == ServeValues(ready_s=12.5, tp=2)
    assert fresh_db.steps(run)[0]["values"].ready_s == 12.5


def test_unexpected_error_is_recorded_not_raised(fresh_db):
    run = fresh_db.start_run("day3")
    res = run_step(fresh_db, run, SPEC, "en", lambda ctx: 1 / 0)
    assert res.status == FAIL and res.reason.startswith("internal error: ZeroDivisionError")


def test_interrupt_marks_step_interrupted_and_propagates(fresh_db):
    run = fresh_db.start_run("day3")

    def interrupted(ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_step(fresh_db, run, SPEC, "en", interrupted)
    assert fresh_db.steps(run)[0]["status"] == INTERRUPTED
