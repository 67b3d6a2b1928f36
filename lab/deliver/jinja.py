"""The one Jinja2 environment of the deliverables: the templates folder, StrictUndefined, the
filters (escaping, numbers, times) and `t(zh, en)`.

Markdown templates (`*.md.j2`) are not autoescaped: untrusted text goes through `|md` (or
`|code`) explicitly, and `|num` escapes a value that is not a number. HTML templates
(`*.html.j2`) are autoescaped, so every `{{ }}` is HTML-escaped. Templates only loop and
format; what to show is decided in Python (each output's view model).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any

import jinja2

from lab.core.config import PROJECT_ROOT
from lab.core.escape import code_block, md_inline
from lab.core.fmt import num
from lab.core.lang import pick
from lab.explain.notes import note
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED

TEMPLATES = PROJECT_ROOT / "templates"

STATUS_TEXT = {
    "zh": {
        PASS: "✅ 通过",
        FAIL: "❌ 失败",
        SKIPPED: "⏭️ 跳过",
        PENDING: "⏳ 待执行",
        INTERRUPTED: "⚠️ 中断",
        RUNNING: "⏳ 进行中",
    },
    "en": {
        PASS: "✅ pass",
        FAIL: "❌ fail",
        SKIPPED: "⏭️ skipped",
        PENDING: "⏳ pending",
        INTERRUPTED: "⚠️ interrupted",
        RUNNING: "⏳ running",
    },
}


def status_text(status: str, lang: str) -> str:
    """✅ pass, ❌ 失败, …; a status we do not know is shown as it is."""
    return STATUS_TEXT[lang].get(status, status)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The environment (made once): autoescape for *.html.j2 only, StrictUndefined."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False
        ),
        # Compiled templates are kept in a per-user folder of the temp dir (0700): a render
        # does not compile them again.
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
    )
    env.filters.update(
        md=md_inline,
        code=code_block,
        num=_num,
        ms=fmt_ms,
        ts=fmt_ts,
        tojson_pretty=lambda v: json.dumps(v, ensure_ascii=False, indent=2),
    )
    env.filters["status"] = _status
    env.globals["t"] = _t
    env.globals["note"] = _note
    return env


@jinja2.pass_context
def _note(ctx: jinja2.runtime.Context, name: str) -> str:
    """A longer note of lab.explain.notes in the render's language."""
    return note(name, ctx["lang"])


@jinja2.pass_context
def _status(ctx: jinja2.runtime.Context, status: str) -> str:
    """A step or run status as the render's language shows it (✅ 通过, ❌ fail, …)."""
    return status_text(status, ctx["lang"])


@jinja2.pass_eval_context
def _num(ctx: jinja2.nodes.EvalContext, value: Any, digits: int = 2) -> str:
    """A number (lab.core.fmt.num). In markdown a value that is text (e.g. a hand-edited row)
    is escaped so it cannot inject markdown; in HTML autoescape does that."""
    return num(value, digits) if ctx.autoescape else md_num(value, digits)


def md_num(value: Any, digits: int = 2) -> str:
    """A number for markdown (lab.core.fmt.num); a value that is text is escaped instead."""
    return md_inline(value) if isinstance(value, str) and value else num(value, digits)


@jinja2.pass_context
def _t(ctx: jinja2.runtime.Context, zh: str, en: str) -> str:
    """The text in the render's language (`lang` of the context); HTML escapes it."""
    return pick(ctx["lang"], zh, en)


def fmt_ms(seconds: Any) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.1f}"


def fmt_ts(ts: Any) -> str:
    if not ts:
        return "n/a"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def render_template(name: str, **context: Any) -> str:
    """Render templates/<name>; `context["lang"]` picks zh or en through `t(zh, en)`."""
    return environment().get_template(name).render(**context)


def render_to(out_dir: Path, filename: str, template: str, **context: Any) -> Path:
    """Render templates/<template> into out_dir/filename; returns the path written."""
    text = render_template(template, **context)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    path.write_text(text, encoding="utf-8")
    return path
