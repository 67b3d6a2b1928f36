"""Day 4 `bench`: the seed's latency loop, then a serving benchmark over concurrency levels.

Plain functions over an OpenAI-compatible server, testable with the fake server:
- `latency_loop`: the seed's `benchmark_vllm.py` (N sequential chat requests; avg/min/max ms).
- `run_level`: one streamed level of `lab.measure.loadgen` (warm-up first, synthetic prompts of an
  exact token length, `ignore_eos`), every request handed to `record` as it finishes.
- `run_bench`: both, with /metrics scraped before and after (`lab.vllm.metrics.delta`) and the
  KV-cache usage sampled during the sweep (`lab.measure.sampler.Sampler` over
  `lab.vllm.metrics.sample_usage`). A server that dies
  stops the run: what finished is kept, the rest is recorded failed, `died_during` says where.
It measures and never draws: progress goes out through a `StartPhase` callback (lab.ui turns
it into bars), and the verdict is the step's (lab.checklist.steps.bench).

Definitions are `vllm bench serve`'s (docs/facts.md, "Benchmark definitions"; see lab.measure.loadgen
and lab.measure.stats). Command line equivalent of one level:
    vllm bench serve --dataset-name random --random-input-len 128 --random-output-len 128 \\
        --ignore-eos --max-concurrency 16 --num-prompts 64 --num-warmups 4
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.core.errors import ApiError
from lab.measure import loadgen, prompts
from lab.measure.loadgen import TIMEOUT_ERROR, RequestRecord, Workload
from lab.measure.sampler import Sampler
from lab.measure.stats import percentiles
from lab.vllm import metrics

#: Prompts drawn for a level limited only by time (they are cycled if it runs longer).
TIMED_LEVEL_PROMPTS = 1024

Record = Callable[[str, RequestRecord], None]  # (phase, record) -> None, as each finishes
#: Progress: start_phase(description, total requests or None) returns the phase's `advance()`
#: (lab.ui.progress.phase_bars gives one that draws a bar per phase).
StartPhase = Callable[[str, "int | None"], Callable[[], None]]


@dataclass
class BenchPlan:
    """What `bench` runs, from the validated `bench` config (lab.core.config.validate_bench)."""

    levels: list[int]
    input_len: int
    output_len: int
    num_requests: int | None
    warmup: int
    duration_s: float | None
    latency_runs: int
    latency_prompt: str
    latency_max_tokens: int
    timeout_s: float = loadgen.DEFAULT_TIMEOUT_S
    kv_poll_s: float = 0.5
    #: Arrivals per level (req/s; inf: all at once) and their gamma burstiness, and the
    #: goodput targets in ms ({"ttft": 500}), as `vllm bench serve` takes them.
    request_rate: float = float("inf")
    burstiness: float = 1.0
    goodput: dict[str, float] = field(default_factory=dict)
    #: Also write each level as `vllm bench serve --save-result` JSON (lab.measure.export).
    save_result: bool = False

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> BenchPlan:
        b = cfg["bench"]
        return cls(
            levels=list(b["concurrency"]),
            input_len=b["input_len"],
            output_len=b["output_len"],
            num_requests=b["num_requests"],
            warmup=b["warmup"],
            duration_s=b["duration_s"],
            latency_runs=b["latency_runs"],
            latency_prompt=b["latency_prompt"],
            latency_max_tokens=b["latency_max_tokens"],
            timeout_s=float(cfg["api"]["timeout_s"]),
            kv_poll_s=b["kv_poll_s"],
            request_rate=float(b.get("request_rate", float("inf"))),
            burstiness=float(b.get("burstiness", 1.0)),
            goodput=dict(b.get("goodput") or {}),
            save_result=bool(b.get("save_result", False)),
        )

    def workload(self, concurrency: int, seed: int = 0) -> Workload:
        return Workload(
            input_len=self.input_len,
            output_len=self.output_len,
            concurrency=concurrency,
            num_requests=self.num_requests,
            duration_s=self.duration_s,
            warmup_requests=self.warmup,
            timeout_s=self.timeout_s,
            seed=seed,
            request_rate=self.request_rate,
            burstiness=self.burstiness,
        )

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def command(self, base_url: str) -> str:
        """What this plan stands for, as the seed's script and `vllm bench serve` per level."""
        limit = (f" --num-prompts {self.num_requests}" if self.num_requests else "") + (
            f"  # at most {self.duration_s:g} s per level" if self.duration_s else ""
        )
        return (
            f"python benchmark_vllm.py  # {self.latency_runs} sequential requests\n"
            f"vllm bench serve --base-url {base_url} --dataset-name random "
            f"--random-input-len {self.input_len} --random-output-len {self.output_len} "
            f"--ignore-eos --max-concurrency {{{','.join(map(str, self.levels))}}} "
            f"--num-warmups {self.warmup}{self._arrivals()}{limit}"
        )

    def _arrivals(self) -> str:
        out = ""
        if self.request_rate != float("inf"):
            out += f" --request-rate {self.request_rate:g} --burstiness {self.burstiness:g}"
        if self.goodput:
            out += " --goodput " + " ".join(f"{k}:{v:g}" for k, v in self.goodput.items())
        if self.save_result:
            out += " --save-result"
        return out


