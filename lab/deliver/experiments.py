"""`logbook/experiments.md`: per experiment (lab.checklist.experiments) its question, the
arms' exact commands, the load, a table of the arms (median and min–max over rounds), a plot,
the verdict and the lesson in one sentence with its numbers — all from the newest recorded
verdict of each experiment (gathered typed data: ExperimentValues and its arm steps'
ArmValues), never a made-up figure. Not run yet: "not measured yet — run `invoke experiment
NAME`".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.checklist.experiments import all_experiments
from lab.checklist.experiments.model import Experiment
from lab.checklist.experiments.verdict import finding_line
from lab.checklist.roadmap import run_hint
from lab.core.lang import pick
from lab.deliver import plots
from lab.deliver.gather import LabData
from lab.deliver.jinja import fmt_ts, render_to
from lab.record.queries import Records, Step
from lab.record.values import ArmValues, ExperimentValues

FILENAME = "experiments.md"


@dataclass
class ArmRow:
    """One arm of the table: its name, command, and per metric "median (min–max)"."""

    name: str
    label: str
    command: str | None
    cells: list[str]
    skipped: str | None = None


@dataclass
class Entry:
    """One experiment as experiments.md shows it (`values` None: not run yet)."""

    name: str
    question: str
    seed_ref: str
    runs_on: list[str]
    skip: dict[str, str]
    hint: str
    step: Step | None = None
    values: ExperimentValues | None = None
    status: str | None = None
    run_id: int | None = None
    run_at: float | None = None
    headers: list[str] = field(default_factory=list)
    rows: list[ArmRow] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    lesson: str = ""
    workload: str = ""
    plot: str | None = None
    #: The plot as a data: URI (the dashboard inlines it).
    plot_uri: str | None = None
    arm_steps: list[Step] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)


def latest_verdict(rec: Records, name: str) -> Step | None:
    """The newest finished verdict step of experiment `name`."""
    return rec.latest(
        "experiment",
        day="experiment",
        where=lambda s: isinstance(s.values, ExperimentValues) and s.values.name == name,
    )


def _cell(values: ExperimentValues, arm: str, key: str) -> str:
    from lab.core.fmt import num

    stat = values.stat(arm, key)
    if stat is None or stat.median is None:
        return "—"
    if values.rounds > 1 and stat.min != stat.max:
        return f"{num(stat.median)} ({num(stat.min)}–{num(stat.max)})"
    return num(stat.median)


def entry(exp: Experiment, rec: Records, lang: str, out_dir: Path) -> Entry:
    """What experiments.md shows for `exp`."""
    e = Entry(
        exp.name,
        exp.question(lang),
        exp.seed_ref,
        list(exp.runs_on()),
        dict(exp.skip),
        run_hint(f"invoke experiment {exp.name}", lang),
    )
    step = latest_verdict(rec, exp.name)
    if step is None:
        return e
    v = step.values
    assert isinstance(v, ExperimentValues)
    e.step, e.values, e.status, e.run_id, e.run_at = (
        step,
        v,
        step.status,
        step.run_id,
        step.started_at,
    )
    if v.skipped:
        return e
    metrics = [m for m in exp.metrics if any(s.metric == m.key for s in v.stats)]
    e.headers = [m.label(lang) + (f" ({m.unit})" if m.unit else "") for m in metrics]
    for a in v.arms:
        e.rows.append(
            ArmRow(
                a.name,
                pick(lang, a.label_zh, a.label_en) or a.name,
                a.command,
                [_cell(v, a.name, m.key) for m in metrics],
                v.skipped_arms.get(a.name),
            )
        )
    e.findings = [finding_line(f, exp.metrics, v, lang) for f in v.findings]
    e.lesson = pick(lang, v.lesson_zh, v.lesson_en)
    e.workload = pick(lang, v.workload_zh or v.workload, v.workload)
    e.arm_steps = [rec.by_id[i] for i in v.arm_steps if i in rec.by_id]
    e.exports = sorted(
        {
            s.values.export_path
            for s in e.arm_steps
            if isinstance(s.values, ArmValues) and s.values.export_path
        }
    )
    panels = [
        (m.label_zh, m.label_en, m.unit, [(a.name, *_stat(v, a.name, m.key)) for a in v.arms])
        for m in metrics[:4]
    ]
    path = plots.experiment_arms(panels, out_dir / f"plot-experiment-{exp.name}.png", lang)
    e.plot = path.name if path else None
    return e


def _stat(
    v: ExperimentValues, arm: str, key: str
) -> tuple[float | None, float | None, float | None]:
    s = v.stat(arm, key)
    return (s.median, s.min, s.max) if s else (None, None, None)


def entries(data: LabData, lang: str, out_dir: Path) -> list[Entry]:
    return [entry(exp, data.records, lang, out_dir) for exp in all_experiments()]


def render_experiments(data: LabData, lang: str, out_dir: Path) -> list[Path]:
    """Render `logbook/experiments.md` and its plots; returns the paths (markdown first).

    Command line equivalent: `invoke experiment NAME` (renders it after each run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found = entries(data, lang, out_dir)
    md = render_to(
        out_dir,
        FILENAME,
        "experiments.md.j2",
        lang=lang,
        entries=found,
        generated_at=fmt_ts(data.now),
    )
    return [md, *(out_dir / e.plot for e in found if e.plot)]
