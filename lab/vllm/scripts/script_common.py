"""Helpers shared by the scripts that run in the vLLM env (imported from the script's own
folder, which Python puts first on sys.path)."""

from __future__ import annotations

import signal

MIB = 1024 * 1024


def deadline(seconds: float, name: str) -> None:
    """Raise TimeoutError inside the script after `seconds` (0: none), so vLLM and torch
    shut down cleanly instead of being killed from outside."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"{name} ran past its deadline of {seconds:g} s")

    if seconds > 0:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(seconds))
