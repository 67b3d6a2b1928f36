"""The logbook's runs, steps, servers and notes as typed records, read once (one query per
table), and the queries several readers share: the newest step matching some filters.

Command line equivalent: `sqlite3 logbook/lab.db 'select id, run_id, key, status from steps'`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.core.errors import LabError
from lab.record.logbook import RUNNING, Logbook, load_values
from lab.record.runner import Criterion
from lab.record.values import BalanceValues, BenchValues, ServeValues, StepValues


@dataclass
class Run:
    """One recorded run (`invoke day3`, `invoke serve`, …)."""

    id: int
    day: str
    task: str
    profile: str
    host: str
    status: str
    started_at: float
    ended_at: float | None = None
    pid: int | None = None
    lang: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        return self.ended_at - self.started_at if self.ended_at else None


@dataclass
class Step:
    """One recorded step: its verdict, its criteria and its typed values (None: nothing was
    measured, or a row no type reads)."""

    id: int
    run_id: int
    key: str
    title: str
    status: str
    started_at: float
    reason: str | None = None
    command: str | None = None
    expected: str | None = None
    actual: str | None = None
    criteria: list[Criterion] = field(default_factory=list)
    values: StepValues | None = None
    evidence: str | None = None
    fix: str | None = None
    ended_at: float | None = None
    duration_s: float | None = None

    @property
    def tp(self) -> int:
        """The tensor-parallel size the step ran with (1 when it has none)."""
        v = self.values
        return v.tp if isinstance(v, (ServeValues, BalanceValues, BenchValues)) else 1

    def criterion(self, pattern: str) -> Criterion | None:
        """The first criterion whose key matches the glob `pattern` (e.g. "*balance*")."""
        return next((c for c in self.criteria if fnmatch.fnmatchcase(c.key or "", pattern)), None)


@dataclass
class Server:
    """One server started (the `servers` table); `facts` are the serve values of its start."""

    id: int
    run_id: int | None
    step_id: int | None
    profile: str | None
    model: str | None
    tp: int | None
    argv: list[str]
    env: dict[str, str]
    host: str | None
    port: int | None
    pid: int | None
    log_path: str | None
    started_at: float | None
    ready_s: float | None
    stopped_at: float | None
    facts: ServeValues | None


@dataclass
class NoteRow:
    """A manual checklist item ticked (or unticked) with `invoke done`."""

    item: str
    done: bool
    note: str
    at: float | None


def _json(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text else empty


def _criteria(text: str | None) -> list[Criterion]:
    return [Criterion(**c) for c in _json(text, [])]


class Records:
    """Every run, step, server and note of the logbook, read once as typed records (a render
    reads only from these). Steps left "running" by a process that is gone are marked
    interrupted first (Logbook.recover)."""

    def __init__(self, book: Logbook):
        book.recover()
        self.path = book.path
        conn = book.db.conn
        self.runs: dict[int, Run] = {}
        for r in conn.execute(
            "SELECT id, day, task, profile, host, status, started_at, ended_at, "
            "pid, lang, versions, options FROM runs ORDER BY id"
        ):
            self.runs[r[0]] = Run(
                r[0],
                r[1],
                r[2],
                r[3] or "",
                r[4] or "",
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                _json(r[10], {}),
                _json(r[11], {}),
            )
        self.steps: list[Step] = [
            Step(
                id=r[0],
                run_id=r[1],
                key=r[2],
                title=r[3],
                status=r[4],
                started_at=r[5],
                reason=r[6],
                command=r[7],
                expected=r[8],
                actual=r[9],
                criteria=_criteria(r[10]),
                values=load_values(r[11], r[12], r[13]),
                evidence=r[14],
                fix=r[15],
                ended_at=r[16],
                duration_s=r[17],
            )
            for r in conn.execute(
                "SELECT id, run_id, key, title, status, started_at, reason, command, expected, "
                'actual, criteria, value_type, value_version, "values", evidence, fix, ended_at, '
                "duration_s FROM steps ORDER BY id"
            )
        ]
        self.by_id: dict[int, Step] = {s.id: s for s in self.steps}
        self.servers: list[Server] = [
            Server(
                id=r[0],
                run_id=r[1],
                step_id=r[2],
                profile=r[3],
                model=r[4],
                tp=r[5],
                argv=_json(r[6], []) or [],
                env=_json(r[7], {}) or {},
                host=r[8],
                port=r[9],
                pid=r[10],
                log_path=r[11],
                started_at=r[12],
                ready_s=r[13],
                stopped_at=r[14],
                facts=_facts(load_values("ServeValues", r[16], r[15])),
            )
            for r in conn.execute(
                "SELECT id, run_id, step_id, profile, model, tp, argv, env, host, port, pid, "
                "log_path, started_at, ready_s, stopped_at, facts, facts_version FROM servers "
                "ORDER BY id"
            )
        ]
        self.notes: dict[str, NoteRow] = {
            r[0]: NoteRow(r[0], bool(r[1]), r[2] or "", r[3])
            for r in conn.execute("SELECT item, done, note, at FROM notes")
        }

    def run(self, run_id: int) -> Run:
        if run_id not in self.runs:
            raise LabError(
                f"no run #{run_id} in {self.path}", fix="`invoke status` lists the recorded runs"
            )
        return self.runs[run_id]

    def day_of(self, step: Step) -> str | None:
        run = self.runs.get(step.run_id)
        return run.day if run else None

    def host_of(self, step: Step) -> str | None:
        run = self.runs.get(step.run_id)
        return run.host if run else None

    def latest(
        self,
        key: str | None = None,
        *,
        day: str | None = None,
        run_id: int | None = None,
        min_tp: int | None = None,
        max_tp: int | None = None,
        criterion: str | None = None,
        before: float | None = None,
        where: Callable[[Step], bool] | None = None,
    ) -> Step | None:
        """The newest finished step matching every filter given. `criterion` is a glob on
        criterion keys (e.g. "*balance*"); `min_tp`/`max_tp` look at the TP it ran with;
        `before` is a time the step started before; `where` any other test."""
        for step in reversed(self.steps):
            if step.status == RUNNING:
                continue
            if key is not None and step.key != key:
                continue
            if run_id is not None and step.run_id != run_id:
                continue
            if day is not None and self.day_of(step) != day:
                continue
            tp = step.tp
            if (min_tp is not None and tp < min_tp) or (max_tp is not None and tp > max_tp):
                continue
            if criterion is not None and step.criterion(criterion) is None:
                continue
            if before is not None and (step.started_at or 0) > before:
                continue
            if where is not None and not where(step):
                continue
            return step
        return None

    def latest_by_key(self, day: str, run_id: int | None = None) -> dict[str, Step]:
        """The newest record of each step key of `day` (or of run `run_id` only)."""
        if run_id is not None:
            return {s.key: s for s in self.steps if s.run_id == run_id}
        return {s.key: s for s in self.steps if self.day_of(s) == day}


def _facts(value: StepValues | None) -> ServeValues | None:
    return value if isinstance(value, ServeValues) else None
