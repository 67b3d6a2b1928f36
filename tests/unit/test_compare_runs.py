"""`invoke compare-runs A B`: what changed between two runs of one day, each step's key
figures read from its typed values."""
from dataclasses import asdict

import pytest
from rich.console import Console

from lab.core.errors import LabError
from lab.deliver import compare_runs
from lab.deliver.gather import gather
from lab.record.logbook import PASS
from lab.record.queries import Records
from lab.record.values import (
    BenchMetrics,
    BenchValues,
    KvUsage,
    LatencyLoop,
    LatencyStats,
    LevelSummary,
    ServeValues,
)
from lab.ui import tables
from tests.fakes.fake_logbook import _crit, _step


def data_of(book):
    return gather(book, now=1.0e9, measurements=False)


def test_compare_runs_shows_what_changed(fresh_db):
    runs = []
    for ready, tokens in ((58.1, 1048576), (40.0, 2097152)):
        run = fresh_db.start_run("day3", profile="cpu")
        _step(fresh_db, run, "serve", PASS, ServeValues(ready_s=ready, kv_cache_tokens=tokens))
        fresh_db.end_run(run, PASS)
        runs.append(run)
    found = compare_runs.compare_runs(data_of(fresh_db), *runs)
    rows = {(r.section, r.item): r for r in found.rows}
    ready = rows[("serve", "startup (until /health = 200) (s)")]
    assert (ready.a, ready.b) == ("58.10", "40.00")
    assert ready.change == "-18.10 (-31.2 %) ▲ better"
    assert rows[("serve", "KV-cache capacity (tokens)")].change.endswith("(+100.0 %) ▲ better")
    assert rows[("run", "status")].change == "="
    console = Console(record=True, width=200)
    console.print(tables.compare_table(asdict(found), "en"))
    assert f"day3: run #{runs[0]} → run #{runs[1]}" in console.export_text()


def test_compare_runs_of_different_days_or_unknown_runs_is_one_clear_error(fresh_db):
    a = fresh_db.start_run("day3")
    b = fresh_db.start_run("day4")
    with pytest.raises(LabError, match="compare two runs of the same day"):
        compare_runs.compare_runs(data_of(fresh_db), a, b)
    with pytest.raises(LabError, match="no run #77"):
        compare_runs.compare_runs(data_of(fresh_db), a, 77)


def test_key_figures_read_the_bench_as_lab_bench_records_it(fresh_db):
    run = fresh_db.start_run("day4")
    _step(fresh_db, run, "bench", PASS, BenchValues(
        latency=LatencyLoop(avg_latency_ms=812.5),
        levels=[LevelSummary(concurrency=4, output_tok_s=600.0, ttft_ms=LatencyStats(median=30.0),
                             tpot_ms=LatencyStats(median=6.0))],
        metrics=BenchMetrics(kv=KvUsage(peak_kv_usage_frac=0.25))),
          [_crit("no_errors", "n", "n", 0, PASS)])
    step = Records(fresh_db).latest("bench")
    figs = {f.label: f.value for f in compare_runs.key_figures(step)}
    assert figs == {"latency loop mean": 812.5, "peak KV-cache usage": 25.0,
                    "c4 output throughput": 600.0, "c4 TTFT median": 30.0, "c4 TPOT median": 6.0}


def test_a_step_with_nothing_measured_has_no_figures(fresh_db):
    run = fresh_db.start_run("day3")
    _step(fresh_db, run, "serve", "fail", None, reason="boom")
    assert compare_runs.key_figures(Records(fresh_db).latest("serve")) == []
