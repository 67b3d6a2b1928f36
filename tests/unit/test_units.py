"""lab.core.units: MiB/GiB, the None-safe ratio, the memory spread (one home each)."""

from __future__ import annotations

import pytest

from lab.core import units
from lab.core.units import balance, imbalance_pct, ratio


def test_memory_is_binary_like_nvidia_smi():
    # gpu/README.md, H100: 81,559 MiB total.
    assert units.mib(81_559 * 2**20) == 81_559
    assert units.gib(14.29 * 2**30) == pytest.approx(14.29)
    assert units.mib_to_gib(81_559) == pytest.approx(79.647, abs=1e-3)
    assert units.gib_to_mib(1) == 1024 == units.MIB_PER_GIB
    assert units.GIB == 1024 * units.MIB and units.GB == 10**9


def test_a_missing_figure_stays_missing():
    assert units.mib(None) is None and units.gib(None) is None
    assert units.mib_to_gib(None) is None and units.gib_to_mib(None) is None
    assert units.mib(0) == 0.0


@pytest.mark.parametrize("num, den, want", [
    (6.0, 3.0, 2.0),
    (0.0, 3.0, 0.0),
    (None, 3.0, None),
    (6.0, None, None),
    (6.0, 0.0, None),     # not measured, not infinity
    (6.0, -1.0, None),    # a negative rate or latency is never a measurement
])
def test_ratio(num, den, want):
    assert ratio(num, den) == want


@pytest.mark.parametrize("values, spread", [
    ([133443, 133443], 0.0),   # gpu/README.md: 2xH200, TP=2 --enforce-eager
    ([100, 90], 10.0),
    ([90, 100.0], 10.0),
    ([100, 50, 75], 50.0),
    ([0, 0], 0.0),
    ([1747.4, 1762.4], 0.851),  # the cpu run's TP worker RSS (tests/golden)
])
def test_spread_is_max_minus_min_over_max(values, spread):
    b = balance(values)
    assert b["spread_pct"] == pytest.approx(spread, abs=1e-3)
    assert b["max"] == max(values) and b["min"] == min(values) and b["n"] == len(values)
    assert imbalance_pct(values) == b["spread_pct"]


def test_one_device_has_no_spread_to_pass():
    # The two copies disagreed here: nvml.balance gave 0 % for one GPU (a pass of the
    # "< 10 %" criterion with nothing to compare), diagnose.imbalance_pct gave None. None.
    assert balance([42]) == {"n": 1, "max": 42.0, "min": 42.0, "spread_pct": None}
    assert imbalance_pct([42]) is None


def test_missing_values_are_left_out_not_zero():
    # The other disagreement: diagnose.imbalance_pct crashed on None; nvml.balance dropped it.
    assert balance([100, None, 90])["spread_pct"] == pytest.approx(10.0)
    assert imbalance_pct([100, None]) is None
    assert balance([]) == {"n": 0, "max": None, "min": None, "spread_pct": None}
