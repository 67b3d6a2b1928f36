"""The verdict of an experiment: alternation, per-arm medians and ranges, findings."""
from __future__ import annotations

import pytest

from lab.checklist.experiments.model import Arm, Change, Equals, Metric
from lab.checklist.experiments.verdict import (
    arm_stats,
    change_pct,
    finding_line,
    judge,
    schedule,
    verdict_line,
)
from lab.record.values import ExperimentValues

A, B = Arm("off"), Arm("on")
TTFT = Metric("ttft_median_ms", "TTFT 中位数", "median TTFT", "ms", lambda v: None, "lower")


def test_schedule_alternates_arms_over_rounds():
    order = [(r, a.name) for r, a in schedule([A, B], 3)]
    assert order == [(1, "off"), (1, "on"), (2, "off"), (2, "on"), (3, "off"), (3, "on")]


def test_arm_stats_median_and_range_over_rounds():
    figures = {(1, "off"): {"ttft_median_ms": 100.0}, (2, "off"): {"ttft_median_ms": 120.0},
               (3, "off"): {"ttft_median_ms": 90.0}, (1, "on"): {"ttft_median_ms": 40.0},
               (2, "on"): {"ttft_median_ms": None}, (3, "on"): {"ttft_median_ms": 50.0}}
    stats = {s.arm: s for s in arm_stats(figures, ["off", "on"], [TTFT], 3)}
    assert (stats["off"].median, stats["off"].min, stats["off"].max) == (100.0, 90.0, 120.0)
    assert stats["on"].values == [40.0, None, 50.0]
    assert (stats["on"].median, stats["on"].min, stats["on"].max) == (45.0, 40.0, 50.0)


def test_change_is_relative_to_the_baseline_and_none_without_one():
    assert change_pct(100.0, 60.0) == pytest.approx(-40.0)
    assert change_pct(0.0, 5.0) is None
    assert change_pct(None, 5.0) is None


def test_a_lower_metric_is_seen_when_the_median_change_passes_the_noise_floor():
    figures = {(1, "off"): {"m": 100.0}, (1, "on"): {"m": 60.0},
               (2, "off"): {"m": 100.0}, (2, "on"): {"m": 98.0}}
    f = judge(Change("m", "off", "on", "lower", min_change_pct=5), figures, 2)
    assert f.change_pct == pytest.approx([-40.0, -2.0])
    assert f.change_pct_median == pytest.approx(-21.0)
    assert (f.change_pct_min, f.change_pct_max) == pytest.approx((-40.0, -2.0))
    assert f.rounds_agreeing == 1 and f.rounds_measured == 2
    assert f.seen is True


def test_a_change_the_wrong_way_or_within_noise_is_not_seen():
    up = {(1, "off"): {"m": 100.0}, (1, "on"): {"m": 130.0}}
    assert judge(Change("m", "off", "on", "lower"), up, 1).seen is False
    noise = {(1, "off"): {"m": 100.0}, (1, "on"): {"m": 97.0}}
    assert judge(Change("m", "off", "on", "lower", min_change_pct=5), noise, 1).seen is False
    assert judge(Change("m", "off", "on", "same", min_change_pct=5), noise, 1).seen is True


def test_unmeasured_arms_give_no_verdict():
    assert judge(Change("m", "off", "on", "lower"), {(1, "off"): {"m": 1.0}}, 1).seen is None


def test_absolute_change_for_counts_that_start_at_zero():
    figures = {(1, "base"): {"preemptions": 0.0}, (1, "tiny"): {"preemptions": 12.0}}
    f = judge(Change("preemptions", "base", "tiny", "higher", min_change_pct=0,
                     relative=False), figures, 1)
    assert f.change_pct == [12.0] and f.seen is True and f.relative is False


def test_equals_needs_every_measured_round():
    figures = {(1, "k"): {"s": 401.0}, (2, "k"): {"s": 200.0}}
    f = judge(Equals("s", "k", 401), figures, 2)
    assert (f.rounds_agreeing, f.rounds_measured, f.seen, f.required) == (1, 2, False, True)
    assert judge(Equals("s", "k", 401), {(1, "k"): {"s": 401.0}}, 2).seen is True
    assert judge(Equals("s", "k", 401), {}, 2).seen is None


def test_the_verdict_line_carries_the_numbers():
    figures = {(1, "off"): {"ttft_median_ms": 100.0}, (1, "on"): {"ttft_median_ms": 60.0},
               (2, "off"): {"ttft_median_ms": 110.0}, (2, "on"): {"ttft_median_ms": 55.0}}
    v = ExperimentValues(name="x", profile="cpu", rounds=2,
                         stats=arm_stats(figures, ["off", "on"], [TTFT], 2),
                         findings=[judge(Change("ttft_median_ms", "off", "on", "lower"), figures, 2)])
    line = finding_line(v.findings[0], [TTFT], v, "en")
    assert "off 105 ms (100–110)" in line and "on 57.50 ms (55–60)" in line
    assert "median change -45.0 % (rounds -50.0 … -40.0 %); seen" in line
    assert "已看到" in verdict_line(v, [TTFT], "zh")
    assert verdict_line(ExperimentValues(name="x", skipped="no GPU"), [TTFT], "en") == "skipped: no GPU"


def test_an_expected_sameness_reads_as_a_comparison_of_equals():
    figures = {(1, "off"): {"ttft_median_ms": 100.0}, (1, "on"): {"ttft_median_ms": 102.0}}
    v = ExperimentValues(name="x", profile="gpu", rounds=1,
                         stats=arm_stats(figures, ["off", "on"], [TTFT], 1),
                         findings=[judge(Change("ttft_median_ms", "off", "on", "same",
                                                min_change_pct=10), figures, 1)])
    en = finding_line(v.findings[0], [TTFT], v, "en")
    assert en.startswith("expected median TTFT about the same (within ±10 %) with on as off:")
    assert "与 off 大致相同（±10 % 以内）" in finding_line(v.findings[0], [TTFT], v, "zh")
