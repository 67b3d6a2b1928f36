"""Learning progress: the whole roadmap (seed 000's Day 3–4 checklist and module
acceptance, seed 002's Day 5 self-check, seed 003's four phases) as one checklist.

Each item is ticked from the logbook and nothing else:
- a *step* item from recorded results (a step's status, or one of its criteria): ticked only
  when it was recorded as pass; skipped, failed or missing says so, with the command to run;
- a *note* item (theory, the self-test Q1–Q3, things only the learner can judge) from a
  manual note: `invoke done ITEM --note "..."`.

Also here: the history of runs.

Command line equivalent: `sqlite3 logbook/lab.db 'select run_id, key, status from steps'`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.checklist.roadmap import Evidence, Item, roadmap, run_hint
from lab.core.lang import pick
from lab.deliver.gather import LabData
from lab.deliver.jinja import fmt_ts, render_to
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED
from lab.record.queries import NoteRow, Records, Run

_WORST = (FAIL, INTERRUPTED, RUNNING, PENDING, SKIPPED)


@dataclass
class EvidenceState:
    """One piece of evidence: its status, `text` from the logbook (escape it when
    rendering), `hint` ours (trusted), and the run it comes from."""

    status: str
    text: str
    hint: str | None
    run_id: int | None


@dataclass
class ItemState:
    id: str
    label: str
    optional: bool
    manual: bool
    done: bool
    status: str
    at: float | None
    run_ids: list[int]
    evidence: list[EvidenceState]
    #: The evidence as one plain line (terminal, dashboard).
    detail: str


@dataclass
class GroupState:
    id: str
    title: str
    source: str
    entries: list[ItemState]
    done: int
    total: int


def evidence_state(ev: Evidence, rec: Records, lang: str) -> EvidenceState:
    """The state of one piece of evidence, from the newest matching step."""
    step = rec.latest(
        ev.key, day=ev.day, min_tp=ev.min_tp, max_tp=ev.max_tp, criterion=ev.criterion
    )
    if step is None:
        return EvidenceState(PENDING, "", run_hint(ev.command(), lang), None)
    text = f"run #{step.run_id} {step.key}"
    run = rec.runs.get(step.run_id)
    if ev.gpu_only and run is not None and run.profile == "cpu":
        reason = "no NVIDIA GPU: CPU profile"
        return EvidenceState(SKIPPED, f"{text}: {SKIPPED} ({reason})", None, step.run_id)
    crit = step.criterion(ev.criterion) if ev.criterion else None
    if crit is not None:
        status, reason_or_none = crit.status, crit.reason
        label = pick(lang, crit.label_zh, crit.label_en)
        measured = crit.measured
        text += f" · {label}" + (
            "" if measured is None else f" = {measured} {crit.unit or ''}".rstrip()
        )
    else:
        status, reason_or_none = step.status, step.reason
    text += f": {status}" + (f" ({reason_or_none})" if reason_or_none and status != PASS else "")
    return EvidenceState(status, text, None, step.run_id)


def experiment_evidence(item_id: str, rec: Records, lang: str) -> EvidenceState | None:
    """The newest passed, measured verdict of an experiment that ticks `item_id`
    (roadmap.experiments_for), with its lesson and a link to experiments.md; None if none."""
    from lab.checklist.roadmap import experiments_for
    from lab.record.values import ExperimentValues

    names = experiments_for(item_id)
    if not names:
        return None
    step = rec.latest(
        "experiment",
        day="experiment",
        where=lambda s: (
            s.status == PASS
            and isinstance(s.values, ExperimentValues)
            and s.values.name in names
            and not s.values.skipped
        ),
    )
    if step is None:
        return None
    v = step.values
    assert isinstance(v, ExperimentValues)
    lesson = pick(lang, v.lesson_zh, v.lesson_en)
    text = f"run #{step.run_id} experiment {v.name} ({v.profile}, experiments.md#{v.name})" + (
        f": {lesson}" if lesson else ""
    )
    return EvidenceState(PASS, text, None, step.run_id)


def item_state(item: Item, rec: Records, notes: dict[str, NoteRow], lang: str) -> ItemState:
    """An item's state: done only from a recorded pass (step items) or a note (note items)."""
    if item.manual:
        note = notes.get(item.id)
        done = bool(note and note.done)
        hint = (
            None
            if done
            else pick(
                lang,
                f'手动勾选：`invoke done {item.id} --note "..."`',
                f'tick it by hand: `invoke done {item.id} --note "..."`',
            )
        )
        evidence = [EvidenceState(PASS if done else PENDING, note.note if note else "", hint, None)]
        status, at, run_ids = (PASS if done else PENDING), (note.at if note else None), []
        measured = experiment_evidence(item.id, rec, lang)
        if measured is not None and not done:  # ticked from a measured experiment
            evidence, done, status, run_ids = [measured], True, PASS, [measured.run_id or 0]
            at = None
    else:
        evidence = [evidence_state(ev, rec, lang) for ev in item.evidence]
        bad = [s for s in evidence if s.status != PASS]
        done, at = not bad, None
        status = min((s.status for s in bad), key=_WORST.index) if bad else PASS
        run_ids = sorted({s.run_id for s in evidence if s.run_id})
    detail = "; ".join(s.hint or s.text for s in evidence if s.hint or s.text)
    return ItemState(
        item.id,
        item.label(lang),
        item.optional,
        item.manual,
        done,
        status,
        at,
        run_ids,
        evidence,
        detail,
    )


def checklist_state(rec: Records, lang: str) -> list[GroupState]:
    """Every roadmap group with its items' states and how many required items are done."""
    out = []
    for group in roadmap():
        items = [item_state(i, rec, rec.notes, lang) for i in group.items]
        required = [i for i in items if not i.optional]
        out.append(
            GroupState(
                group.id,
                group.title(lang),
                group.source,
                items,
                sum(i.done for i in required),
                len(required),
            )
        )
    return out


@dataclass
class RunHistory:
    run: Run
    steps: list[str] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)  # (status, steps), sorted


def run_history(rec: Records) -> list[RunHistory]:
    """Every run, oldest first, with its step counts."""
    out = []
    for run in rec.runs.values():
        steps = [s for s in rec.steps if s.run_id == run.id]
        counts: dict[str, int] = {}
        for s in steps:
            counts[s.status] = counts.get(s.status, 0) + 1
        out.append(RunHistory(run, [s.key for s in steps], sorted(counts.items())))
    return out


def render_progress(data: LabData, lang: str, out_dir: Path) -> Path:
    """Render `logbook/progress.md` (Command line equivalent: `invoke status`)."""
    groups = checklist_state(data.records, lang)
    return render_to(
        out_dir,
        "progress.md",
        "progress.md.j2",
        lang=lang,
        groups=groups,
        runs=run_history(data.records),
        generated_at=fmt_ts(data.now),
        done=sum(g.done for g in groups),
        total=sum(g.total for g in groups),
    )
