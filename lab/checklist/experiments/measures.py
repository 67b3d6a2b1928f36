"""How an arm is measured once its server is up. The runner calls `MEASURES[name](run)`
with the experiment's `measure` name ("load", the standard one, when it names none):

- `load`: the experiment's Load at each of its concurrency levels, every request recorded,
  /metrics counters around it, the summaries typed into the arm's values, each level also
  exported as `vllm bench serve --save-result` JSON;
- `api-key`: the same small completion with no key, a wrong key and the right key.

A new measurement is a function `fn(run: ArmRun) -> None` added to MEASURES.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.checklist.experiments.model import Arm, Experiment, Load
from lab.core.errors import ConfigError
from lab.record.runner import StepContext
from lab.record.session import Lab
from lab.record.values import ArmValues, LevelSummary, ProbeResult

#: The `requests.phase` of an experiment's requests.
PHASE = "experiment"


@dataclass
class ArmRun:
    """What an arm's measurement gets: the arm's session (its options applied), the running
    server's URL, model and API key, where to record, and the values to fill."""

    lab: Lab
    exp: Experiment
    arm: Arm
    round: int
    ctx: StepContext
    model: str
    api_key: str | None
    values: ArmValues
    seed: int

    @property
    def url(self) -> str:
        return self.lab.url

    def record(self, rec: Any) -> None:
        """Write one request (a lab.measure.loadgen.RequestRecord) as it finishes."""
        self.lab.book.add_request(self.ctx.run_id, self.ctx.step_id, PHASE, rec.to_dict())


#: /metrics counters an arm keeps (end − start of its load): name -> counter(s) to try.
COUNTERS = {
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    "preemptions": ("vllm:num_preemptions",),
    "prompt_tokens": ("vllm:prompt_tokens",),
    "generation_tokens": ("vllm:generation_tokens",),
}


def counters(before: Any, after: Any) -> dict[str, float | None]:
    """What the server counted over a load (lab.vllm.metrics.Snapshot before and after)."""
    out: dict[str, float | None] = {}
    for key, names in COUNTERS.items():
        out[key] = None
        for name in names:
            a, b = after.value(name), before.value(name)
            if a is not None and b is not None and a >= b:
                out[key] = a - b
                break
    return out


def prompt_set(load: Load, pool: list[int], n: int, seed: int) -> Any:
    """The load's prompts (lab.measure.workloads), `n` of them."""
    from lab.measure import workloads

    if load.kind == "random":
        return workloads.random_set(pool, n, load.input_len, load.output_len, seed)
    if load.kind == "shared-prefix":
        return workloads.shared_prefix_set(
            pool, n, load.prefix_len, load.input_len, load.output_len, seed
        )
    if load.kind == "mixed":
        return workloads.mixed_set(
            pool,
            n,
            load.input_len,
            load.output_len,
            load.long_len,
            load.long_output_len,
            load.long_count,
            seed,
        )
    raise ConfigError(f"unknown load kind {load.kind!r} (random, shared-prefix, mixed)")


def run_load(run: ArmRun, load: Load) -> None:
    """The standard measurement: the load at each of its concurrency levels (one when it has
    none), every request recorded; /metrics counters around it; the summaries typed into
    the arm's values (`load` = the first level, `classes` = per level and per label)."""
    from lab.measure import loadgen, prompts, workloads
    from lab.vllm import metrics

    pool = prompts.token_pool(run.url, run.model, api_key=run.api_key)
    before = metrics.fetch(run.url, api_key=run.api_key)
    levels = load.levels or (load.concurrency,)
    for i, c in enumerate(levels):
        seed = run.seed * 100 + i
        warm = workloads.random_set(
            pool, load.warmup, min(load.input_len, 32), 4, seed + 50, label="warmup"
        )
        pset = workloads.concat(warm, prompt_set(load, pool, load.num_requests, seed))
        w = loadgen.Workload(
            input_len=load.input_len,
            output_len=load.output_len,
            concurrency=c,
            num_requests=load.num_requests,
            warmup_requests=load.warmup,
            request_rate=load.request_rate,
            burstiness=load.burstiness,
            seed=seed,
            timeout_s=float(run.lab.cfg.get("api", {}).get("timeout_s") or 600),
        )
        res = loadgen.run_level_sync(
            run.url,
            run.model,
            pset.prompts,
            w,
            api_key=run.api_key,
            on_record=run.record,
            level=f"c{c}",
            output_lens=pset.output_lens,
            labels=pset.labels,
            goodput=dict(load.goodput) or None,
        )
        summary = LevelSummary.from_summary(res.summary, concurrency=c, level=f"c{c}")
        if i == 0:
            run.values.load = summary
        if len(levels) > 1:
            run.values.classes[f"c{c}"] = summary
        by_label = _by_label(res.records)
        if len(by_label) > 1:
            for label, recs in by_label.items():
                run.values.classes[label if len(levels) == 1 else f"c{c}:{label}"] = (
                    LevelSummary.from_summary(_summarize(recs), concurrency=c, level=label)
                )
        _export(run, load, res, c)
    after = metrics.fetch(run.url, api_key=run.api_key)
    run.values.counters = counters(before, after)
    run.values.cache_config = {k: str(v) for k, v in after.cache_config().items()}