@dataclass
class BenchResult:
    """What a bench run measured; `values()` is what the logbook keeps."""

    plan: BenchPlan
    latency: dict[str, Any] | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": 0,
            "ok": 0,
            "failed": 0,
            "timeouts": 0,
            "prompt_tokens": 0,
            "output_tokens": 0,
        }
    )
    died_during: str | None = None

    def count(self, rec: RequestRecord) -> None:
        """Client-side totals over every request (warm-ups and the latency loop included),
        to hold against the server's /metrics counters."""
        c = self.client
        c["requests"] += 1
        if rec.ok:
            c["ok"] += 1
            c["prompt_tokens"] += rec.input_tokens or 0
            c["output_tokens"] += rec.output_tokens or 0
        else:
            c["failed"] += 1
            c["timeouts"] += rec.error == TIMEOUT_ERROR

    def values(self) -> dict[str, Any]:
        return {
            "plan": self.plan.public(),
            "latency": self.latency,
            "levels": self.levels,
            "levels_planned": list(self.plan.levels),
            "metrics": self.metrics,
            "client": self.client,
            "died_during": self.died_during,
        }


# -- the seed's latency loop -------------------------------------------------------------
def latency_summary(records: list[RequestRecord]) -> dict[str, Any]:
    """avg/min/max ms (the seed's keys) plus median/p90/p99, from successful requests."""
    ok = [(r, r.e2el_s) for r in records if r.ok and r.e2el_s is not None]
    ms = [e2el_s * 1000 for _, e2el_s in ok]
    pct = percentiles(ms)
    tps = [r.output_tokens / e2el_s for r, e2el_s in ok if r.output_tokens and e2el_s > 0]
    return {
        "runs": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "timeouts": sum(1 for r in records if r.error == TIMEOUT_ERROR),
        "avg_latency_ms": pct["mean"],
        "min_latency_ms": min(ms) if ms else None,
        "max_latency_ms": max(ms) if ms else None,
        "median_latency_ms": pct["median"],
        "p90_latency_ms": pct["p90"],
        "p99_latency_ms": pct["p99"],
        "mean_output_tokens": sum(r.output_tokens or 0 for r, _ in ok) / len(ok) if ok else None,
        "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
        # What the seed's script prints (json.dumps of these three), rounded.
        "seed_output": {
            k: None if v is None else round(v, 2)
            for k, v in (
                ("avg_latency_ms", pct["mean"]),
                ("min_latency_ms", min(ms) if ms else None),
                ("max_latency_ms", max(ms) if ms else None),
            )
        },
    }


