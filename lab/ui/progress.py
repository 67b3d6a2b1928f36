"""Progress bars and live status lines on the terminal (rich).

Measurement code never draws: it takes plain callbacks (`advance()`, `on_tick(seconds)`, a
`start_phase(description, total)` that returns an `advance`), and these helpers turn them
into bars and spinners. Steps use them as context managers:

    with status(lab.console, "starting vLLM …") as update:
        server.wait_ready(state, timeout_s, on_tick=lambda s: update(f"waiting … {s:.0f} s"))
    with phase_bars(lab.console) as start_phase:
        bench.run_bench(..., start_phase=start_phase)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: start_phase(description, total or None) -> advance(): one bar per phase.
StartPhase = Callable[[str, "int | None"], Callable[[], None]]


@contextlib.contextmanager
def progress_bar(console: Console) -> Iterator[Progress]:
    """A rich progress bar (one line per task) on the lab's console."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield progress


@contextlib.contextmanager
def phase_bars(console: Console) -> Iterator[StartPhase]:
    """Yields `start_phase(description, total)`: each call adds a bar and returns the
    function that advances it by one (what lab.measure's `advance` callbacks expect)."""
    with progress_bar(console) as progress:

        def start_phase(description: str, total: int | None) -> Callable[[], None]:
            task = progress.add_task(escape(description), total=total)
            return lambda: progress.advance(task)

        yield start_phase


@contextlib.contextmanager
def status(console: Console, text: str) -> Iterator[Callable[[str], None]]:
    """A spinner with `text` while the block runs; yields `update(text)` to change it (e.g.
    from an `on_tick` callback). Texts are plain, not markup. On a terminal that is not
    interactive (CI, a pipe) rich draws nothing, so logs stay clean."""
    with console.status(escape(text)) as shown:
        yield lambda new: shown.update(escape(new))


@contextlib.contextmanager
def byte_progress(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """A bar with bytes done/total, rate and time left. Yields `update(bytes_done,
    bytes_total)`, safe to call from several threads; the first call sets the starting
    point (bytes already on disk), so the rate counts only what arrives."""
    from rich.progress import DownloadColumn, TaskID, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
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
