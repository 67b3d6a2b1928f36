"""Which step function does each step of each day (`lab.checklist.seeds` keys -> functions).

Each function takes `(lab, ctx, **options)` and returns an `Outcome`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from lab.checklist.seeds import day as day_of
from lab.checklist.steps import (
    api_test,
    balance,
    bench,
    compare,
    compare_tp,
    download,
    gpus,
    install,
    metrics,
    monitor,
    multinode,
    offline,
    serve,
    tools,
)
from lab.record.runner import Outcome, StepContext
from lab.record.session import Lab

StepFn = Callable[..., Outcome]

FUNCS: dict[str, dict[str, StepFn]] = {
    "day3": {
        "gpus": gpus.gpus,
        "install": install.install,
        "tools": tools.tools,
        "download": download.download,
        "serve": serve.serve,
        "monitor": monitor.monitor,
        "api-test": api_test.api_test,
        "metrics": metrics.metrics_step,
    },
    "day4": {
        "gpus": functools.partial(gpus.gpus, min_gpus=2),
        "download": functools.partial(download.download, day="day4"),
        "serve": serve.serve_tp,
        "balance": balance.balance,
        "api-test": functools.partial(api_test.api_test, day="day4"),
        "bench": bench.bench_step,
        "compare": compare.compare_step,
        "compare-tp": compare_tp.compare_tp,
        "metrics": metrics.metrics_after_bench,
    },
    "day5": {
        "install": install.install,
        "offline": offline.offline,
        "kv-cache": offline.kv_cache,
        "memory": offline.memory,
        "params": offline.params,
    },
    # Day 6 (issue 12): the API test and the benchmark watch the node ranks.
    "day6": {
        "nodes": multinode.nodes_step,
        "node": multinode.node_step,
        "serve-nodes": multinode.serve_nodes,
        "node-share": multinode.node_share,
        "api-test": multinode.watched(api_test.api_test),
        "bench": multinode.watched(bench.bench_step),
        "compare-nodes": multinode.compare_nodes,
    },
}


def step_fn(day: str, key: str, **kwargs: Any) -> Callable[[Lab, StepContext], Outcome]:
    """The function of step `key` of `day`, with `kwargs` bound."""
    day_of(day)  # an unknown day is one clear line
    fn = FUNCS[day][key]
    return functools.partial(fn, **kwargs) if kwargs else fn
