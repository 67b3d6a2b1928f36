"""lab.deliver.gather: the one reading of the logbook per render. The sweep aggregated in SQL
and numpy equals lab.measure.stats.summarize (vllm bench serve's arithmetic) row for row; the
steps the report is drawn from follow the report's rules (the bench's run, else earlier on
the same host); the monitor samples are summarised in SQL."""
import random

import pytest

from lab.deliver.gather import gather
from lab.measure import stats
from lab.record.logbook import PASS
from lab.record.values import BenchValues, GpusValues, LatencyLoop, LevelSummary, ServeValues
from tests.fakes.fake_logbook import _step, h100


def _stats_equal(got, want: dict) -> None:
    for stat in ("mean", "median", "p90", "p99"):
        if want[stat] is None:
            assert getattr(got, stat) is None
        else:
            assert getattr(got, stat) == pytest.approx(want[stat], rel=1e-6), stat


def _messy_level(book, run, step, rng, c: int, n: int) -> list[dict]:
    """Requests of one level with every case summarize handles: a warm-up, failures (one a
    timeout), a one-token reply (no TPOT), a request without TTFT, ITLs."""
    rows = []
    for i in range(-1, n):
        ok = i % 7 != 3
        rec = {"level": f"c{c}", "concurrency": c, "idx": i, "warmup": i < 0, "ok": ok,
               "error": None if ok else ("timeout" if i % 2 else "HTTP 500"),
               "input_tokens": 32, "output_tokens": 1 if i == 2 else 32,
               "queue_s": rng.uniform(0, 0.01), "sent_at_s": i * 0.1 + rng.uniform(0, 0.05),
               "ttft_s": None if (not ok or i == 4) else rng.uniform(0.01, 0.05),
               "tpot_s": None if (not ok or i == 2) else rng.uniform(0.002, 0.004),
               "e2el_s": rng.uniform(0.1, 0.3) if ok else None,
               "itls_s": [rng.uniform(0.001, 0.005) for _ in range(31)] if ok and i != 2 else []}
        book.add_request(run, step, "sweep", rec)
        rows.append(rec)
    return rows


def test_the_sweep_in_sql_and_numpy_equals_summarize(fresh_db):
    rng = random.Random(3)
    run = fresh_db.start_run("day4", profile="cpu")
    step = fresh_db.start_step(run, "bench", title="b", command="c", expected="")
    by_level = {c: _messy_level(fresh_db, run, step, rng, c, 20) for c in (4, 1)}
    fresh_db.add_request(run, step, "latency", {"level": "sequential", "concurrency": 1, "idx": 0,
                                                "ok": True, "e2el_s": 1.5})
    fresh_db.end_step(step, status=PASS, values=BenchValues())
    data = gather(fresh_db, now=0.0)
    assert [lv.concurrency for lv in data.levels] == [1, 4]
    for lv in data.levels:
        want = stats.summarize(by_level[lv.concurrency], None)
        got = lv.summary
        assert lv.source == "requests" and lv.n == want["requests"] == 20
        assert (got.requests, got.completed, got.failed, got.timeouts) == \
            (want["requests"], want["completed"], want["failed"], want["timeouts"])
        assert got.wall_s == pytest.approx(want["wall_s"])
        assert (got.total_input_tokens, got.total_output_tokens) == \
            (want["total_input_tokens"], want["total_output_tokens"])
        assert got.requests_per_s == pytest.approx(want["request_throughput"])
        assert got.output_tok_s == pytest.approx(want["output_throughput"])
        assert got.total_tok_s == pytest.approx(want["total_token_throughput"])
        for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "queue_ms"):
            _stats_equal(getattr(got, name), want[name])
        assert got.level == f"c{lv.concurrency}"
        # the distribution plot gets the same successful, measured requests
        assert len(lv.ttft_ms) == sum(1 for r in by_level[lv.concurrency]
                                      if r["ok"] and not r["warmup"] and r["ttft_s"] is not None)


def test_the_sweep_falls_back_to_other_phases_then_to_the_recorded_summaries(fresh_db):
    run = fresh_db.start_run("day4")
    step = fresh_db.start_step(run, "bench", title="b", command="c", expected="")
    for i in range(3):  # an old logbook without phase names; no concurrency: left out
        fresh_db.add_request(run, step, None, {"level": "c2", "concurrency": 2, "idx": i,
                                               "ok": True, "sent_at_s": float(i), "e2el_s": 1.0,
                                               "output_tokens": 10})
    fresh_db.add_request(run, step, None, {"level": "x", "concurrency": None, "idx": 9, "ok": True})
    fresh_db.end_step(step, status=PASS, values=BenchValues())
    (level,) = gather(fresh_db, now=0.0).levels
    assert level.concurrency == 2 and level.summary.wall_s == 3.0
    assert level.summary.output_tok_s == 10.0

    run = fresh_db.start_run("day4")
    recorded = LevelSummary(concurrency=8, completed=5, output_tok_s=99.0)
    _step(fresh_db, run, "bench", PASS, BenchValues(levels=[recorded, LevelSummary()]))
    data = gather(fresh_db, now=0.0)
    assert [(lv.source, lv.summary) for lv in data.levels] == [("values", recorded)]
    assert data.latency is None


