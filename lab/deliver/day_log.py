"""The execution log of a day (执行日志): `logbook/<day>.md`, rendered from the logbook only,
so it can be rendered again at any time, from any past run."""
from __future__ import annotations

import time
from pathlib import Path

from lab.checklist import seeds
from lab.deliver.jinja import STATUS_TEXT, fmt_ts, render_to
from lab.record.logbook import PASS, PENDING, Logbook


def acceptance(day: str, steps: dict[str, dict], lang: str) -> list[dict]:
    """The 验收 checkboxes, each ticked only from a recorded pass."""
    out = []
    for item in seeds.DAYS[day].acceptance:
        step = steps.get(item.step)
        status, reason = PENDING, None
        if step:
            if item.criterion is None:
                status, reason = step["status"], step.get("reason")
            else:
                crit = next((c for c in step.get("criteria") or [] if c["key"] == item.criterion), None)
                if crit:
                    status, reason = crit["status"], crit.get("reason")
                else:
                    status, reason = step["status"], step.get("reason")
        out.append({"label": item.label_zh if lang == "zh" else item.label_en,
                    "done": status == PASS, "status": status, "reason": reason,
                    "run_id": step["run_id"] if step else None})
    return out


def day_context(book: Logbook, day: str, lang: str, run_id: int | None = None) -> dict:
    book.recover()
    if run_id is not None:
        rows = {s["key"]: s for s in book.steps(run_id)}
    else:
        rows = book.latest_steps(day)
    runs = {r["id"]: r for r in book.runs(day)}
    steps = []
    for spec in seeds.DAYS[day].steps:
        row = rows.get(spec.key)
        steps.append({"spec": spec, "row": row,
                      "title": spec.title_zh if lang == "zh" else spec.title_en,
                      "run": runs.get(row["run_id"]) if row else None})
    used_runs = sorted({s["row"]["run_id"] for s in steps if s["row"]})
    versions = {}
    for s in steps:
        if s["row"] and s["spec"].key == "install" and s["row"]["values"].get("vllm"):
            versions = s["row"]["values"]
    return {
        "day": day, "lang": lang, "meta": seeds.DAYS[day], "steps": steps,
        "runs": [runs[i] for i in used_runs if i in runs], "versions": versions,
        "acceptance": acceptance(day, rows, lang), "status_text": STATUS_TEXT[lang],
        "generated_at": fmt_ts(time.time()), "run_id": run_id,
    }


def render_day(book: Logbook, day: str, lang: str, out_dir: Path,
               run_id: int | None = None) -> Path:
    """Render `logbook/<day>.md` (Command line equivalent: `invoke log --day day3`)."""
    return render_to(out_dir, f"{day}.md", f"{day}.md.j2", **day_context(book, day, lang, run_id))
