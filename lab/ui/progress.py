"""Progress bars and live status lines on the terminal (rich). Measurement code takes plain
callbacks (`advance`, `on_tick`); these helpers turn them into bars."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def progress_bar(console: Any) -> Iterator[Any]:
    """A rich progress bar (one line per phase) on the lab's console."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        yield progress


@contextlib.contextmanager
def byte_progress(console: Any, description: str) -> Iterator[Callable[[int, int], None]]:
    """A bar with bytes done/total, rate and time left. Yields `update(bytes_done,
    bytes_total)`, safe to call from several threads; the first call sets the starting
    point (bytes already on disk), so the rate counts only what arrives."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=console)
    task: list[TaskID] = []
    lock = threading.Lock()

    def update(done: int, total: int) -> None:
        with lock:
            if not task:
                task.append(progress.add_task(description, total=total, completed=done))
            else:
                progress.update(task[0], completed=done, total=total)

    with progress:
        yield update