def _by_label(records: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for rec in records:
        if not rec.warmup:
            out.setdefault(rec.level, []).append(rec)
    return out


def _summarize(records: list[Any]) -> dict[str, Any]:
    from lab.measure.stats import summarize

    return summarize(records, None)


def _export(run: ArmRun, load: Load, res: Any, concurrency: int) -> None:
    """Write the level as `vllm bench serve --save-result` JSON beside the logbook."""
    from lab.measure import export

    path = (
        run.lab.logbook_dir
        / "experiments"
        / run.exp.name
        / f"run{run.ctx.run_id}-{run.arm.name}-r{run.round}-c{concurrency}.json"
    )
    export.write(
        path,
        export.bench_serve_json(
            res.records,
            res.wall_s,
            model_id=run.model,
            num_prompts=load.num_requests,
            request_rate=load.request_rate,
            burstiness=load.burstiness,
            max_concurrency=concurrency,
            goodput=dict(load.goodput) or None,
            label=f"{run.exp.name}:{run.arm.name}",
        ),
    )
    run.values.export_path = str(path)


#: The probes of the api-key experiment: (name, which key the client sends).
PROBES = (("no-key", None), ("wrong-key", "wrong"), ("right-key", "right"))


def _files_holding(secret: str, paths: list[Any]) -> int:
    """How many of `paths` (files, or folders searched recursively) contain `secret`."""
    needle = secret.encode()
    found = 0
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else (list(root.rglob("*")) if root.is_dir() else [])
        for f in files:
            try:
                if f.is_file() and needle in f.read_bytes():
                    found += 1
            except OSError:
                continue
    return found


def measure_api_key(run: ArmRun) -> None:
    """Send the same small streamed completion with no key, a wrong key and the right key
    (every request recorded, with its HTTP status); then look for the key in every file the
    lab wrote (logbook, state file, exports) and in the server's log."""
    from lab.measure import loadgen, prompts, workloads

    assert run.api_key, "the api-key arm starts its server with a key"
    pool = prompts.token_pool(run.url, run.model, api_key=run.api_key)
    keys = {"wrong": "wrong-" + secrets.token_urlsafe(12), "right": run.api_key}
    for name, which in PROBES:
        pset = workloads.random_set(pool, 2, 16, 4, run.seed, label=name)
        w = loadgen.Workload(
            input_len=16, output_len=4, concurrency=1, num_requests=2, seed=run.seed
        )
        res = loadgen.run_level_sync(
            run.url,
            run.model,
            pset.prompts,
            w,
            api_key=keys.get(which or ""),
            on_record=run.record,
            level=name,
            labels=pset.labels,
        )
        statuses = {r.http_status for r in res.records}
        status = statuses.pop() if len(statuses) == 1 else None
        errors = [r.error for r in res.records if r.error]
        run.values.probes.append(ProbeResult(name, status, errors[0] if errors else None))
        if which == "right":
            run.values.load = LevelSummary.from_summary(res.summary, concurrency=1, level=name)
    lab = run.lab
    run.values.counters["key_in_lab_files"] = float(
        _files_holding(
            run.api_key,
            [
                lab.logbook_dir / "lab.db",
                lab.logbook_dir / "lab.db-wal",
                lab.state_path,
                lab.logbook_dir / "experiments",
            ],
        )
    )
    log = run.values.serve.log_path if run.values.serve else None
    run.values.counters["key_in_server_log"] = (
        float(_files_holding(run.api_key, [log])) if log else None
    )


#: Measurement name -> function.
MEASURES: dict[str, Callable[[ArmRun], None]] = {
    "load": lambda run: run_load(run, run.exp.load_for(run.lab.profile_name)),
    "api-key": measure_api_key,
}
#: The measurements that run the experiment's Load (its description is the verdict's
#: workload); the others send their own probes.
USES_LOAD: set[str] = {"load"}
