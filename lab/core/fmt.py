"""Number formatting for the terminal and the rendered markdown: one place, so a figure
reads the same in `actual`, the summary table and the reports. None is "n/a", never 0."""

from __future__ import annotations

from typing import Any


def fixed(value: Any, digits: int = 1) -> str:
    """Thousands separators and a fixed number of decimals: 2,356.0."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def num(value: Any, digits: int = 2) -> str:
    """Compact: whole numbers without decimals (1,048,576; 90), others with `digits`."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)
