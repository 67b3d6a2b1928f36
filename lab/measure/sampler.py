"""A background sampler: calls `sample_fn()` every `interval_s` on a daemon thread and hands
the rows to a sink (usually the logbook's `samples` table).

Why a sink *factory*: SQLite connections must not cross threads (the logbook gives each
thread its own connection), so the sink is built inside the sampler thread, used only
there, and flushed/closed there when the sampler stops.

A sink is either a callable `sink(rows)` or an object with `write(rows)`; `flush()` and
`close()` are called at stop when present. Errors never stop the sampler and are never
silent: they are counted, the first one's text is kept (`stats()`), and the first of each
kind is logged. Rows a sink failed to take are retried on the next tick (a busy database
is transient) and, once past `max_pending_rows`, dropped and counted.

Usage:
    with Sampler(lambda: nvml.sample_gpus([0, 1]), logbook_sink_factory, interval_s=0.5) as s:
        drive_load()
    s.summary()[("nvml", "0", "mem_used_mib")]["peak"]
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

Row = dict[str, Any]
SampleFn = Callable[[], "Iterable[Row] | Row | None"]


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class _Agg:
    __slots__ = ("low", "n", "peak", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.peak = -math.inf
        self.low = math.inf

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        self.peak = max(self.peak, v)
        self.low = min(self.low, v)


class Sampler:
    """Samples on a daemon thread; start()/stop() or `with Sampler(...) as s:`.

    sample_fn: returns a list of row dicts (or one dict, or None). Each row should carry
        't', 'source' and 'device'; every other numeric field is aggregated in summary().
    sink_factory: called once, inside the thread; returns the sink (see module doc).
        None keeps the rows only in the in-memory summary.
    interval_s: time between the starts of two samples. A slow sample delays the next
        one instead of causing a burst of catch-up samples. The first sample is taken at
        start, so even a sampler stopped at once has one.
    ignore_fields: fields never aggregated (timestamps, pids).

    Command line equivalent:
        nvidia-smi --query-gpu=timestamp,index,memory.used,utilization.gpu --format=csv -lms 500
    """

    def __init__(
        self,
        sample_fn: SampleFn,
        sink_factory: Callable[[], Any] | None = None,
        interval_s: float = 0.5,
        *,
        name: str = "lab-sampler",
        ignore_fields: Iterable[str] = ("t", "pid"),
        max_pending_rows: int = 100_000,
        stop_timeout_s: float | None = None,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.sample_fn = sample_fn
        self.sink_factory = sink_factory
        self.interval_s = float(interval_s)
        self.name = name
        self.ignore_fields = frozenset(ignore_fields)
        self.max_pending_rows = max_pending_rows
        # Generous by default: a sample stuck in the driver must not hang `invoke` forever.
        self.stop_timeout_s = (
            stop_timeout_s if stop_timeout_s is not None else max(10.0, 4 * self.interval_s)
        )

        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._agg: dict[tuple[str, str, str], _Agg] = {}
        self._pending: list[Row] = []
        self.samples = 0  # sample_fn calls that returned
        self.rows = 0  # rows produced by sample_fn
        self.rows_written = 0  # rows the sink accepted
        self.rows_dropped = 0  # rows given up on (sink kept failing)
        self.errors = 0  # sample_fn exceptions
        self.first_error: str | None = None
        self.sink_errors = 0  # sink_factory/write/flush/close exceptions
        self.first_sink_error: str | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("Sampler already started")
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, wait for the thread to flush and close its sink. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop_event.set()
        thread.join(self.stop_timeout_s)
        if thread.is_alive():
            self._sink_error(
                TimeoutError(
                    f"sampler thread did not stop within {self.stop_timeout_s:.0f} s (sample_fn stuck?)"
                )
            )
        if self.stopped_at is None:
            self.stopped_at = time.time()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ results
    def summary(self) -> dict[tuple[str, str, str], dict[str, float]]:
        """{(source, device, field): {'peak', 'min', 'mean', 'n'}} over every sample so far."""
        with self._lock:
            return {
                key: {"peak": a.peak, "min": a.low, "mean": a.total / a.n, "n": a.n}
                for key, a in self._agg.items()
                if a.n
            }

    def summary_rows(self) -> list[dict[str, Any]]:
        """summary() as JSON-ready rows: [{source, device, field, peak, min, mean, n}]."""
        return [
            {"source": s, "device": d, "field": f, **v}
            for (s, d, f), v in sorted(self.summary().items())
        ]

    def stats(self) -> dict[str, Any]:
        """Counters and first errors, for the step record (so failures are never silent)."""
        with self._lock:
            return {
                "samples": self.samples,
                "rows": self.rows,
                "rows_written": self.rows_written,
                "rows_pending": len(self._pending),
                "rows_dropped": self.rows_dropped,
                "errors": self.errors,
                "first_error": self.first_error,
                "sink_errors": self.sink_errors,
                "first_sink_error": self.first_sink_error,
                "interval_s": self.interval_s,
                "started_at": self.started_at,
                "stopped_at": self.stopped_at,
            }

    # ------------------------------------------------------------------ thread
    def _sample_error(self, err: BaseException) -> None:
        with self._lock:
            self.errors += 1
            first = self.first_error is None
            if first:
                self.first_error = _describe(err)
        if first:
            log.warning(
                "%s: sample failed (later failures are only counted): %s", self.name, _describe(err)
            )

    def _sink_error(self, err: BaseException) -> None:
        with self._lock:
            self.sink_errors += 1
            first = self.first_sink_error is None
            if first:
                self.first_sink_error = _describe(err)
        if first:
            log.warning(
                "%s: sink failed (later failures are only counted): %s", self.name, _describe(err)
            )

    def _aggregate(self, rows: list[Row]) -> None:
        with self._lock:
            self.samples += 1
            self.rows += len(rows)
            for row in rows:
                source = str(row.get("source", ""))
                device = str(row.get("device", ""))
                for key, value in row.items():
                    if key in self.ignore_fields or isinstance(value, bool):
                        continue
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        agg = self._agg.get((source, device, key))
                        if agg is None:
                            agg = self._agg[(source, device, key)] = _Agg()
                        agg.add(float(value))

    def _write(self, write: Callable[[list[Row]], Any] | None, rows: list[Row]) -> None:
        if write is None:
            return
        batch = self._pending + rows
        if not batch:
            return
        try:
            write(batch)
        except Exception as err:
            self._sink_error(err)
            if len(batch) > self.max_pending_rows:
                overflow = len(batch) - self.max_pending_rows
                batch = batch[overflow:]  # keep the newest
                with self._lock:
                    self.rows_dropped += overflow
            self._pending = batch
            return
        self._pending = []
        with self._lock:
            self.rows_written += len(batch)

    def _tick(self, write: Callable[[list[Row]], Any] | None) -> None:
        try:
            got = self.sample_fn()
        except Exception as err:
            self._sample_error(err)
            return
        if got is None:
            rows: list[Row] = []
        elif isinstance(got, dict):
            rows = [got]
        else:
            rows = list(got)
        self._aggregate(rows)
        self._write(write, rows)

    def _run(self) -> None:
        sink = None
        write = None
        if self.sink_factory is not None:
            try:
                sink = self.sink_factory()
                write = getattr(sink, "write", None) or (sink if callable(sink) else None)
                if write is None:
                    raise TypeError(f"sink {sink!r} is neither callable nor has write(rows)")
            except Exception as err:
                # Keep sampling: the in-memory summary still serves the step's criteria.
                self._sink_error(err)
                sink = write = None
        try:
            next_at = time.monotonic()
            while True:
                self._tick(write)
                next_at += self.interval_s
                delay = next_at - time.monotonic()
                if delay < 0:  # fell behind: restart the schedule, no burst
                    next_at = time.monotonic()
                    delay = 0
                if self._stop_event.wait(delay):
                    break
        finally:
            if self._pending and write is not None:
                self._write(write, [])  # one last try
            if self._pending:
                with self._lock:
                    self.rows_dropped += len(self._pending)
                self._pending = []
            for method in ("flush", "close"):
                fn = getattr(sink, method, None) if sink is not None else None
                if fn is not None:
                    try:
                        fn()
                    except Exception as err:
                        self._sink_error(err)
            self.stopped_at = time.time()
