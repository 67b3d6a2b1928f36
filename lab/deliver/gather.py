"""The one reading of the logbook per render: `gather` returns every run, step, server and
note as typed records (lab.record.queries), the steps the report is drawn from, and the
Day 4 sweep aggregated per concurrency level in SQL and numpy, never as one Python dict per
request row. Every output (lab.deliver.*) is a peer that takes this data, the language and
the output folder.

The sweep, as `vllm bench serve` computes it (lab.measure.stats' definitions): counts, token
totals and the wall time per level in one GROUP BY query; latency percentiles (numpy,
linear) over one column query of the successful, non-warm-up requests, one level at a time;
ITLs pooled per level from their float32 arrays.

Command line equivalent: `sqlite3 logbook/lab.db 'select concurrency, count(*) from requests
where phase = "sweep" group by concurrency'`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import numpy as np

from lab.core.errors import LabError
from lab.record.logbook import Logbook
from lab.record.queries import Records, Run, Server, Step
from lab.record.values import (
    BenchValues,
    CompareValues,
    GpusValues,
    InstallValues,
    LatencyStats,
    LevelSummary,
    ServeValues,
)


@dataclass
class Level:
    """One level of the sweep: its summary, recomputed from the requests table ("requests")
    or as the bench step recorded it ("values"), and how many requests it measured."""

    summary: LevelSummary
    source: str
    n: int | None
    #: Per successful, measured request (ms), for the distribution plot ("requests" only).
    ttft_ms: np.ndarray | None = None
    tpot_ms: np.ndarray | None = None

    @property
    def concurrency(self) -> int:
        return self.summary.concurrency or 0


@dataclass
class LoopSummary:
    """Seed 000's latency loop: sequential requests, avg/min/max end-to-end ms."""

    avg_latency_ms: float | None
    min_latency_ms: float | None
    max_latency_ms: float | None
    requests: int | None
    failed: int | None
    source: str  # "requests" or "values"


@dataclass
class Sample:
    """One sampled value of the monitor step's timeline."""

    t: float
    source: str
    device: str
    field: str
    value: float


@dataclass
class SampleStats:
    """Peak, mean and count of one sampled field on one device (the dashboard's table)."""

    source: str
    device: str
    field: str
    peak: float
    mean: float
    n: int


@dataclass
class LabData:
    """Everything a render needs, read once. `report_run_id`: the Day 4 run whose bench and
    compare the report shows (None: the latest recorded)."""

    now: float
    records: Records
    report_run_id: int | None = None
    bench: Step | None = None
    compare: Step | None = None
    serve: Step | None = None
    server: Server | None = None
    gpus: Step | None = None
    monitor: Step | None = None
    install: Step | None = None
    offline: Step | None = None
    metrics: Step | None = None
    levels: list[Level] = field(default_factory=list)
    latency: LoopSummary | None = None
    samples: list[Sample] = field(default_factory=list)
    sample_stats: list[SampleStats] = field(default_factory=list)
    profile: str | None = None

    @property
    def runs(self) -> list[Run]:
        """The runs the report's figures come from, oldest first."""
        used = {
            s.run_id
            for s in (
                self.bench,
                self.compare,
                self.serve,
                self.gpus,
                self.monitor,
                self.install,
                self.offline,
            )
            if s
        }
        return [self.records.runs[i] for i in sorted(used) if i in self.records.runs]


def gather(
    book: Logbook, run_id: int | None = None, *, now: float, measurements: bool = True
) -> LabData:
    """Read the logbook once. `run_id`: a Day 4 run whose bench and compare the report shows
    (default: the latest recorded). `measurements=False` reads only the records (runs,
    steps, servers, notes): enough for the day logs, progress and run comparisons."""
    rec = Records(book)
    data = LabData(now=now, records=rec, report_run_id=run_id)
    if not measurements:
        return data
    if run_id is not None:
        run = rec.run(run_id)
        if run.day != "day4":
            raise LabError(
                f"run #{run_id} is a {run.day} run; --run takes a day4 run "
                "(the one whose bench and compare to report)"
            )
    _pick_steps(book, data)
    conn = book.db.conn
    if data.bench is not None:
        data.levels = sweep(conn, data.bench)
        data.latency = latency_loop(conn, data.bench)
    if data.monitor is not None:
        data.samples = [
            Sample(*r)
            for r in conn.execute(
                "SELECT t, source, device, field, value FROM samples WHERE step_id = ? "
                "ORDER BY t, id",
                [data.monitor.id],
            )
        ]
        data.sample_stats = [
            SampleStats(*r)
            for r in conn.execute(
                "SELECT source, device, field, MAX(value), AVG(value), COUNT(*) FROM samples "
                "WHERE step_id = ? GROUP BY source, device, field ORDER BY source, device, field",
                [data.monitor.id],
            )
        ]
    return data


