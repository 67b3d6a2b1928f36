"""The one Jinja2 environment of the deliverables: the templates folder, the filters (escaping,
numbers, times) and `t(zh, en)`. Outputs render through `render_to`."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jinja2

from lab.core.config import PROJECT_ROOT
from lab.core.escape import code_block, md_inline
from lab.core.fmt import num
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED

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
