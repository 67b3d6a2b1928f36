"""Learning progress: the whole roadmap (seed 000's Day 3–4 checklist and module
acceptance, seed 002's Day 5 self-check, seed 003's four phases) as one checklist.

Each item is ticked from the logbook and nothing else:
- a *step* item from recorded results (a step's status, or one of its criteria): ticked only
  when it was recorded as pass; skipped, failed or missing says so, with the command to run;
- a *note* item (theory, the self-test Q1–Q3, things only the learner can judge) from a
  manual note: `invoke done ITEM --note "..."`.

Also here: the history of runs, and `compare_runs` (what changed between two runs of a day).

Command line equivalent: `sqlite3 logbook/lab.db 'select run_id, key, status from steps'`.
"""
from __future__ import annotations

from lab.checklist.roadmap import Evidence, Item, roadmap, run_hint
from lab.record.queries import Records, find_criterion

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED, Logbook

if TYPE_CHECKING:
    pass

_WORST = (FAIL, INTERRUPTED, RUNNING, PENDING, SKIPPED)


def evidence_state(ev: Evidence, rec: Records, lang: str) -> dict:
    """{status, text, hint, run_id} of one piece of evidence, from the newest matching step.
    `text` comes from the logbook (escape it when rendering); `hint` is ours (trusted)."""
    step = rec.latest(ev.key, day=ev.day, min_tp=ev.min_tp, max_tp=ev.max_tp,
                      criterion=ev.criterion)
    if step is None:
        return {"status": PENDING, "text": "", "hint": run_hint(ev.command(), lang), "run_id": None}
    text = f"run #{step['run_id']} {step['key']}"
    if ev.gpu_only and rec.runs.get(step["run_id"], {}).get("profile") == "cpu":
        reason = "no NVIDIA GPU: CPU profile"
        return {"status": SKIPPED, "text": f"{text}: {SKIPPED} ({reason})", "hint": None,
                "run_id": step["run_id"]}
    if ev.criterion:
        crit = find_criterion(step, ev.criterion)
        status, reason = crit["status"], crit.get("reason")
        label = crit.get("label_zh") if lang == "zh" else crit.get("label_en")
        measured = crit.get("measured")
        text += f" · {label}" + ("" if measured is None else f" = {measured} {crit.get('unit') or ''}".rstrip())
    else:
        status, reason = step["status"], step.get("reason")
    text += f": {status}" + (f" ({reason})" if reason and status != PASS else "")
    return {"status": status, "text": text, "hint": None, "run_id": step["run_id"]}


def item_state(item: Item, rec: Records, notes: dict[str, dict], lang: str) -> dict:
    """An item's state: done only from a recorded pass (step items) or a note (note items).
    `evidence`: [{status, text, hint}]; `detail`: the same as one plain line (terminal)."""
    base = {"id": item.id, "label": item.label(lang), "optional": item.optional,
            "manual": item.manual}
    if item.manual:
        note = notes.get(item.id)
        done = bool(note and note["done"])
        hint = None if done else (
            f"手动勾选：`invoke done {item.id} --note \"...\"`" if lang == "zh"
            else f"tick it by hand: `invoke done {item.id} --note \"...\"`")
        evidence = [{"status": PASS if done else PENDING, "text": (note or {}).get("note") or "",
                     "hint": hint, "run_id": None}]
        states = {"done": done, "status": PASS if done else PENDING, "at": (note or {}).get("at"),
                  "run_ids": []}
    else:
        evidence = [evidence_state(ev, rec, lang) for ev in item.evidence]
        bad = [s for s in evidence if s["status"] != PASS]
        states = {"done": not bad, "at": None,
                  "status": min((s["status"] for s in bad), key=_WORST.index) if bad else PASS,
                  "run_ids": sorted({s["run_id"] for s in evidence if s["run_id"]})}
    detail = "; ".join(s["hint"] or s["text"] for s in evidence if s["hint"] or s["text"])
    return {**base, **states, "evidence": evidence, "detail": detail}


def checklist_state(book: Logbook, lang: str) -> list[dict]:
    """[{group fields..., entries: [item_state...], done, total}] for every roadmap group."""
    rec, notes = Records(book), book.notes()
    out = []
    for group in roadmap():
        items = [item_state(i, rec, notes, lang) for i in group.items]
        required = [i for i in items if not i["optional"]]
        out.append({"id": group.id, "title": group.title(lang), "source": group.source,
                    "entries": items, "done": sum(i["done"] for i in required),
                    "total": len(required)})
    return out


def run_history(book: Logbook) -> list[dict]:
    """Every run, oldest first, with its step counts and duration."""
    rec = Records(book)
    out = []
    for run in rec.runs.values():
        steps = [s for s in rec.steps if s["run_id"] == run["id"]]
        counts: dict[str, int] = {}
        for s in steps:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        duration = (run["ended_at"] - run["started_at"]) if run.get("ended_at") else None
        out.append({**run, "steps": [s["key"] for s in steps], "counts": counts,
                    "duration_s": duration})
    return out


def progress_context(book: Logbook, lang: str) -> dict:
    from lab.deliver.jinja import STATUS_TEXT, fmt_ts
    groups = checklist_state(book, lang)
    return {"lang": lang, "groups": groups, "runs": run_history(book),
            "status_text": STATUS_TEXT[lang], "generated_at": fmt_ts(time.time()),
            "done": sum(g["done"] for g in groups), "total": sum(g["total"] for g in groups)}


def render_progress(book: Logbook, lang: str, out_dir: Path) -> Path:
    """Render `logbook/progress.md` (Command line equivalent: `invoke status`)."""
    from lab.deliver.jinja import render_to
    return render_to(out_dir, "progress.md", "progress.md.j2", **progress_context(book, lang))
