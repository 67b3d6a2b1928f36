"""Text of logs: colour codes and progress-bar redraws removed, and the last lines of a
file or a string (the evidence a failed step keeps)."""

from __future__ import annotations

import os
import re

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean_lines(text: str) -> list[str]:
    """Every line without colour codes, for parsing. splitlines() also splits at \\r, so
    each redraw of a progress bar is a line of its own."""
    return [_ANSI_RE.sub("", line).rstrip() for line in text.splitlines()]


def shown_lines(text: str) -> list[str]:
    """The lines as a terminal showed them: colour codes removed, and a line redrawn with
    \\r (a progress bar) keeps only what was on screen last."""
    text = _ANSI_RE.sub("", text)
    return [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]


def tail_text(text: str, n: int = 20) -> str:
    """The last `n` non-empty lines of `text`, cleaned (see clean_lines).

    Command line equivalent: `tail -n 20`
    """
    if n <= 0:
        return ""
    lines = [line for line in shown_lines(text) if line.strip()]
    return "\n".join(lines[-n:])


def tail_file(path: str | os.PathLike | None, n: int = 20) -> str:
    """The last `n` non-empty lines of a file, cleaned; "" when it cannot be read.

    Reads backwards in blocks, so a multi-GB server log costs no more than its end.

    Command line equivalent: `tail -n 20 LOG`
    """
    if not path or n <= 0:
        return ""
    try:
        with open(path, "rb") as fh:
            data = _read_tail_bytes(fh, n)
    except OSError:
        return ""
    return tail_text(data.decode("utf-8", errors="replace"), n)


def _read_tail_bytes(fh, n: int, block: int = 8192) -> bytes:
    fh.seek(0, os.SEEK_END)
    pos, data = fh.tell(), b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    return data