def _has_gpus(step: Step) -> bool:
    return isinstance(step.values, GpusValues) and bool(step.values.gpus)


def _profile(rec: Records, step: Step | None) -> str | None:
    if step is None:
        return None
    v = step.values
    recorded = v.profile if isinstance(v, (ServeValues, BenchValues, CompareValues)) else None
    return recorded or rec.runs[step.run_id].profile


def _pick_steps(book: Logbook, data: LabData) -> None:
    """The steps the report is drawn from, by the rules of the report: the bench and compare
    of the chosen run (else the latest), and the serve and GPUs they ran on (same run, else
    earlier on the same host)."""
    rec, run_id = data.records, data.report_run_id
    data.bench = rec.latest("bench", run_id=run_id)
    data.compare = rec.latest("compare", run_id=run_id)
    anchor = data.bench or data.compare
    with_samples = {r[0] for r in book.db.conn.execute("SELECT DISTINCT step_id FROM samples")}
    sampled = lambda s: s.id in with_samples  # noqa: E731
    if anchor:
        host = rec.runs[anchor.run_id].host
        same_host = lambda s: rec.host_of(s) == host  # noqa: E731
        data.serve = rec.latest("serve", run_id=anchor.run_id) or rec.latest(
            "serve", before=anchor.started_at, where=same_host
        )
        data.gpus = rec.latest("gpus", run_id=anchor.run_id, where=_has_gpus) or rec.latest(
            "gpus", before=anchor.started_at, where=lambda s: same_host(s) and _has_gpus(s)
        )
        data.monitor = rec.latest("monitor", run_id=anchor.run_id, where=sampled)
    else:
        data.serve = rec.latest("serve")
        data.gpus = rec.latest("gpus", where=_has_gpus) or rec.latest("gpus")
    data.monitor = data.monitor or rec.latest("monitor", where=sampled)
    data.install = rec.latest(
        "install",
        where=lambda s: (
            isinstance(s.values, InstallValues)
            and s.values.versions is not None
            and bool(s.values.versions.vllm)
        ),
    )
    data.offline = rec.latest("offline")
    data.metrics = rec.latest("metrics")
    serve = data.serve
    data.server = next((s for s in reversed(rec.servers) if serve and s.step_id == serve.id), None)
    data.profile = _profile(rec, serve or anchor)


# ------------------------------------------------------------------------------ the sweep
_LEVEL_TOTALS = """
SELECT concurrency,
       SUM(warmup = 0), SUM(warmup = 0 AND ok != 0), SUM(warmup = 0 AND ok = 0),
       SUM(warmup = 0 AND ok = 0 AND error = 'timeout'),
       MIN(CASE WHEN warmup = 0 THEN sent_at_s END),
       MAX(CASE WHEN warmup = 0 AND sent_at_s IS NOT NULL THEN sent_at_s + e2el_s END),
       SUM(CASE WHEN warmup = 0 AND ok != 0 THEN COALESCE(input_tokens, 0) ELSE 0 END),
       SUM(CASE WHEN warmup = 0 AND ok != 0 THEN COALESCE(output_tokens, 0) ELSE 0 END)
FROM requests WHERE step_id = ? AND {phase} AND concurrency
GROUP BY concurrency ORDER BY concurrency
"""
_LEVEL_NAMES = """
SELECT concurrency, level FROM requests WHERE id IN (
  SELECT MIN(id) FROM requests WHERE step_id = ? AND {phase} AND concurrency GROUP BY concurrency)
"""
_LEVEL_TIMES = """
SELECT ttft_s, tpot_s, e2el_s, queue_s, itls_s_f32 FROM requests
WHERE step_id = ? AND {phase} AND concurrency = ? AND warmup = 0 AND ok != 0
"""


