"""lab.measure.sampler: the background sampling thread, its sink and its summary."""
from __future__ import annotations

import itertools
import logging
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab.core.units import imbalance_pct  # noqa: E402
from lab.measure import nvml  # noqa: E402
from lab.measure.sampler import Sampler  # noqa: E402
from tests.fakes import fake_pynvml as fake  # noqa: E402

FAST = 0.01


def _cycling(values):
    it = itertools.cycle(values)

    def sample():
        v = next(it)
        return [{"t": time.time(), "source": "fake", "device": "0", "mem_used_mib": v, "util_pct": v / 10},
                {"t": time.time(), "source": "fake", "device": "1", "mem_used_mib": v * 2, "util_pct": None}]
    return sample


def _wait_for(cond, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


class ListSink:
    def __init__(self, store):
        self.store = store
        self.thread = threading.get_ident()
        self.flushed = self.closed = 0

    def write(self, rows):
        assert threading.get_ident() == self.thread
        self.store.extend(rows)

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed += 1


def test_rows_reach_the_sink_and_summary_matches():
    store, sinks = [], []

    def factory():
        sinks.append(ListSink(store))
        return sinks[0]

    with Sampler(_cycling([100, 300, 200]), factory, interval_s=FAST) as s:
        assert _wait_for(lambda: s.samples >= 6)
    assert not s.running
    (sink,) = sinks
    assert sink.thread != threading.get_ident()  # built in the sampler thread
    assert (sink.flushed, sink.closed) == (1, 1)
    st = s.stats()
    assert st["rows"] == st["rows_written"] == len(store) == 2 * s.samples
    assert st["errors"] == st["sink_errors"] == st["rows_dropped"] == st["rows_pending"] == 0

    summ = s.summary()
    dev0 = [r["mem_used_mib"] for r in store if r["device"] == "0"]
    assert summ[("fake", "0", "mem_used_mib")] == {"peak": max(dev0), "min": min(dev0),
                                                    "mean": pytest.approx(sum(dev0) / len(dev0)), "n": len(dev0)}
    assert summ[("fake", "1", "mem_used_mib")]["peak"] == 600
    assert summ[("fake", "0", "util_pct")]["peak"] == 30
    assert ("fake", "1", "util_pct") not in summ  # only None: nothing to aggregate, no fake 0
    assert not any(f == "t" for (_, _, f) in summ)
    rows = s.summary_rows()
    assert {"source", "device", "field", "peak", "min", "mean", "n"} <= set(rows[0])


def test_sqlite_connection_made_and_used_in_the_sampler_thread(tmp_path):
    db = tmp_path / "lab.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE samples (t REAL, source TEXT, device TEXT, mem_used_mib REAL)")

    class SqliteSink:
        def __init__(self):
            # check_same_thread=True (the default): any use from another thread raises.
            self.conn = sqlite3.connect(db, timeout=5)
            self.conn.execute("PRAGMA journal_mode=WAL")

        def write(self, rows):
            self.conn.executemany("INSERT INTO samples VALUES (:t, :source, :device, :mem_used_mib)", rows)
            self.conn.commit()

        def close(self):
            self.conn.close()

    with Sampler(_cycling([1, 2, 3]), SqliteSink, interval_s=FAST) as s:
        assert _wait_for(lambda: s.rows_written >= 10)
    assert s.sink_errors == 0, s.first_sink_error
    with sqlite3.connect(db) as check:
        (n,) = check.execute("SELECT COUNT(*) FROM samples").fetchone()
    assert n == s.rows == s.rows_written


def test_a_connection_from_another_thread_is_caught_not_silent(tmp_path):
    """The negative control for the test above: sharing the main thread's connection fails."""
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.execute("CREATE TABLE samples (t REAL, source TEXT, device TEXT, mem_used_mib REAL)")

    def write(rows):
        conn.executemany("INSERT INTO samples VALUES (:t, :source, :device, :mem_used_mib)", rows)

    with Sampler(_cycling([1]), lambda: write, interval_s=FAST) as s:
        assert _wait_for(lambda: s.samples >= 3)
    assert s.sink_errors >= 3 and s.rows_written == 0
    assert s.first_sink_error.startswith("ProgrammingError: SQLite objects created in a thread")
    assert s.stats()["rows_dropped"] == s.rows  # given up at stop, and counted
    conn.close()


def test_sample_errors_are_counted_and_not_fatal(caplog):
    calls = itertools.count(1)

    def flaky():
        n = next(calls)
        if n % 2:
            raise RuntimeError(f"boom {n}")
        return {"t": time.time(), "source": "fake", "device": "0", "mem_used_mib": n}

    store = []
    with (caplog.at_level(logging.WARNING, logger="lab.measure.sampler"),
          Sampler(flaky, lambda: store.extend, interval_s=FAST) as s):
        assert _wait_for(lambda: s.errors >= 3 and s.samples >= 3)
    assert s.first_error == "RuntimeError: boom 1"
    assert len(store) == s.samples  # a single dict is one row
    warnings = [r for r in caplog.records if "sample failed" in r.getMessage()]
    assert len(warnings) == 1 and "boom 1" in warnings[0].getMessage()
    assert s.stats()["errors"] == s.errors


