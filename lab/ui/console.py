"""The lab's terminal: one rich console, and plain lines printed on it.

Everything printed goes through rich markup, so text that comes from outside (paths, log
lines, model output, error messages) is escaped here: a "[" in a path must not turn into
markup or vanish.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def make_console() -> Console:
    """The lab's terminal: rich's console without guessing highlights in plain text."""
    return Console(highlight=False)


def say(console: Console, text: str, *, label: str | None = None, style: str | None = None) -> None:
    """One line of plain text; `label` is a prefix such as "warning:", drawn in `style`."""
    prefix = ""
    if label:
        prefix = f"[{style}]{escape(label)}[/] " if style else f"{escape(label)} "
    console.print(prefix + escape(text))


def warn(console: Console, text: str) -> None:
    """`warning: text`, the label in yellow."""
    say(console, text, label="warning:", style="yellow")
