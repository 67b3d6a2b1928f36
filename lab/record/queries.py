"""Queries over the logbook that several readers share: every run and step read once, and
the newest step matching some filters."""
from __future__ import annotations

import fnmatch
from typing import Callable

from lab.core.errors import LabError
from lab.record.logbook import RUNNING, Logbook


class Records:
    """Every run and step of the logbook, read once (rendering reads only from the DB)."""

    def __init__(self, book: Logbook):
        book.recover()
        self.book = book
        self.runs = {r["id"]: r for r in book.runs()}
        self.steps = [s for run_id in self.runs for s in book.steps(run_id)]
        self.steps.sort(key=lambda s: s["id"])

    def run(self, run_id: int) -> dict:
        if run_id not in self.runs:
            raise LabError(f"no run #{run_id} in {self.book.path}",
                           fix="`invoke status` lists the recorded runs")
        return self.runs[run_id]

    def latest(self, key: str | None = None, *, day: str | None = None,
               run_id: int | None = None, min_tp: int | None = None,
               max_tp: int | None = None, criterion: str | None = None,
               before: float | None = None,
               where: Callable[[dict], bool] | None = None) -> dict | None:
        """The newest finished step matching every filter given. `criterion` is a glob on
        criterion keys (e.g. "*balance*"); `min_tp`/`max_tp` look at the step's values.tp;
        `before` is a time the step started before; `where` any other test."""
        for step in reversed(self.steps):
            if step["status"] == RUNNING:
                continue
            if key is not None and step["key"] != key:
                continue
            if run_id is not None and step["run_id"] != run_id:
                continue
            if day is not None and self.runs.get(step["run_id"], {}).get("day") != day:
                continue
            tp = int((step.get("values") or {}).get("tp") or 1)
            if min_tp is not None and tp < min_tp or max_tp is not None and tp > max_tp:
                continue
            if criterion is not None and find_criterion(step, criterion) is None:
                continue
            if before is not None and (step.get("started_at") or 0) > before:
                continue
            if where is not None and not where(step):
                continue
            return step
        return None


def find_criterion(step: dict, pattern: str) -> dict | None:
    return next((c for c in step.get("criteria") or []
                 if fnmatch.fnmatchcase(c.get("key") or "", pattern)), None)