def test_transient_sink_failure_loses_no_rows():
    store, attempts = [], itertools.count(1)

    def write(rows):
        if next(attempts) <= 2:
            raise sqlite3.OperationalError("database is locked")
        store.extend(rows)

    with Sampler(_cycling([5, 6]), lambda: write, interval_s=FAST) as s:
        assert _wait_for(lambda: s.rows_written >= 10)
    assert s.sink_errors == 2 and s.first_sink_error == "OperationalError: database is locked"
    assert len(store) == s.rows == s.rows_written and s.rows_dropped == 0
    ts = [r["t"] for r in store if r["device"] == "0"]
    assert ts == sorted(ts)  # retried rows kept their order


def test_pending_rows_are_capped():
    def always_fails(rows):
        raise OSError("disk full")

    with Sampler(_cycling([1]), lambda: always_fails, interval_s=FAST, max_pending_rows=4) as s:
        assert _wait_for(lambda: s.samples >= 5)
    st = s.stats()
    assert st["rows_written"] == 0 and st["rows_dropped"] == st["rows"]


def test_sink_factory_failure_keeps_the_summary():
    def factory():
        raise sqlite3.OperationalError("unable to open database file")

    with Sampler(_cycling([7]), factory, interval_s=FAST) as s:
        assert _wait_for(lambda: s.samples >= 2)
    assert s.sink_errors == 1 and "unable to open" in s.first_sink_error
    assert s.summary()[("fake", "0", "mem_used_mib")]["peak"] == 7


def test_bad_sink_type_is_reported():
    with Sampler(_cycling([7]), lambda: 42, interval_s=FAST) as s:
        assert _wait_for(lambda: s.samples >= 1)
    assert s.first_sink_error.startswith("TypeError: sink 42")


def test_lifecycle():
    s = Sampler(_cycling([1]), None, interval_s=10)
    s.stop()  # before start: no-op
    s.start()
    with pytest.raises(RuntimeError):
        s.start()
    t0 = time.monotonic()
    s.stop()
    s.stop()  # idempotent
    assert time.monotonic() - t0 < 2  # does not wait out the 10 s interval
    assert s.samples == 1  # the first sample is taken at start
    assert s.stats()["stopped_at"] >= s.stats()["started_at"]
    with pytest.raises(ValueError):
        Sampler(_cycling([1]), None, interval_s=0)


def test_interval_is_respected():
    with Sampler(_cycling([1]), None, interval_s=0.05) as s:
        time.sleep(0.33)
    assert 4 <= s.samples <= 9


def test_stuck_sample_fn_does_not_hang_stop():
    release = threading.Event()
    s = Sampler(lambda: release.wait(5) and [], None, interval_s=FAST, stop_timeout_s=0.2)
    s.start()
    time.sleep(0.05)
    s.stop()
    assert "did not stop within" in s.first_sink_error
    release.set()


def test_with_fake_nvml_timeline():
    nv = fake.two_h200()
    store = []
    with (nvml.nvml_session(nv),
          Sampler(lambda: nvml.sample_gpus(nvml=nv), lambda: store.extend, interval_s=FAST) as s):
        assert _wait_for(lambda: s.samples >= 2)
        nv.set_gpu(0, memory_used_mib=130000, utilization_gpu_pct=99)
        nv.set_gpu(1, memory_used_mib=129000, utilization_gpu_pct=97)
        n = s.samples
        assert _wait_for(lambda: s.samples >= n + 2)
    assert s.errors == 0 and nv.refcount == 0
    summ = s.summary()
    assert summ[("nvml", "0", "mem_used_mib")]["peak"] == 130000
    assert summ[("nvml", "1", "util_pct")]["peak"] == 97
    assert summ[("nvml", "0", "mem_total_mib")]["mean"] == 143771
    used = [summ[("nvml", d, "mem_used_mib")]["peak"] for d in ("0", "1")]
    assert imbalance_pct(used) < 10
    assert {r["device"] for r in store} == {"0", "1"}


def test_nvml_failure_in_thread_is_counted():
    nv = fake.no_library()
    with Sampler(lambda: nvml.sample_gpus(nvml=nv), None, interval_s=FAST) as s:
        assert _wait_for(lambda: s.errors >= 2)
    assert s.first_error == ("NvmlUnavailable: NVML unavailable: no NVIDIA driver found "
                             "(NVMLError_LibraryNotFound)")
    assert s.samples == 0 and s.summary() == {}