def sweep(conn: sqlite3.Connection, bench: Step) -> list[Level]:
    """The sweep's levels, recomputed from the `requests` table where it has the rows
    (phase "sweep"; else every phase but the latency loop); otherwise the summaries the
    bench step recorded."""
    phase = "phase = 'sweep'"
    if (
        conn.execute(
            f"SELECT 1 FROM requests WHERE step_id = ? AND {phase} LIMIT 1", [bench.id]
        ).fetchone()
        is None
    ):
        phase = "(phase IS NULL OR phase != 'latency')"
    names = dict(conn.execute(_LEVEL_NAMES.format(phase=phase), [bench.id]).fetchall())
    totals = conn.execute(_LEVEL_TOTALS.format(phase=phase), [bench.id]).fetchall()
    if not totals:
        recorded = bench.values.levels if isinstance(bench.values, BenchValues) else []
        levels = [Level(lv, "values", lv.requests) for lv in recorded if lv.concurrency]
        return sorted(levels, key=lambda lv: lv.concurrency)
    out = []
    for c, requests, completed, failed, timeouts, first, last, tokens_in, tokens_out in totals:
        wall = last - first if first is not None and last is not None else None
        ttft, tpot, e2el, queue, itl = _times(
            conn.execute(_LEVEL_TIMES.format(phase=phase), [bench.id, c]).fetchall()
        )
        out.append(
            Level(
                LevelSummary(
                    concurrency=c,
                    level=names.get(c) or f"c{c}",
                    requests=requests,
                    completed=completed,
                    failed=failed,
                    timeouts=timeouts,
                    wall_s=wall,
                    total_input_tokens=tokens_in,
                    total_output_tokens=tokens_out,
                    requests_per_s=_per_s(completed, wall),
                    output_tok_s=_per_s(tokens_out, wall),
                    total_tok_s=_per_s(tokens_in + tokens_out, wall),
                    ttft_ms=_stats(ttft),
                    tpot_ms=_stats(tpot),
                    itl_ms=_stats(itl),
                    e2el_ms=_stats(e2el),
                    queue_ms=_stats(queue),
                ),
                "requests",
                requests,
                ttft_ms=ttft,
                tpot_ms=tpot,
            )
        )
    return out


def _times(rows: list[tuple]) -> tuple[np.ndarray, ...]:
    """(ttft, tpot, e2el, queue, itl) in ms of one level's successful, measured requests, one
    array per column (a missing value is left out, never counted as 0); ITLs pooled."""
    if not rows:
        return (np.empty(0),) * 5
    columns = list(zip(*rows, strict=True))
    out: list[np.ndarray] = []
    for col in columns[:4]:
        values = np.array(col, dtype=np.float64)  # None -> nan
        out.append(values[~np.isnan(values)] * 1000.0)
    blobs = b"".join(b for b in columns[4] if b)
    # ITLs stay float32 (as stored); _stats takes their mean in float64.
    out.append(np.frombuffer(blobs, dtype=np.float32) * np.float32(1000.0))
    return tuple(out)


def _stats(values: np.ndarray) -> LatencyStats:
    """lab.measure.stats.percentiles over an array: mean, median, p90, p99 (numpy, linear);
    all None when empty."""
    if values.size == 0:
        return LatencyStats()
    mean = float(values.mean(dtype=np.float64))
    # overwrite_input: partition in place, no copy (the order of these values means nothing)
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="linear", overwrite_input=True)
    return LatencyStats(mean, float(p50), float(p90), float(p99))


def _per_s(count: float | None, wall_s: float | None) -> float | None:
    """A rate over the wall time; None without a positive wall time."""
    if count is None or not wall_s or wall_s <= 0:
        return None
    return count / wall_s


def latency_loop(conn, bench: Step) -> LoopSummary | None:
    """Seed 000's latency script (sequential requests: avg/min/max ms), from the request rows
    of phase "latency" when recorded, else from the bench step's values."""
    n, failed, avg, low, high = conn.execute(
        "SELECT COUNT(*), SUM(ok = 0), "
        "AVG(CASE WHEN ok != 0 THEN e2el_s * 1000 END), "
        "MIN(CASE WHEN ok != 0 THEN e2el_s * 1000 END), "
        "MAX(CASE WHEN ok != 0 THEN e2el_s * 1000 END) "
        "FROM requests WHERE step_id = ? AND phase = 'latency' AND warmup = 0",
        [bench.id],
    ).fetchone()
    if n:
        return LoopSummary(avg, low, high, n, failed, "requests")
    lat = bench.values.latency if isinstance(bench.values, BenchValues) else None
    if lat is None:
        return None
    return LoopSummary(
        lat.avg_latency_ms, lat.min_latency_ms, lat.max_latency_ms, lat.runs, lat.failed, "values"
    )