def latency_loop(
    base_url: str,
    model: str,
    plan: BenchPlan,
    *,
    api_key: str | None = None,
    record: Record | None = None,
    advance: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """`plan.latency_runs` sequential chat requests of the seed's prompt (phase "latency")."""

    def on_record(rec: RequestRecord) -> None:
        if record:
            record("latency", rec)
        if advance:
            advance()

    recs = loadgen.sequential_chat(
        base_url,
        model,
        plan.latency_prompt,
        plan.latency_runs,
        plan.latency_max_tokens,
        api_key=api_key,
        on_record=on_record,
        timeout_s=plan.timeout_s,
    )
    return {
        **latency_summary(recs),
        "prompt": plan.latency_prompt,
        "max_tokens": plan.latency_max_tokens,
    }


# -- one streamed level --------------------------------------------------------------------
def run_level(
    base_url: str,
    model: str,
    plan: BenchPlan,
    concurrency: int,
    pool: list[int],
    *,
    phase: str = "sweep",
    level: str | None = None,
    seed: int = 0,
    api_key: str | None = None,
    record: Record | None = None,
    advance: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Warm-up, then the measured requests of one level; returns its summary row
    (lab.measure.stats.summarize: request/output/total-token throughput, TTFT/TPOT/ITL/E2EL stats)."""
    w = plan.workload(concurrency, seed)
    n = loadgen.prompts_needed(w) or w.warmup_requests + TIMED_LEVEL_PROMPTS
    plist = prompts.synthetic_prompts(pool, n, w.input_len, seed=seed)

    def on_record(rec: RequestRecord) -> None:
        if record:
            record(phase, rec)
        if advance and not rec.warmup:
            advance()

    before = _try_fetch(base_url, api_key)
    res = loadgen.run_level_sync(
        base_url,
        model,
        plist,
        w,
        api_key=api_key,
        on_record=on_record,
        level=level or f"c{concurrency}",
        goodput=plan.goodput or None,
    )
    after = _try_fetch(base_url, api_key) if before is not None else None
    return {
        "concurrency": concurrency,
        "level": level or f"c{concurrency}",
        **res.summary,
        "server": server_view(before, after),
    }


def kv_usage_summary(usage: Sampler) -> dict[str, Any]:
    """What the /metrics sampler saw during the sweep: the peaks of vllm:kv_cache_usage_perc
    (max over engines) and of the running/waiting request counts (summed over engines), the
    mean KV-cache usage, and how many scrapes worked or failed (a failed scrape is counted,
    never raised: the benchmark must not die because one sample was lost). A figure the
    server never reported is None."""
    summary, stats = usage.summary(), usage.stats()

    def agg(field: str, key: str) -> float | None:
        return summary.get(("metrics", "server", field), {}).get(key)

    started, stopped = stats["started_at"], stats["stopped_at"]
    return {
        "samples": stats["samples"],
        "scrape_failures": stats["errors"],
        "first_error": stats["first_error"],
        "duration_s": stopped - started if started is not None and stopped is not None else 0.0,
        "interval_s": stats["interval_s"],
        "peak_kv_cache_usage_perc": agg("kv_cache_usage_perc", "peak"),
        "mean_kv_cache_usage_perc": agg("kv_cache_usage_perc", "mean"),
        "peak_num_requests_running": agg("num_requests_running", "peak"),
        "peak_num_requests_waiting": agg("num_requests_waiting", "peak"),
    }


def server_view(before: metrics.Snapshot | None, after: metrics.Snapshot | None) -> dict | None:
    """The server's own means over one level, warm-ups included (/metrics deltas, ms):
    immune to the client's read timing, which on a busy machine can bunch streamed chunks."""
    if before is None or after is None:
        return None
    d = metrics.delta(before, after)
    ms = {
        k: None if d.get(f"mean_{k}_s") is None else d[f"mean_{k}_s"] * 1000
        for k in ("ttft", "tpot", "itl", "e2e", "queue_time")
    }
    return {f"mean_{k}_ms": v for k, v in ms.items()} | {
        "requests_finished": d.get("requests_finished"),
        "preemptions": d.get("preemptions"),
    }


def _try_fetch(
    base_url: str, api_key: str | None, errors: dict | None = None
) -> metrics.Snapshot | None:
    """A /metrics snapshot, or None (the reason goes to errors["error"] when given)."""
    try:
        return metrics.fetch(base_url, api_key=api_key)
    except ApiError as err:
        if errors is not None:
            errors["error"] = str(err)
        return None


def _level_seed(seed: int, concurrency: int) -> int:
    # A different seed per level: no prompt repeats across levels (no prefix-cache hits).
    return seed * 1000 + concurrency


# -- the whole bench ---------------------------------------------------------------------
def run_bench(
    base_url: str,
    model: str,
    plan: BenchPlan,
    *,
    api_key: str | None = None,
    record: Record | None = None,
    is_alive: Callable[[], bool] | None = None,
    start_phase: StartPhase | None = None,
    seed: int = 0,
) -> BenchResult:
    """The latency loop, then every level in order. Never raises for server faults:
    a dead server ends the run with `died_during` set (finished requests are kept, the
    unsent ones are recorded failed by lab.measure.loadgen)."""
    result = BenchResult(plan)

    def keep(phase: str, rec: RequestRecord) -> None:
        result.count(rec)
        if record:
            record(phase, rec)

    def dead(where: str, levels_left: list[int]) -> bool:
        if is_alive is None or is_alive():
            return False
        result.died_during = where
        for c in levels_left:  # the rest of the plan: recorded as failed, never sent
            for idx in range(plan.num_requests or 0):
                keep(
                    "sweep",
                    RequestRecord(
                        idx=idx,
                        level=f"c{c}",
                        concurrency=c,
                        warmup=False,
                        error=loadgen.NOT_SENT_ERROR,
                    ),
                )
        return True

    before = _try_fetch(base_url, api_key, result.metrics)
    result.latency = latency_loop(
        base_url,
        model,
        plan,
        api_key=api_key,
        record=keep,
        advance=start_phase("latency loop (sequential chat)", plan.latency_runs)
        if start_phase
        else None,
    )
    if dead("latency loop", plan.levels):
        return result
    pool = prompts.token_pool(base_url, model, api_key=api_key)
    usage = (
        Sampler(
            functools.partial(metrics.sample_usage, base_url, api_key=api_key),
            interval_s=plan.kv_poll_s,
            name="kv-usage",
        )
        if before is not None
        else None
    )
    if usage:
        usage.start()
    try:
        for i, c in enumerate(plan.levels):
            advance = start_phase(f"sweep c={c}", plan.num_requests) if start_phase else None
            row = run_level(
                base_url,
                model,
                plan,
                c,
                pool,
                seed=_level_seed(seed, c),
                api_key=api_key,
                record=keep,
                advance=advance,
            )
            result.levels.append(row)
            if dead(f"level c={c}", plan.levels[i + 1 :]):
                return result
    finally:
        if usage:
            usage.stop()
            result.metrics["kv"] = kv_usage_summary(usage)
    after = _try_fetch(base_url, api_key, result.metrics)
    if before is not None and after is not None:
        result.metrics["delta"] = metrics.delta(before, after)
    return result
