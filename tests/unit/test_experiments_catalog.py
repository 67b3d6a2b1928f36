"""The registered experiments as data: names, arms, expectations, metrics, profiles and the
roadmap items they tick all fit together; `invoke experiment --list` shows them."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from lab.checklist import roadmap
from lab.checklist.experiments import all_experiments, get, only_arms, with_requests
from lab.checklist.experiments.model import PROFILES, Change, Equals
from lab.core.errors import ConfigError
from lab.ui.tables import experiments_table

ISSUE_10 = {"prefix-caching", "kv-cache", "batching", "chunked-prefill", "cuda-graphs",
            "block-size", "dtype", "attention-backend", "api-key"}
CPU_DONE_WHEN = {"prefix-caching", "kv-cache", "batching", "chunked-prefill", "api-key"}


def test_every_issue_10_experiment_is_registered_once():
    names = [e.name for e in all_experiments()]
    assert len(names) == len(set(names)) and set(names) >= ISSUE_10
    assert all(e.name in CPU_DONE_WHEN or "cpu" in e.skip or e.name in {"block-size", "dtype"}
               for e in all_experiments() if e.name in ISSUE_10)
    for name in CPU_DONE_WHEN:
        assert "cpu" in get(name).runs_on()
    for name in ("cuda-graphs", "attention-backend"):
        assert get(name).runs_on() == ("gpu", "rehearsal")
        assert get(name).skip["cpu"].startswith("no NVIDIA GPU")


@pytest.mark.parametrize("exp", all_experiments(), ids=lambda e: e.name)
@pytest.mark.parametrize("profile", PROFILES)
def test_expectations_name_arms_and_metrics_that_exist(exp, profile):
    if profile in exp.skip:
        return
    arms = {a.name for a in exp.arms_for(profile)}
    metrics = {m.key for m in exp.metrics}
    assert len(arms) == len(exp.arms_for(profile)) and exp.rounds_for(profile) >= 1
    for e in exp.expect_for(profile):
        assert e.metric in metrics
        if isinstance(e, Change):
            assert {e.baseline, e.treatment} <= arms and e.direction in ("lower", "higher", "same")
        else:
            assert isinstance(e, Equals) and e.arm in arms
    assert exp.question("zh") and exp.question("en")
    items = roadmap.items_by_id()
    assert all(t in items for t in exp.ticks)


def test_phase_2_and_3_items_are_ticked_by_some_experiment():
    for item in ("p2-paged", "p2-scheduler", "p2-backend", "p3-tuning"):
        assert roadmap.experiments_for(item)


def test_arms_and_requests_can_be_narrowed_for_a_quick_run():
    exp = only_arms(get("batching"), ["1", "64"], "cpu")
    assert [a.name for a in exp.arms_for("cpu")] == ["1", "64"]
    assert all(e.baseline == "1" and e.treatment == "64" for e in exp.expect_for("cpu"))
    with pytest.raises(ConfigError, match="has the arms 1, 8, 64"):
        only_arms(get("batching"), ["2"], "cpu")
    assert with_requests(get("prefix-caching"), 5, "cpu").load_for("cpu").num_requests == 5
    assert with_requests(get("prefix-caching"), 5, "cpu").load_for("gpu") == get("prefix-caching").load_for("gpu")
    with pytest.raises(ConfigError):
        with_requests(get("chunked-prefill"), 4, "cpu")
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        get("nope")


def test_the_list_shows_name_question_arms_and_profiles():
    out = io.StringIO()
    Console(file=out, width=250).print(experiments_table(all_experiments(), "en"))
    text = out.getvalue()
    for exp in all_experiments():
        assert exp.name in text
    assert "--no-enable-prefix-caching" in text and "--gpu-memory-utilization 0.5" in text
    assert "VLLM_CPU_KVCACHE_SPACE=2" in text and "--api-key ***" in text
    assert "gpu, rehearsal" in text and "no NVIDIA GPU" in text
