"""lab.measure.stats: percentiles and level summaries, as vllm bench serve computes them."""
import json

import numpy as np
import pytest

from lab.measure.loadgen import RequestRecord
from lab.measure.stats import percentiles, summarize, wall_from_records


def test_percentiles_match_numpy_linear():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    got = percentiles(values)
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["median"] == pytest.approx(np.percentile(values, 50))
    assert got["p90"] == pytest.approx(np.percentile(values, 90, method="linear"))
    assert got["p99"] == pytest.approx(np.percentile(values, 99, method="linear"))


def test_percentiles_empty_gives_none():
    assert percentiles([]) == {"mean": None, "median": None, "p90": None, "p99": None}
    assert percentiles([None, None])["median"] is None


def test_percentiles_single_value():
    assert percentiles([7]) == {"mean": 7.0, "median": 7.0, "p90": 7.0, "p99": 7.0}


def _ok(idx, ttft, e2el, out, itls, warmup=False, sent=0.0, queue=0.0, inp=10):
    tpot = (e2el - ttft) / (out - 1) if out > 1 else None
    return RequestRecord(idx=idx, level="c2", concurrency=2, warmup=warmup, ok=True,
                         http_status=200, input_tokens=inp, output_tokens=out, queue_s=queue,
                         sent_at_s=sent, ttft_s=ttft, e2el_s=e2el, tpot_s=tpot, itls_s=itls)


def _records():
    return [
        _ok(0, 0.100, 0.400, 4, [0.1, 0.1, 0.1], warmup=True),  # must be ignored
        _ok(0, 0.050, 0.080, 4, [0.01, 0.01, 0.01], sent=0.0),
        _ok(1, 0.070, 0.130, 4, [0.02, 0.02, 0.02], sent=0.01, queue=0.005),
        _ok(2, 0.060, 0.060, 1, [], sent=0.02),  # one token: no TPOT
        RequestRecord(idx=3, level="c2", concurrency=2, warmup=False, error="timeout",
                      input_tokens=10, sent_at_s=0.03),
        RequestRecord(idx=4, level="c2", concurrency=2, warmup=False, error="HTTP 500: x",
                      http_status=500, input_tokens=10, sent_at_s=0.04),
    ]


def test_summarize_counts_and_throughput():
    s = summarize(_records(), wall_s=2.0)
    assert (s["requests"], s["completed"], s["failed"], s["timeouts"]) == (5, 3, 2, 1)
    # Token totals count successful requests only (as vLLM does).
    assert s["total_input_tokens"] == 30
    assert s["total_output_tokens"] == 9
    assert s["request_throughput"] == pytest.approx(3 / 2.0)
    assert s["output_throughput"] == pytest.approx(9 / 2.0)
    assert s["total_token_throughput"] == pytest.approx(39 / 2.0)


def test_summarize_latency_definitions():
    s = summarize(_records(), wall_s=2.0)
    assert s["ttft_ms"]["mean"] == pytest.approx(60.0)
    # TPOT only from requests with > 1 output token: (80-50)/3 and (130-70)/3 ms.
    assert s["tpot_ms"]["mean"] == pytest.approx((10.0 + 20.0) / 2)
    # ITL is pooled across requests.
    assert s["itl_ms"]["median"] == pytest.approx(15.0)
    assert s["e2el_ms"]["median"] == pytest.approx(80.0)
    assert s["queue_ms"]["mean"] == pytest.approx(5.0 / 3)


def test_summarize_no_wall_gives_no_throughput():
    s = summarize(_records()[:1], wall_s=0.0)
    assert s["completed"] == 0
    assert s["request_throughput"] is None
    assert s["ttft_ms"]["median"] is None


def test_summarize_accepts_logbook_rows_and_derives_wall():
    rows = []
    for rec in _records():
        row = rec.to_dict()
        row["itls_s"] = json.dumps(row["itls_s"])  # as stored in SQLite
        rows.append(row)
    # first send 0.0, last finish 0.01 + 0.130
    assert wall_from_records(rows) == pytest.approx(0.14)
    s = summarize(rows, wall_s=None)
    assert s["wall_s"] == pytest.approx(0.14)
    assert s["itl_ms"]["median"] == pytest.approx(15.0)
    assert s["request_throughput"] == pytest.approx(3 / 0.14)
