"""lab.commands, the verbs behind the Invoke tasks: each wires the checklist, the record,
the terminal and the deliverables; `invoke report` reads the logbook once and never imports
a step function."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from lab import commands
from lab.core.errors import LabError
from lab.record.logbook import PASS
from lab.record.session import Lab
from lab.record.values import GpusValues
from tests.conftest import ROOT
from tests.fakes.fake_logbook import cpu_logbook, gpu_logbook


def make_lab(tmp_path, **cfg) -> Lab:
    lab = Lab.from_config({"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"), **cfg},
                          console=Console(file=io.StringIO(), width=200))
    return lab


def printed(lab: Lab) -> str:
    return lab.console.file.getvalue()


def test_report_renders_every_deliverable_from_one_reading(tmp_path):
    lab = make_lab(tmp_path, lang="en")
    ids = gpu_logbook(lab.book)
    paths = commands.run_report(lab, str(ids["day4"]))
    names = {p.name for p in paths}
    assert {"report.md", "deploy-notes.md", "dashboard.html", "prometheus.yml",
            "plot-sweep.png", "plot-offline-batches.png"} <= names
    assert all(p.parent == lab.logbook_dir for p in paths)
    assert f"Day 4 run #{ids['day4']}" in (lab.logbook_dir / "report.md").read_text()
    with pytest.raises(LabError, match="is a day3 run"):
        commands.run_report(lab, ids["day3"])


def test_a_step_task_records_its_run_and_renders_the_day(tmp_path, monkeypatch):
    from lab.checklist import days
    from lab.record.runner import Outcome, check
    monkeypatch.setitem(days.FUNCS, "day3", {**days.FUNCS["day3"], "gpus": lambda lab, ctx, **kw: Outcome(
        [check("free_gpus", "g", "g", 1, ">=", 1)], "1 GPU", GpusValues(free_gpus=1))})
    lab = make_lab(tmp_path)
    assert commands.run_step_task(lab, "day3", "gpus") == 0
    (run,) = lab.book.runs()
    assert run["task"] == "gpus" and run["status"] == PASS
    assert "log: " in printed(lab) and (lab.logbook_dir / "day3.md").exists()


def test_render_log_of_a_run_that_is_not_there_is_one_line(tmp_path):
    lab = make_lab(tmp_path)
    cpu_logbook(lab.book)
    assert commands.render_log(lab, "day3", None).name == "day3.md"
    with pytest.raises(LabError, match="no run #42"):
        commands.render_log(lab, "day3", 42)


def test_status_done_and_compare_runs_print_to_the_terminal(tmp_path):
    lab = make_lab(tmp_path, lang="en")
    ids = cpu_logbook(lab.book)
    path = commands.run_status(lab)
    assert path.name == "progress.md" and "vLLM learning progress" in printed(lab)
    commands.run_done(lab, "q1", note="paged KV blocks")
    assert "ticked: q1" in printed(lab) and "paged KV blocks" in path.read_text()
    commands.run_compare_runs(lab, ids["day3"], ids["day3"])
    assert f"day3: run #{ids['day3']} → run #{ids['day3']}" in printed(lab)


def test_the_records_of_a_render_are_read_once_without_measurements(tmp_path):
    lab = make_lab(tmp_path)
    gpu_logbook(lab.book)
    data = commands.records(lab)
    assert data.records.steps and data.levels == [] and data.bench is None


def test_report_and_status_never_import_a_step_function():
    code = ("import sys, lab.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('lab.checklist.steps') "
            "or m in ('lab.checklist.days', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
