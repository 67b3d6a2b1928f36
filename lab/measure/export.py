"""A benchmark level as the JSON `vllm bench serve --save-result` writes, with its field
names (`vllm/benchmarks/serve.py`, vLLM 0.32: `benchmark()`'s result dict plus the fields
`main` adds), so readers of that format open this project's results too.

Figures follow the same definitions (lab.measure.stats): latencies over successful
requests, in ms; TPOT only for more than one output token; ITLs pooled; throughputs over
the wall time from the first send to the last finish; `std_*` is numpy's population std;
`p99_*` numpy's linear percentile. Per-request lists (`input_lens`, `output_lens`, `ttfts`,
`itls`, `start_times`, `errors`, …) are in request order, warm-ups left out, as vLLM's
`--save-detailed` writes them; generated texts are not kept (empty strings).

Command line equivalent: `vllm bench serve … --save-result --save-detailed --result-filename F`
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lab.measure import stats


def _get(rec: Any, name: str) -> Any:
    return rec.get(name) if isinstance(rec, Mapping) else getattr(rec, name, None)


def _ms_stats(name: str, values: list[float], percentiles: Iterable[float] = (99,)) -> dict:
    arr = np.asarray(values or [0.0], dtype=float) * 1000.0
    out = {
        f"mean_{name}_ms": float(arr.mean()),
        f"median_{name}_ms": float(np.median(arr)),
        f"std_{name}_ms": float(arr.std()),
    }
    for p in percentiles:
        word = str(int(p)) if int(p) == p else str(p)
        out[f"p{word}_{name}_ms"] = float(np.percentile(arr, p))
    return out


def bench_serve_json(
    records: Iterable[Any],
    wall_s: float | None,
    *,
    model_id: str,
    num_prompts: int | None = None,
    request_rate: float = math.inf,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    goodput: Mapping[str, float] | None = None,
    label: str | None = None,
    backend: str = "openai",
    tokenizer_id: str | None = None,
    percentiles: Iterable[float] = (99,),
) -> dict[str, Any]:
    """One level's records (RequestRecord objects or logbook rows) as vLLM's result dict."""
    recs = [r for r in records if not _get(r, "warmup")]
    ok = [r for r in recs if _get(r, "ok")]
    wall = wall_s if wall_s else stats.wall_from_records(recs) or 0.0
    total_in = sum(int(_get(r, "input_tokens") or 0) for r in ok)
    total_out = sum(int(_get(r, "output_tokens") or 0) for r in ok)
    ttfts = [float(_get(r, "ttft_s")) for r in ok if _get(r, "ttft_s") is not None]
    tpots = [float(_get(r, "tpot_s")) for r in ok if _get(r, "tpot_s") is not None]
    e2els = [float(_get(r, "e2el_s")) for r in ok if _get(r, "e2el_s") is not None]
    itls = [float(x) for r in ok for x in (_get(r, "itls_s") or [])]
    t0 = min((_get(r, "sent_at_s") for r in recs if _get(r, "sent_at_s") is not None), default=0.0)

    def per_s(n: float) -> float:
        return n / wall if wall > 0 else 0.0

    result: dict[str, Any] = {
        "date": time.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": backend,
        "backend": backend,
        "label": label or backend,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id or model_id,
        "num_prompts": num_prompts if num_prompts is not None else len(recs),
        "request_rate": "inf" if math.isinf(request_rate) else request_rate,
        "burstiness": burstiness,
        "max_concurrency": max_concurrency,
        "duration": wall,
        "completed": len(ok),
        "failed": len(recs) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": per_s(len(ok)),
        "request_goodput": per_s(stats.good_requests(recs, goodput)) if goodput else None,
        "output_throughput": per_s(total_out),
        "total_token_throughput": per_s(total_in + total_out),
        "input_lens": [int(_get(r, "input_tokens") or 0) for r in recs],
        "output_lens": [int(_get(r, "output_tokens") or 0) if _get(r, "ok") else 0 for r in recs],
        "ttfts": [float(_get(r, "ttft_s") or 0.0) for r in recs],
        "itls": [list(_get(r, "itls_s") or []) for r in recs],
        "latencies": [float(_get(r, "e2el_s") or 0.0) for r in recs],
        "start_times": [float((_get(r, "sent_at_s") or 0.0) - t0) for r in recs],
        "queue_times": [float(_get(r, "queue_s") or 0.0) for r in recs],
        "generated_texts": ["" for _ in recs],
        "errors": [_get(r, "error") or "" for r in recs],
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        result.update(_ms_stats(name, values, percentiles))
    return result


def write(path: str | Path, result: Mapping[str, Any]) -> Path:
    """Write the JSON (as vLLM does: `json.dump` of the dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path