def test_the_latency_loop_from_its_rows_else_from_the_values(fresh_db):
    run = fresh_db.start_run("day4")
    step = fresh_db.start_step(run, "bench", title="b", command="c", expected="")
    for i, (ok, e2el) in enumerate(((True, 1.0), (True, 2.0), (False, None), (True, 3.0))):
        fresh_db.add_request(run, step, "latency", {"concurrency": 1, "idx": i, "ok": ok,
                                                    "e2el_s": e2el})
    fresh_db.add_request(run, step, "latency", {"concurrency": 1, "idx": -1, "ok": True,
                                                "warmup": True, "e2el_s": 9.0})
    fresh_db.end_step(step, status=PASS, values=BenchValues(latency=LatencyLoop(avg_latency_ms=5.0)))
    loop = gather(fresh_db, now=0.0).latency
    assert (loop.avg_latency_ms, loop.min_latency_ms, loop.max_latency_ms) == (2000.0, 1000.0, 3000.0)
    assert (loop.requests, loop.failed, loop.source) == (4, 1, "requests")

    run = fresh_db.start_run("day4")
    _step(fresh_db, run, "bench", PASS, BenchValues(latency=LatencyLoop(
        runs=10, failed=0, avg_latency_ms=1945.0, min_latency_ms=1900.0, max_latency_ms=1990.0)))
    loop = gather(fresh_db, now=0.0).latency
    assert (loop.avg_latency_ms, loop.requests, loop.source) == (1945.0, 10, "values")


def _serve(book, run, ready_s):
    return _step(book, run, "serve", PASS, ServeValues(ready_s=ready_s, profile="gpu"))


def test_the_report_takes_the_serve_and_gpus_the_bench_ran_on(fresh_db):
    day3 = fresh_db.start_run("day3", profile="gpu")
    _step(fresh_db, day3, "gpus", PASS, GpusValues(gpus=[h100(0), h100(1)]))
    _serve(fresh_db, day3, 10.0)
    day4 = fresh_db.start_run("day4", profile="gpu")
    _step(fresh_db, day4, "bench", PASS, BenchValues(profile="gpu"))
    later = fresh_db.start_run("day3", profile="gpu")
    _serve(fresh_db, later, 99.0)                         # after the bench: not the one benchmarked
    other_host = fresh_db.start_run("day3", profile="gpu")
    fresh_db.db["runs"].update(other_host, {"host": "elsewhere"})
    _step(fresh_db, other_host, "gpus", PASS, GpusValues(gpus=[h100(5)]))
    data = gather(fresh_db, now=0.0)
    assert data.bench.run_id == day4 and data.serve.run_id == day3
    assert data.serve.values.ready_s == 10.0 and data.gpus.run_id == day3
    assert [r.id for r in data.runs] == [day3, day4]
    assert data.profile == "gpu"

    # a bench run that served its own server reports that one
    own = fresh_db.start_run("day4", profile="gpu")
    _serve(fresh_db, own, 42.0)
    _step(fresh_db, own, "bench", PASS, BenchValues())
    assert gather(fresh_db, now=0.0).serve.values.ready_s == 42.0
    # --run picks an earlier day4 run
    assert gather(fresh_db, day4, now=0.0).serve.values.ready_s == 10.0


def test_samples_are_summarised_in_sql_and_only_monitors_with_samples_count(fresh_db):
    run = fresh_db.start_run("day3", profile="cpu")
    with_samples = _step(fresh_db, run, "monitor", PASS, None)
    fresh_db.add_samples(run, with_samples, [{"t": float(i), "source": "process", "device": "tree",
                                              "rss_mib": 100.0 + i, "cpu_pct": 50.0 * i}
                                             for i in range(4)])
    _step(fresh_db, fresh_db.start_run("day3"), "monitor", PASS, None)   # newer, no samples
    data = gather(fresh_db, now=0.0)
    assert data.monitor.id == with_samples and len(data.samples) == 8
    stats_ = {(s.field, s.device): s for s in data.sample_stats}
    assert (stats_[("rss_mib", "tree")].peak, stats_[("rss_mib", "tree")].mean) == (103.0, 101.5)
    assert stats_[("cpu_pct", "tree")].n == 4
    assert [s.field for s in data.sample_stats] == ["cpu_pct", "rss_mib"]


def test_records_only_reads_no_measurement(fresh_db):
    run = fresh_db.start_run("day4")
    _step(fresh_db, run, "bench", PASS, BenchValues(levels=[LevelSummary(concurrency=1)]))
    data = gather(fresh_db, now=123.0, measurements=False)
    assert data.now == 123.0 and data.bench is None and data.levels == []
    assert [s.key for s in data.records.steps] == ["bench"]
    assert isinstance(data.records.steps[0].values, BenchValues)
