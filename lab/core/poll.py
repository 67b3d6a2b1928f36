"""One background poll: call a check every few seconds while a block of work runs, and hand
its first finding to a callback. The engine's watcher (lab.vllm.watch) and the node ranks'
watch (lab.vllm.nodes) both run on it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def polling(
    check: Callable[[], T | None],
    on_found: Callable[[T], None] | None = None,
    interval_s: float = 1.0,
    name: str = "poll",
) -> Iterator[None]:
    """Call `check()` at once and then every `interval_s` in a daemon thread while the block
    runs. Its first answer that is not None goes to `on_found` once, from that thread (e.g.
    end a server, so the block's requests fail at once instead of hanging), and the polling
    stops. A check or callback that raises is taken as nothing found: a watcher's bug must
    not end the step. The block reads the finding from the checker's own state."""
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            found = None
            with contextlib.suppress(Exception):
                found = check()
            if found is not None:
                if on_found is not None:
                    with contextlib.suppress(Exception):
                        on_found(found)
                return
            done.wait(interval_s)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=30)
