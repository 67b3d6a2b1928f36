import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from lab.record.logbook import INTERRUPTED, MIGRATIONS, PASS, RUNNING, Logbook
from lab.record.values import GpusValues


def test_new_db_is_migrated_and_in_wal_mode(fresh_db):
    assert fresh_db.schema_version == len(MIGRATIONS)
    mode = fresh_db.db.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert {"runs", "steps", "samples", "requests", "servers", "notes"} <= set(fresh_db.db.table_names())


def test_reopening_does_not_migrate_again(tmp_path):
    Logbook(tmp_path / "lab.db").start_run("day3")
    book = Logbook(tmp_path / "lab.db")
    assert book.schema_version == len(MIGRATIONS)
    assert len(book.runs()) == 1


def test_step_is_written_at_start_and_at_end(fresh_db):
    run = fresh_db.start_run("day3", profile="cpu")
    step = fresh_db.start_step(run, "gpus", title="t", command="nvidia-smi", expected="")
    assert fresh_db.step(step)["status"] == RUNNING
    fresh_db.end_step(step, status=PASS, actual="1 GPU", values=GpusValues(free_gpus=1))
    row = fresh_db.step(step)
    assert row["status"] == PASS and row["values"] == GpusValues(free_gpus=1)
    assert (row["value_type"], row["value_version"]) == ("GpusValues", 1)
    assert row["duration_s"] >= 0


def test_a_step_without_values_reads_as_not_measured(fresh_db):
    run = fresh_db.start_run("day3")
    step = fresh_db.start_step(run, "serve", title="t", command="c", expected="")
    assert fresh_db.step(step)["values"] is None
    fresh_db.end_step(step, status="fail", reason="boom")
    assert fresh_db.step(step)["values"] is None and fresh_db.step(step)["value_type"] is None


def test_only_registered_types_are_stored(fresh_db):
    run = fresh_db.start_run("day3")
    step = fresh_db.start_step(run, "gpus", title="t", command="c", expected="")
    with pytest.raises(TypeError, match="not a registered step value type"):
        fresh_db.end_step(step, status=PASS, values={"free_gpus": 1})  # type: ignore[arg-type]


def test_request_itls_are_stored_as_float32_and_read_back(fresh_db):
    run = fresh_db.start_run("day4")
    step = fresh_db.start_step(run, "bench", title="t", command="c", expected="")
    fresh_db.add_request(run, step, "sweep", {"level": "c1", "concurrency": 1, "idx": 0,
                                              "ok": True, "itls_s": [0.005, 0.0061, 0.25]})
    fresh_db.add_request(run, step, "sweep", {"level": "c1", "concurrency": 1, "idx": 1, "ok": False})
    blob, text = fresh_db.db.conn.execute(
        "select itls_s_f32, itls_s from requests order by id").fetchone()
    assert len(blob) == 3 * 4 and text is None
    rows = fresh_db.requests(step)
    assert rows[0]["itls_s"] == pytest.approx([0.005, 0.0061, 0.25], rel=1e-6)
    assert rows[1]["itls_s"] == [] and rows[1]["ok"] == 0


def test_latest_steps_picks_newest_record_per_key(fresh_db):
    for actual in ("first", "second"):
        run = fresh_db.start_run("day3")
        s = fresh_db.start_step(run, "serve", title="t", command="c", expected="")
        fresh_db.end_step(s, status=PASS, actual=actual)
    assert fresh_db.latest_steps("day3")["serve"]["actual"] == "second"


def test_recover_marks_a_dead_writer_interrupted(tmp_path):
    path = tmp_path / "lab.db"
    code = textwrap.dedent(f"""
        import os, time
        from lab.record.logbook import Logbook
        b = Logbook({str(path)!r})
        r = b.start_run("day3")
        b.start_step(r, "serve", title="t", command="c", expected="")
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    book = Logbook(path)
    assert book.recover() == 1
    step = book.latest_steps("day3")["serve"]
    assert step["status"] == INTERRUPTED
    assert book.runs()[0]["status"] == INTERRUPTED
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _writer(path, n, tag):
    book = Logbook(path)
    run = book.start_run("day4", task=tag)
    step = book.start_step(run, "bench", title="t", command="c", expected="")
    for i in range(n):
        book.add_request(run, step, tag, {"idx": i, "ok": True, "level": tag})
        book.add_samples(run, step, [{"t": time.time(), "source": "nvml", "device": "0",
                                      "mem_used_mib": i}])


def test_two_processes_write_at_once_without_losing_rows(tmp_path):
    path = tmp_path / "lab.db"
    Logbook(path).close()
    procs = [multiprocessing.Process(target=_writer, args=(path, 200, f"w{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0  # a "database is locked" error would exit non-zero
    book = Logbook(path)
    assert book.db["requests"].count == 400
    assert book.db["samples"].count == 400


def test_notes_are_upserted(fresh_db):
    fresh_db.mark_done("q1", note="first")
    fresh_db.mark_done("q1", note="better")
    assert fresh_db.notes()["q1"]["note"] == "better"
