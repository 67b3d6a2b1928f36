"""The experiments' loads: shared-prefix and mixed prompt sets, arrivals at a request rate
with gamma burstiness, goodput against latency targets."""
from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from lab.core.config import parse_goodput
from lab.core.errors import ConfigError
from lab.measure import workloads
from lab.measure.loadgen import RequestRecord, Workload, arrival_offsets, validate_workload
from lab.measure.stats import good_requests, goodput

POOL = list(range(100, 400))


def test_shared_prefix_prompts_share_exactly_the_prefix():
    s = workloads.shared_prefix_set(POOL, 5, prefix_len=32, input_len=40, output_len=4, seed=1)
    assert len(s) == 5 and all(len(p) == 40 for p in s.prompts)
    assert all(p[:32] == s.prompts[0][:32] for p in s.prompts)
    assert len({tuple(p[32:]) for p in s.prompts}) == 5
    assert s.output_lens == [4] * 5 and set(s.labels) == {"shared"}
    with pytest.raises(ConfigError):
        workloads.shared_prefix_set(POOL, 2, prefix_len=40, input_len=40, output_len=4, seed=1)


def test_mixed_set_spreads_long_prompts_among_short_ones():
    s = workloads.mixed_set(POOL, 12, short_len=8, short_output_len=16, long_len=64,
                            long_output_len=2, long_count=3, seed=0)
    assert s.labels.count("long") == 3 and s.labels[0] == "short"
    for p, out, label in zip(s.prompts, s.output_lens, s.labels, strict=True):
        assert (len(p), out) == ((64, 2) if label == "long" else (8, 16))
    longs = [i for i, lab in enumerate(s.labels) if lab == "long"]
    assert longs == [3, 6, 9]
    with pytest.raises(ConfigError):
        workloads.mixed_set(POOL, 3, 8, 16, 64, 2, long_count=3, seed=0)


def test_infinite_rate_sends_everything_at_once():
    assert arrival_offsets(4, math.inf) == [0.0] * 4


def test_poisson_arrivals_end_at_n_over_rate_like_vllm():
    offs = arrival_offsets(200, 10.0, 1.0, seed=3)
    assert offs[-1] == pytest.approx(20.0)
    assert all(b >= a for a, b in itertools.pairwise(offs))
    gaps = np.diff([0.0, *offs])
    assert statistics.mean(gaps) == pytest.approx(0.1)
    # Poisson: the gaps' coefficient of variation is about 1
    assert 0.8 < np.std(gaps) / np.mean(gaps) < 1.2


def test_burstiness_below_one_is_burstier_and_above_one_more_even():
    cv = {b: float(np.std(np.diff(arrival_offsets(2000, 10.0, b, seed=1))) /
                   np.mean(np.diff(arrival_offsets(2000, 10.0, b, seed=1))))
          for b in (0.25, 1.0, 4.0)}
    assert cv[0.25] > 1.5 > cv[1.0] > 0.7 > cv[4.0]
    assert arrival_offsets(3, 2.0, math.inf) == pytest.approx([0.5, 1.0, 1.5])


def test_bad_rates_are_one_line_errors():
    for kw, msg in (({"request_rate": 0.0}, "request_rate"), ({"burstiness": 0.0}, "burstiness")):
        with pytest.raises(ConfigError, match=msg):
            validate_workload(Workload(8, 8, 1, num_requests=4, **kw))
    with pytest.raises(ConfigError, match="needs num_requests"):
        validate_workload(Workload(8, 8, 1, duration_s=5.0, request_rate=2.0))


def rec(ok=True, ttft=0.1, tpot=0.01, e2el=1.0, warmup=False):
    return RequestRecord(idx=0, level="x", concurrency=1, warmup=warmup, ok=ok, ttft_s=ttft,
                         tpot_s=tpot, e2el_s=e2el)


def test_goodput_counts_requests_meeting_every_target_like_vllm():
    recs = [rec(), rec(ttft=0.3), rec(tpot=0.05), rec(tpot=None), rec(ok=False),
            rec(warmup=True)]
    assert good_requests(recs, {"ttft": 200}) == 3  # a one-token reply has TPOT 0
    assert good_requests(recs, {"ttft": 200, "tpot": 20}) == 2
    assert good_requests(recs, {"e2el": 999}) == 0
    assert goodput(recs, {"ttft": 200, "tpot": 20}, 4.0) == pytest.approx(0.5)


def test_goodput_targets_parse_like_the_vllm_flag():
    assert parse_goodput("ttft:500 tpot:50") == {"ttft": 500.0, "tpot": 50.0}
    assert parse_goodput("e2el:1000,ttft:2") == {"e2el": 1000.0, "ttft": 2.0}
    assert parse_goodput("") == {}
    for bad in ("ttft", "itl:5", "ttft:x", "tpot:-1"):
        with pytest.raises(ValueError):
            parse_goodput(bad)
