"""Units and the small arithmetic every layer shares: bytes to MiB/GiB, a None-safe ratio,
and how evenly memory is spread over devices.

Memory is binary, as nvidia-smi, NVML, psutil and vLLM's "GiB" log lines count it:
1 MiB = 2**20 bytes, 1 GiB = 2**30 bytes. Bandwidth is decimal, as GPU specs give it:
1 GB/s = 10**9 bytes/s. A missing figure stays None through every function here (it is
never turned into 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict, overload

#: Bytes in one MiB / GiB (binary: nvidia-smi's and NVML's unit).
MIB = 2**20
GIB = 2**30
#: MiB in one GiB.
MIB_PER_GIB = 1024
#: Bytes in one GB (decimal: the unit of GB/s in GPU specs).
GB = 10**9


@overload
def mib(n_bytes: float) -> float: ...
@overload
def mib(n_bytes: None) -> None: ...
def mib(n_bytes: float | None) -> float | None:
    """Bytes to MiB."""
    return None if n_bytes is None else n_bytes / MIB


@overload
def gib(n_bytes: float) -> float: ...
@overload
def gib(n_bytes: None) -> None: ...
def gib(n_bytes: float | None) -> float | None:
    """Bytes to GiB."""
    return None if n_bytes is None else n_bytes / GIB


@overload
def mib_to_gib(n_mib: float) -> float: ...
@overload
def mib_to_gib(n_mib: None) -> None: ...
def mib_to_gib(n_mib: float | None) -> float | None:
    """MiB to GiB (nvidia-smi's 81,559 MiB is 79.6 GiB)."""
    return None if n_mib is None else n_mib / MIB_PER_GIB


@overload
def gib_to_mib(n_gib: float) -> float: ...
@overload
def gib_to_mib(n_gib: None) -> None: ...
def gib_to_mib(n_gib: float | None) -> float | None:
    """GiB to MiB."""
    return None if n_gib is None else n_gib * MIB_PER_GIB


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den: a speedup, a share, one run against another.

    None when either side is missing or the denominator is not positive. Every figure the
    lab divides by (tok/s, latency, memory, minutes) is positive when it was measured, so a
    zero or negative denominator means "not measured", not infinity or a sign flip.
    """
    if num is None or den is None or den <= 0:
        return None
    return num / den


class Balance(TypedDict):
    """What `balance` measured: how many values, the largest, the smallest, the spread."""

    n: int
    max: float | None
    min: float | None
    spread_pct: float | None


def balance(values: Iterable[float | None]) -> Balance:
    """How evenly memory is spread over devices: {'n', 'max', 'min', 'spread_pct'}.

    spread_pct = (max − min) / max × 100: the seed's "两张卡显存占用均衡（误差 < 10%）" (TP=2).
    Dividing by the larger keeps it within 0–100. Works for any unit (GPU MiB, worker RSS).
    Missing values (None) are left out; with fewer than two values left there is nothing to
    compare, so spread_pct is None (a caller must fail or skip, never pass); a max of 0
    gives 0 %.

    Command line equivalent: `nvidia-smi --query-gpu=index,memory.used --format=csv`
    """
    known = [float(v) for v in values if v is not None]
    if not known:
        return {"n": 0, "max": None, "min": None, "spread_pct": None}
    high, low = max(known), min(known)
    spread: float | None = None
    if len(known) >= 2:
        spread = (high - low) / high * 100.0 if high > 0 else 0.0
    return {"n": len(known), "max": high, "min": low, "spread_pct": spread}


def imbalance_pct(values: Iterable[float | None]) -> float | None:
    """`balance(values)["spread_pct"]`: (max − min) / max in percent, None below two values."""
    return balance(values)["spread_pct"]
