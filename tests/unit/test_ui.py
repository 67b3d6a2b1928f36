"""lab.ui: the terminal. Measured text is never taken for rich markup, labels follow the
language, and progress reaches the screen only through the callbacks lab.measure takes."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from lab.core.errors import ConfigError
from lab.record.logbook import FAIL, PASS
from lab.record.runner import StepResult, StepSpec
from lab.ui import console as ui_console
from lab.ui import progress, tables


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False, color_system=None), out


def _result(**kw) -> StepResult:
    base = dict(key="serve", status=PASS, actual="ready after 41.2 s", reason=None, fix=None,
                duration_s=41.2, values={})
    return StepResult(**{**base, **kw})


SPEC = StepSpec("serve", 4, "单卡部署 [7B] 模型", "Serve the [7B] model", "vllm serve")


def test_say_and_warn_print_text_with_brackets_as_it_is():
    con, out = _console()
    ui_console.say(con, "log: /tmp/[run 3]/server.log")
    ui_console.warn(con, "binding 0.0.0.0 [no key]")
    assert out.getvalue().splitlines() == ["log: /tmp/[run 3]/server.log",
                                           "warning: binding 0.0.0.0 [no key]"]


def test_a_result_with_markup_like_text_is_printed_verbatim():
    con, out = _console()
    tables.print_result(con, _result(status=FAIL, actual="[/] [bold]x", reason="HTTP [500]",
                                     fix="pass --api-key [KEY]"))
    assert out.getvalue().splitlines() == ["fail  [/] [bold]x", "  reason: HTTP [500]",
                                           "  fix: pass --api-key [KEY]"]


def test_step_rule_and_summary_follow_the_language():
    con, out = _console()
    tables.print_step_start(con, SPEC, "zh")
    tables.print_step_start(con, SPEC, "en")
    con.print(tables.summary_table("day3", "cpu", "en", [_result()], {"serve": SPEC}))
    text = out.getvalue()
    assert "4. 单卡部署 [7B] 模型" in text and "4. Serve the [7B] model" in text
    assert "actual" in text and "ready after 41.2 s" in text
    with pytest.raises(ConfigError):
        tables.print_step_start(con, SPEC, "fr")


def test_status_yields_an_update_and_draws_nothing_off_a_terminal():
    con, out = _console()
    shown = []
    with progress.status(con, "starting [vLLM]") as update:
        update("waiting for /health … 3 s")
        shown.append(True)
    assert shown and out.getvalue() == ""  # a pipe or CI log stays clean


def test_phase_bars_turn_start_phase_into_bars():
    con, out = _console()
    with progress.phase_bars(con) as start_phase:
        advance = start_phase("sweep c=4 [tp2]", 3)
        for _ in range(3):
            advance()
        start_phase("latency loop", None)()
    text = out.getvalue()
    assert "sweep c=4 [tp2]" in text and "3/3" in text and "latency loop" in text
