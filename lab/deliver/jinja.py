"""Render the logbook into markdown with Jinja2. Reads only from the database, so any
report can be rendered again at any time, from any past run."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jinja2

from lab.checklist import seeds as checklist
from lab.core.config import PROJECT_ROOT
from lab.core.escape import code_block, md_inline
from lab.core.fmt import num
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED, Logbook

TEMPLATES = PROJECT_ROOT / "templates"

STATUS_TEXT = {
    "zh": {PASS: "✅ 通过", FAIL: "❌ 失败", SKIPPED: "⏭️ 跳过", PENDING: "⏳ 待执行",
           INTERRUPTED: "⚠️ 中断", RUNNING: "⏳ 进行中"},
    "en": {PASS: "✅ pass", FAIL: "❌ fail", SKIPPED: "⏭️ skipped", PENDING: "⏳ pending",
           INTERRUPTED: "⚠️ interrupted", RUNNING: "⏳ running"},
}


def environment(html: bool = False) -> jinja2.Environment:
    """Markdown templates: untrusted text goes through |md explicitly, and |num escapes a
    value that is not a number. HTML templates (`html=True`): Jinja's autoescape does it."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=html)
    number = num if html else _md_num
    env.filters.update(md=md_inline, code=code_block, num=number, ms=fmt_ms, ts=fmt_ts,
                       tojson_pretty=lambda v: json.dumps(v, ensure_ascii=False, indent=2))
    return env


def _md_num(value: Any, digits: int = 2) -> str:
    # A DB value that is text (e.g. a hand-edited row) must not inject markdown.
    return md_inline(value) if isinstance(value, str) and value else num(value, digits)


def fmt_ms(seconds: Any) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.1f}"


def fmt_ts(ts: Any) -> str:
    if not ts:
        return "n/a"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def acceptance(day: str, steps: dict[str, dict], lang: str) -> list[dict]:
    """The 验收 checkboxes, each ticked only from a recorded pass."""
    out = []
    for item in checklist.DAYS[day]["acceptance"]:
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
    for spec in checklist.DAYS[day]["steps"]:
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
        "day": day, "lang": lang, "meta": checklist.DAYS[day], "steps": steps,
        "runs": [runs[i] for i in used_runs if i in runs], "versions": versions,
        "acceptance": acceptance(day, rows, lang), "status_text": STATUS_TEXT[lang],
        "generated_at": fmt_ts(__import__("time").time()), "run_id": run_id,
    }


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name>; `context["lang"]` picks zh or en through `t(zh, en)`."""
    env = environment()
    lang = context["lang"]
    env.globals["t"] = lambda zh, en: zh if lang == "zh" else en
    return env.get_template(name).render(**context)


def render_to(out_dir: Path, filename: str, template: str, **context: Any) -> Path:
    """Render templates/<template> into out_dir/filename; returns the path written."""
    text = render_template(template, **context)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    path.write_text(text, encoding="utf-8")
    return path


def render_day(book: Logbook, day: str, lang: str, out_dir: Path,
               run_id: int | None = None) -> Path:
    """Render `logbook/<day>.md` (Command line equivalent: `invoke log --day day3`)."""
    return render_to(out_dir, f"{day}.md", f"{day}.md.j2", **day_context(book, day, lang, run_id))
