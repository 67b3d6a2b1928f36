"""Progress bars and live status lines on the terminal (rich). Measurement code takes plain
callbacks (`advance`, `on_tick`); these helpers turn them into bars."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def progress_bar(console: Any) -> Iterator[Any]:
    """A rich progress bar (one line per phase) on the lab's console."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        yield progress
