"""Benchmark statistics, computed the way `vllm bench serve` computes them.

Definitions (see docs/facts.md, "Benchmark definitions"; vLLM: `vllm/benchmarks/serve.py`,
`calculate_metrics`):
- latency figures (TTFT, TPOT, ITL, E2EL, queue) come from *successful* requests only;
- ITL values are pooled across requests; TPOT only exists for requests with > 1 output token;
- token totals count successful requests only;
- throughputs divide by the wall time from the first send to the last finish;
- statistics are mean, median, p90 and p99 with `numpy.percentile` (linear interpolation).

Warm-up records never enter the statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: The percentile keys every statistics dict carries, in order.
STAT_KEYS = ("mean", "median", "p90", "p99")


def percentiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """Mean, median, p90 and p99 of `values` (None entries ignored).

    An empty input gives a dict of None values, so a report can show "n/a" rather than 0.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {key: None for key in STAT_KEYS}
    arr = np.asarray(vals, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99], method="linear")
    return {"mean": float(arr.mean()), "median": float(p50), "p90": float(p90), "p99": float(p99)}


def _get(record: Any, name: str, default: Any = None) -> Any:
    """Read a field from a RequestRecord-like object or a mapping (a logbook row)."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _ms(values: Iterable[float | None]) -> list[float]:
    """Seconds to milliseconds, dropping missing values."""
    return [v * 1000.0 for v in values if v is not None]


def _itls(record: Any) -> list[float]:
    """A record's inter-token gaps; a logbook row may hold them as a JSON string."""
    itls = _get(record, "itls_s") or []
    if isinstance(itls, str):
        itls = json.loads(itls) if itls else []
    return list(itls)


def wall_from_records(records: Iterable[Any]) -> float | None:
    """Wall time from the first send to the last finish, from the records alone.

    Used when re-summarising rows read back from the logbook. Only requests that were sent
    and have an end-to-end latency contribute to the last finish.
    """
    starts, ends = [], []
    for rec in records:
        if _get(rec, "warmup"):
            continue
        sent = _get(rec, "sent_at_s")
        if sent is None:
            continue
        starts.append(sent)
        e2el = _get(rec, "e2el_s")
        if e2el is not None:
            ends.append(sent + e2el)
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def _per_s(count: float, wall_s: float | None) -> float | None:
    """A rate over the wall time; None when there is no positive wall time."""
    if not wall_s or wall_s <= 0:
        return None
    return count / wall_s


def summarize(records: Iterable[Any], wall_s: float | None) -> dict[str, Any]:
    """Summarise one level's request records (RequestRecord objects or logbook rows).

    `wall_s` is the time from the first send to the last finish; None derives it from the
    records (`wall_from_records`). Warm-up records are excluded.
    """
    measured = [r for r in records if not _get(r, "warmup")]
    if wall_s is None:
        wall_s = wall_from_records(measured)
    ok = [r for r in measured if _get(r, "ok")]
    failed = [r for r in measured if not _get(r, "ok")]
    input_tokens = sum(int(_get(r, "input_tokens") or 0) for r in ok)
    output_tokens = sum(int(_get(r, "output_tokens") or 0) for r in ok)
    itls: list[float] = []
    for rec in ok:
        itls.extend(_itls(rec))
    return {
        "requests": len(measured),
        "completed": len(ok),
        "failed": len(failed),
        "timeouts": sum(1 for r in failed if _get(r, "error") == "timeout"),
        "wall_s": wall_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": _per_s(len(ok), wall_s),
        "output_throughput": _per_s(output_tokens, wall_s),
        "total_token_throughput": _per_s(input_tokens + output_tokens, wall_s),
        "ttft_ms": percentiles(_ms(_get(r, "ttft_s") for r in ok)),
        # tpot_s is None for single-token outputs, as in vLLM (they have no TPOT).
        "tpot_ms": percentiles(_ms(_get(r, "tpot_s") for r in ok)),
        "itl_ms": percentiles(_ms(itls)),
        "e2el_ms": percentiles(_ms(_get(r, "e2el_s") for r in ok)),
        "queue_ms": percentiles(_ms(_get(r, "queue_s") for r in ok)),
    }


def error_counts(records: Iterable[Any], n: int = 3) -> list[tuple[str, int]]:
    """The `n` most frequent errors of the failed requests (warm-ups included), most first:
    [(error text, count)]. Records or logbook rows."""
    counts: dict[str, int] = {}
    for rec in records:
        if _get(rec, "ok"):
            continue
        error = _get(rec, "error") or "unknown error (none recorded)"
        counts[error] = counts.get(error, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def errors_line(records: Iterable[Any], n: int = 3) -> str:
    """The top error reasons with their counts, in one line: "timeout ×2; HTTP 500: … ×1"."""
    return "; ".join(f"{error} ×{count}" for error, count in error_counts(records, n))


def good_requests(records: Iterable[Any], slo_ms: Mapping[str, float]) -> int:
    """How many successful measured requests met every latency target, as vLLM counts them
    (DistServe's goodput; `calculate_metrics` in vllm/benchmarks/serve.py): TTFT, TPOT and
    E2EL each <= its target; a request with one output token has TPOT 0."""
    good = 0
    for rec in records:
        if _get(rec, "warmup") or not _get(rec, "ok"):
            continue
        seen = {
            "ttft": _get(rec, "ttft_s"),
            "tpot": _get(rec, "tpot_s") or 0.0,
            "e2el": _get(rec, "e2el_s"),
        }
        if all(seen[k] is not None and seen[k] * 1000.0 <= ms for k, ms in slo_ms.items()):
            good += 1
    return good


def goodput(
    records: Iterable[Any], slo_ms: Mapping[str, float], wall_s: float | None
) -> float | None:
    """Good requests per second over the level's wall time (`request_goodput`)."""
    return _per_s(good_requests(records, slo_ms), wall_s)
