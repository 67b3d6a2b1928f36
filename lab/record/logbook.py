"""The logbook: every run, step, sample and request, in SQLite through sqlite-utils.

WAL mode and a busy timeout on every connection let `monitor` in one terminal and
`bench` in another write at once without "database is locked". Each thread opens its
own `Logbook` (sqlite3 connections must not cross threads).

Command line equivalent: `sqlite3 logbook/lab.db 'select key, status from steps'`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from lab.record import codec
from lab.record.values import BY_NAME, UPGRADES, ServeValues, StepValues

BUSY_TIMEOUT_MS = 30_000

# Step and run statuses. "running" is only ever seen while a process writes the step;
# a "running" row whose process is gone is shown as "interrupted" (see recover()).
PASS, FAIL, SKIPPED, PENDING, INTERRUPTED, RUNNING = (
    "pass",
    "fail",
    "skipped",
    "pending",
    "interrupted",
    "running",
)
STATUSES = (PASS, FAIL, SKIPPED, PENDING, INTERRUPTED, RUNNING)


def _m1(db: sqlite_utils.Database) -> None:
    db.table("runs").create(
        {
            "id": int,
            "day": str,
            "task": str,
            "profile": str,
            "host": str,
            "pid": int,
            "lang": str,
            "versions": str,
            "options": str,
            "status": str,
            "started_at": float,
            "ended_at": float,
        },
        pk="id",
    )
    db.table("steps").create(
        {
            "id": int,
            "run_id": int,
            "key": str,
            "title": str,
            "status": str,
            "reason": str,
            "command": str,
            "expected": str,
            "actual": str,
            "criteria": str,
            "values": str,
            "evidence": str,
            "fix": str,
            "started_at": float,
            "ended_at": float,
            "duration_s": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("steps").create_index(["run_id", "key"])
    db.table("samples").create(
        {
            "id": int,
            "run_id": int,
            "step_id": int,
            "t": float,
            "source": str,
            "device": str,
            "field": str,
            "value": float,
        },
        pk="id",
    )
    db.table("samples").create_index(["step_id"])
    db.table("requests").create(
        {
            "id": int,
            "run_id": int,
            "step_id": int,
            "phase": str,
            "level": str,
            "concurrency": int,
            "idx": int,
            "warmup": int,
            "ok": int,
            "error": str,
            "http_status": int,
            "input_tokens": int,
            "output_tokens": int,
            "queue_s": float,
            "sent_at_s": float,
            "ttft_s": float,
            "tpot_s": float,
            "e2el_s": float,
            "itls_s": str,
        },
        pk="id",
    )
    db.table("requests").create_index(["step_id"])
    db.table("servers").create(
        {
            "id": int,
            "run_id": int,
            "step_id": int,
            "profile": str,
            "model": str,
            "tp": int,
            "argv": str,
            "env": str,
            "host": str,
            "port": int,
            "pid": int,
            "log_path": str,
            "started_at": float,
            "ready_s": float,
            "stopped_at": float,
            "facts": str,
        },
        pk="id",
    )
    db.table("notes").create(
        {
            "item": str,
            "done": int,
            "note": str,
            "at": float,
        },
        pk="item",
    )


def _m2(db: sqlite_utils.Database) -> None:
    """Typed step values. Each step's v1 JSON values become its typed value (lab.record.values,
    through lab.record.values.legacy, the one place that knows the old spellings), stored with
    its type name and version; the original JSON is kept in `legacy_values`. A row that cannot
    be converted keeps value_type NULL and reads as "not measured". Request ITLs move from a
    JSON list (`itls_s`) to a float32 array (`itls_s_f32`, one BLOB a row), which the report
    reads with one column query; `servers.facts` becomes the typed serve values too."""
    from lab.record.values.legacy import from_v1, serve

    conn = db.conn
    conn.execute("ALTER TABLE steps ADD COLUMN value_type TEXT")
    conn.execute("ALTER TABLE steps ADD COLUMN value_version INTEGER")
    conn.execute("ALTER TABLE steps ADD COLUMN legacy_values TEXT")
    conn.execute("ALTER TABLE requests ADD COLUMN itls_s_f32 BLOB")
    conn.execute("ALTER TABLE servers ADD COLUMN facts_version INTEGER")
    # One level of one step's sweep is read without scanning the others (lab.deliver.gather).
    conn.execute("CREATE INDEX requests_step_phase_level ON requests (step_id, phase, concurrency)")
    rows = conn.execute(
        'SELECT s.id, s.key, s."values", r.profile FROM steps s LEFT JOIN runs r ON r.id = s.run_id'
    ).fetchall()
    for step_id, key, text, profile in rows:
        typed: StepValues | None
        try:
            typed = from_v1(key, json.loads(text) if text else None, {"profile": profile})
            if typed is not None:  # what is stored must read back as its type
                codec.decode(type(typed), codec.encode(typed))
        except Exception:  # a shape v1 never wrote: keep it as legacy, read as not measured
            typed = None
        stored, name, version = dump_values(typed)
        conn.execute(
            'UPDATE steps SET "values" = ?, value_type = ?, value_version = ?, '
            "legacy_values = ? WHERE id = ?",
            (stored, name, version, text, step_id),
        )
    cur = conn.execute("SELECT id, itls_s FROM requests WHERE itls_s IS NOT NULL")
    while batch := cur.fetchmany(2000):
        conn.executemany(
            "UPDATE requests SET itls_s_f32 = ?, itls_s = NULL WHERE id = ?",
            [(itls_blob(json.loads(text) if text else []), rid) for rid, text in batch],
        )
    for server_id, text in conn.execute("SELECT id, facts FROM servers").fetchall():
        facts = json.loads(text) if text else None
        try:
            value = serve(facts) if isinstance(facts, dict) and facts else None
        except Exception:
            value = None
        stored, _, version = dump_values(value)
        conn.execute(
            "UPDATE servers SET facts = ?, facts_version = ? WHERE id = ?",
            (stored, version, server_id),
        )


# Append-only: each entry runs once, in order; PRAGMA user_version counts those applied.
MIGRATIONS = [_m1, _m2]


def dump_values(value: StepValues | None) -> tuple[str | None, str | None, int | None]:
    """(JSON, type name, version) of a typed value, as the steps table stores them."""
    if value is None:
        return None, None, None
    name = type(value).__name__
    if BY_NAME.get(name) is not type(value):
        raise TypeError(f"{name} is not a registered step value type (lab.record.values.TYPES)")
    return _dumps(codec.encode(value)), name, type(value).VERSION


def load_values(name: str | None, version: int | None, text: str | None) -> StepValues | None:
    """The typed value of a stored row; None ("not measured") when the row holds none, or
    one that no longer decodes (an unknown type, a shape without an upgrade)."""
    cls = BY_NAME.get(name or "")
    if cls is None or text is None:
        return None
    try:
        data = json.loads(text)
        v = version or 1
        while v < cls.VERSION:
            data = UPGRADES[(cls.__name__, v)](data)
            v += 1
        return codec.decode(cls, data)
    except (KeyError, ValueError, TypeError):
        return None


def itls_blob(itls_s: Sequence[float] | None) -> bytes | None:
    """Inter-token gaps (s) as float32 bytes: 4 bytes a gap instead of ~20 of JSON text."""
    if not itls_s:
        return None
    return np.asarray(itls_s, dtype=np.float32).tobytes()


def itls_of(blob: bytes | None) -> list[float]:
    """The gaps of an `itls_s_f32` BLOB."""
    return [] if not blob else np.frombuffer(blob, dtype=np.float32).astype(float).tolist()


class Logbook:
    """One connection to the logbook database.

    >>> book = Logbook("logbook/lab.db")          # creates and migrates
    >>> run = book.start_run("day3", profile="cpu")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=True
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self._migrate()

    # -- schema --------------------------------------------------------------
    def _migrate(self) -> None:
        conn = self.db.conn
        # BEGIN IMMEDIATE serialises two processes migrating a new file at once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for i, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self.db)
                conn.execute(f"PRAGMA user_version = {i}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return self.db.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.conn.close()

    # -- runs ----------------------------------------------------------------
    def start_run(
        self,
        day: str,
        *,
        task: str | None = None,
        profile: str = "",
        lang: str = "zh",
        versions: dict | None = None,
        options: dict | None = None,
    ) -> int:
        with self.db.conn:
            return _pk(
                self.db.table("runs")
                .insert(
                    {
                        "day": day,
                        "task": task or day,
                        "profile": profile,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "lang": lang,
                        "versions": _dumps(versions or {}),
                        "options": _dumps(options or {}),
                        "status": RUNNING,
                        "started_at": time.time(),
                        "ended_at": None,
                    }
                )
                .last_pk
            )

    def update_run(self, run_id: int, **fields: Any) -> None:
        for key in ("versions", "options"):
            if key in fields:
                fields[key] = _dumps(fields[key])
        with self.db.conn:
            self.db.table("runs").update(run_id, fields)

    def end_run(self, run_id: int, status: str) -> None:
        self.update_run(run_id, status=status, ended_at=time.time())

    def run(self, run_id: int) -> dict:
        return _decode(self.db.table("runs").get(run_id))

    def runs(self, day: str | None = None) -> list[dict]:
        where, args = ("day = ?", [day]) if day else (None, None)
        return [_decode(r) for r in self.db.table("runs").rows_where(where, args, order_by="id")]

    # -- steps ---------------------------------------------------------------
    def start_step(self, run_id: int, key: str, *, title: str, command: str, expected: str) -> int:
        """Written when the step starts, so a crash leaves evidence of it."""
        with self.db.conn:
            return _pk(
                self.db.table("steps")
                .insert(
                    {
                        "run_id": run_id,
                        "key": key,
                        "title": title,
                        "status": RUNNING,
                        "reason": None,
                        "command": command,
                        "expected": expected,
                        "actual": None,
                        "criteria": "[]",
                        "values": None,
                        "evidence": None,
                        "fix": None,
                        "started_at": time.time(),
                        "ended_at": None,
                        "duration_s": None,
                    }
                )
                .last_pk
            )

    def end_step(
        self,
        step_id: int,
        *,
        status: str,
        actual: str = "",
        criteria: list | None = None,
        values: StepValues | None = None,
        reason: str | None = None,
        evidence: str | None = None,
        fix: str | None = None,
        command: str | None = None,
        expected: str | None = None,
    ) -> None:
        assert status in STATUSES, status
        ended = time.time()
        started = self.db.table("steps").get(step_id)["started_at"]
        stored, value_type, value_version = dump_values(values)
        fields = {
            "status": status,
            "actual": actual,
            "criteria": _dumps(criteria or []),
            "values": stored,
            "value_type": value_type,
            "value_version": value_version,
            "reason": reason,
            "evidence": evidence,
            "fix": fix,
            "ended_at": ended,
            "duration_s": round(ended - started, 3),
        }
        if command is not None:
            fields["command"] = command
        if expected is not None:
            fields["expected"] = expected
        with self.db.conn:
            self.db.table("steps").update(step_id, fields)

    def step(self, step_id: int) -> dict:
        return _step_row(self.db.table("steps").get(step_id))

    def steps(self, run_id: int | None = None) -> list[dict]:
        """The steps of `run_id` (of every run when None), in the order they started."""
        where, args = ("run_id = ?", [run_id]) if run_id is not None else (None, None)
        return [_step_row(r) for r in self.db.table("steps").rows_where(where, args, order_by="id")]

    def latest_steps(self, day: str) -> dict[str, dict]:
        """The newest record of each step key across all runs of `day`."""
        rows = self.db.query(
            "select s.* from steps s join runs r on r.id = s.run_id where r.day = ? order by s.id",
            [day],
        )
        return {r["key"]: _step_row(r) for r in rows}

    # -- recovery ------------------------------------------------------------
    def recover(self) -> int:
        """Mark steps and runs left "running" by a process that no longer exists as
        interrupted. Returns how many steps changed. Safe to call any time."""
        changed = 0
        for run in list(self.db.table("runs").rows_where("status = ?", [RUNNING])):
            if _pid_alive(run["pid"]):  # still being written (or this very process)
                continue
            with self.db.conn:
                for step in self.db.table("steps").rows_where(
                    "run_id = ? and status = ?", [run["id"], RUNNING]
                ):
                    self.db.table("steps").update(
                        step["id"],
                        {
                            "status": INTERRUPTED,
                            "reason": "the process recording this step ended before it finished",
                        },
                    )
                    changed += 1
                self.db.table("runs").update(run["id"], {"status": INTERRUPTED})
        return changed

    # -- timelines and requests ---------------------------------------------
    def add_samples(self, run_id: int, step_id: int, rows: Iterable[dict]) -> None:
        """rows: {t, source, device, <field>: value, ...}; stored long-form, one value a row."""
        flat = []
        for row in rows:
            for field, value in row.items():
                if field in ("t", "source", "device") or value is None:
                    continue
                flat.append(
                    {
                        "run_id": run_id,
                        "step_id": step_id,
                        "t": row["t"],
                        "source": row["source"],
                        "device": str(row["device"]),
                        "field": field,
                        "value": float(value),
                    }
                )
        if flat:
            with self.db.conn:
                self.db.table("samples").insert_all(flat)

    def samples(self, step_id: int) -> list[dict]:
        return list(self.db.table("samples").rows_where("step_id = ?", [step_id], order_by="t, id"))

    def add_request(self, run_id: int, step_id: int, phase: str, record: dict) -> None:
        row = {
            k: record.get(k)
            for k in (
                "level",
                "concurrency",
                "idx",
                "warmup",
                "ok",
                "error",
                "http_status",
                "input_tokens",
                "output_tokens",
                "queue_s",
                "sent_at_s",
                "ttft_s",
                "tpot_s",
                "e2el_s",
            )
        }
        row.update(
            run_id=run_id, step_id=step_id, phase=phase, itls_s_f32=itls_blob(record.get("itls_s"))
        )
        row["warmup"] = int(bool(row["warmup"]))
        row["ok"] = int(bool(row["ok"]))
        with self.db.conn:
            self.db.table("requests").insert(row)

    def requests(self, step_id: int, phase: str | None = None) -> list[dict]:
        args: list[Any]
        where, args = "step_id = ?", [step_id]
        if phase:
            where, args = where + " and phase = ?", [*args, phase]
        return [
            _request_row(r)
            for r in self.db.table("requests").rows_where(where, args, order_by="id")
        ]

    # -- servers -------------------------------------------------------------
    def add_server(self, *, facts: ServeValues | None = None, **fields: Any) -> int:
        """A server started: its argv and env (stored redacted by the caller), and `facts`,
        the serve values of its start once known."""
        for key in ("argv", "env"):
            fields[key] = _dumps(fields.get(key))
        fields["facts"], _, fields["facts_version"] = dump_values(facts)
        with self.db.conn:
            return _pk(self.db.table("servers").insert(fields).last_pk)

    def update_server(self, server_id: int, **fields: Any) -> None:
        if "facts" in fields:
            fields["facts"], _, fields["facts_version"] = dump_values(fields["facts"])
        with self.db.conn:
            self.db.table("servers").update(server_id, fields)

    def servers(self) -> list[dict]:
        """Every server started, oldest first; `facts` is its ServeValues (or None)."""
        return [_server_row(r) for r in self.db.table("servers").rows_where(order_by="id")]

    # -- notes (manual checklist items) --------------------------------------
    def mark_done(self, item: str, note: str = "", done: bool = True) -> None:
        with self.db.conn:
            self.db.table("notes").upsert(
                {"item": item, "done": int(done), "note": note, "at": time.time()}, pk="item"
            )

    def notes(self) -> dict[str, dict]:
        return {r["item"]: r for r in self.db.table("notes").rows}


_JSON_COLUMNS = ("versions", "options", "criteria", "argv", "env")


def _decode(row: dict) -> dict:
    row = dict(row)
    for key in _JSON_COLUMNS:
        if key in row and isinstance(row[key], str):
            row[key] = json.loads(row[key])
    return row


def _step_row(row: dict) -> dict:
    """A steps row with its criteria decoded and `values` as its typed value (or None)."""
    out = _decode(row)
    out["values"] = load_values(out.get("value_type"), out.get("value_version"), out.get("values"))
    return out


def _request_row(row: dict) -> dict:
    out = dict(row)
    out["itls_s"] = itls_of(out.pop("itls_s_f32", None))
    return out


def _server_row(row: dict) -> dict:
    out = _decode(row)
    out["facts"] = load_values("ServeValues", out.pop("facts_version", None), out.get("facts"))
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _pk(value: Any) -> int:
    """The id sqlite-utils gives for an inserted row."""
    return int(value)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
