"""Day 4 `bench`: the seed's latency loop, then a serving benchmark over concurrency levels.

Plain functions over an OpenAI-compatible server, testable with the fake server:
- `latency_loop`: the seed's `benchmark_vllm.py` (N sequential chat requests; avg/min/max ms).
- `run_level`: one streamed level of `lab.measure.loadgen` (warm-up first, synthetic prompts of an
  exact token length, `ignore_eos`), every request handed to `record` as it finishes.
- `run_bench`: both, with /metrics scraped before and after (`lab.vllm.metrics.delta`) and the
  KV-cache usage polled during the sweep (`lab.vllm.metrics.KvUsagePoller`). A server that dies
  stops the run: what finished is kept, the rest is recorded failed, `died_during` says where.
- `criteria` and `interpret`: the step's verdict, and what the figures mean in plain words.

Definitions are `vllm bench serve`'s (DESIGN.md, "Benchmark definitions"; see lab.measure.loadgen
and lab.measure.stats). Command line equivalent of one level:
    vllm bench serve --dataset-name random --random-input-len 128 --random-output-len 128 \\
        --ignore-eos --max-concurrency 16 --num-prompts 64 --num-warmups 4
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from lab.measure import loadgen
from lab.vllm import metrics
from lab.measure import prompts
from lab.core.errors import ApiError
from lab.core.fmt import fixed, num
from lab.measure.loadgen import TIMEOUT_ERROR, RequestRecord, Workload
from lab.record.runner import Criterion, require
from lab.measure.stats import percentiles

#: Prompts drawn for a level limited only by time (they are cycled if it runs longer).
TIMED_LEVEL_PROMPTS = 1024

Record = Callable[[str, RequestRecord], None]   # (phase, record) -> None, as each finishes


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

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> "BenchPlan":
        b = cfg["bench"]
        return cls(levels=list(b["concurrency"]), input_len=b["input_len"],
                   output_len=b["output_len"], num_requests=b["num_requests"],
                   warmup=b["warmup"], duration_s=b["duration_s"],
                   latency_runs=b["latency_runs"], latency_prompt=b["latency_prompt"],
                   latency_max_tokens=b["latency_max_tokens"],
                   timeout_s=float(cfg["api"]["timeout_s"]), kv_poll_s=b["kv_poll_s"])

    def workload(self, concurrency: int, seed: int = 0) -> Workload:
        return Workload(input_len=self.input_len, output_len=self.output_len,
                        concurrency=concurrency, num_requests=self.num_requests,
                        duration_s=self.duration_s, warmup_requests=self.warmup,
                        timeout_s=self.timeout_s, seed=seed)

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def command(self, base_url: str) -> str:
        """What this plan stands for, as the seed's script and `vllm bench serve` per level."""
        limit = (f" --num-prompts {self.num_requests}" if self.num_requests else "") + (
            f"  # at most {self.duration_s:g} s per level" if self.duration_s else "")
        return (f"python benchmark_vllm.py  # {self.latency_runs} sequential requests\n"
                f"vllm bench serve --base-url {base_url} --dataset-name random "
                f"--random-input-len {self.input_len} --random-output-len {self.output_len} "
                f"--ignore-eos --max-concurrency {{{','.join(map(str, self.levels))}}} "
                f"--num-warmups {self.warmup}{limit}")


@dataclass
class BenchResult:
    """What a bench run measured; `values()` is what the logbook keeps."""
    plan: BenchPlan
    latency: dict[str, Any] | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=lambda: {
        "requests": 0, "ok": 0, "failed": 0, "timeouts": 0,
        "prompt_tokens": 0, "output_tokens": 0})
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
        return {"plan": self.plan.public(), "latency": self.latency, "levels": self.levels,
                "levels_planned": list(self.plan.levels), "metrics": self.metrics,
                "client": self.client, "died_during": self.died_during}


# -- the seed's latency loop -------------------------------------------------------------
def latency_summary(records: list[RequestRecord]) -> dict[str, Any]:
    """avg/min/max ms (the seed's keys) plus median/p90/p99, from successful requests."""
    ok = [r for r in records if r.ok and r.e2el_s is not None]
    ms = [r.e2el_s * 1000 for r in ok]
    pct = percentiles(ms)
    tps = [r.output_tokens / r.e2el_s for r in ok if r.output_tokens and r.e2el_s > 0]
    return {"runs": len(records), "ok": len(ok), "failed": len(records) - len(ok),
            "timeouts": sum(1 for r in records if r.error == TIMEOUT_ERROR),
            "avg_latency_ms": pct["mean"], "min_latency_ms": min(ms) if ms else None,
            "max_latency_ms": max(ms) if ms else None, "median_latency_ms": pct["median"],
            "p90_latency_ms": pct["p90"], "p99_latency_ms": pct["p99"],
            "mean_output_tokens": sum(r.output_tokens or 0 for r in ok) / len(ok) if ok else None,
            "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
            # What the seed's script prints (json.dumps of these three), rounded.
            "seed_output": {k: None if v is None else round(v, 2) for k, v in (
                ("avg_latency_ms", pct["mean"]), ("min_latency_ms", min(ms) if ms else None),
                ("max_latency_ms", max(ms) if ms else None))}}


def latency_loop(base_url: str, model: str, plan: BenchPlan, *, api_key: str | None = None,
                 record: Record | None = None, advance: Callable[[], None] | None = None
                 ) -> dict[str, Any]:
    """`plan.latency_runs` sequential chat requests of the seed's prompt (phase "latency")."""
    def on_record(rec: RequestRecord) -> None:
        if record:
            record("latency", rec)
        if advance:
            advance()

    recs = loadgen.sequential_chat(base_url, model, plan.latency_prompt, plan.latency_runs,
                                   plan.latency_max_tokens, api_key=api_key,
                                   on_record=on_record, timeout_s=plan.timeout_s)
    return {**latency_summary(recs), "prompt": plan.latency_prompt,
            "max_tokens": plan.latency_max_tokens}


# -- one streamed level --------------------------------------------------------------------
def run_level(base_url: str, model: str, plan: BenchPlan, concurrency: int, pool: list[int], *,
              phase: str = "sweep", level: str | None = None, seed: int = 0,
              api_key: str | None = None, record: Record | None = None,
              advance: Callable[[], None] | None = None) -> dict[str, Any]:
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
    res = loadgen.run_level_sync(base_url, model, plist, w, api_key=api_key,
                                 on_record=on_record, level=level or f"c{concurrency}")
    after = _try_fetch(base_url, api_key) if before is not None else None
    return {"concurrency": concurrency, "level": level or f"c{concurrency}", **res.summary,
            "server": server_view(before, after)}


def server_view(before: metrics.Snapshot | None, after: metrics.Snapshot | None) -> dict | None:
    """The server's own means over one level, warm-ups included (/metrics deltas, ms):
    immune to the client's read timing, which on a busy machine can bunch streamed chunks."""
    if before is None or after is None:
        return None
    d = metrics.delta(before, after)
    ms = {k: None if d.get(f"mean_{k}_s") is None else d[f"mean_{k}_s"] * 1000
          for k in ("ttft", "tpot", "itl", "e2e", "queue_time")}
    return {f"mean_{k}_ms": v for k, v in ms.items()} | {
        "requests_finished": d.get("requests_finished"), "preemptions": d.get("preemptions")}


def _try_fetch(base_url: str, api_key: str | None,
               errors: dict | None = None) -> metrics.Snapshot | None:
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
def run_bench(base_url: str, model: str, plan: BenchPlan, *, api_key: str | None = None,
              record: Record | None = None, is_alive: Callable[[], bool] | None = None,
              progress: Any = None, seed: int = 0) -> BenchResult:
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
                keep("sweep", RequestRecord(idx=idx, level=f"c{c}", concurrency=c, warmup=False,
                                            error=loadgen.NOT_SENT_ERROR))
        return True

    before = _try_fetch(base_url, api_key, result.metrics)
    task = _task(progress, "latency loop (sequential chat)", plan.latency_runs)
    result.latency = latency_loop(base_url, model, plan, api_key=api_key, record=keep,
                                  advance=_advancer(progress, task))
    if dead("latency loop", plan.levels):
        return result
    pool = prompts.token_pool(base_url, model, api_key=api_key)
    poller = (metrics.KvUsagePoller(base_url, interval_s=plan.kv_poll_s, api_key=api_key)
              if before is not None else None)
    if poller:
        poller.start()
    try:
        for i, c in enumerate(plan.levels):
            task = _task(progress, f"sweep c={c}", plan.num_requests)
            row = run_level(base_url, model, plan, c, pool, seed=_level_seed(seed, c),
                            api_key=api_key, record=keep, advance=_advancer(progress, task))
            result.levels.append(row)
            if dead(f"level c={c}", plan.levels[i + 1:]):
                return result
    finally:
        if poller:
            result.metrics["kv"] = poller.stop()
    after = _try_fetch(base_url, api_key, result.metrics)
    if before is not None and after is not None:
        result.metrics["delta"] = metrics.delta(before, after)
    return result


def _task(progress: Any, description: str, total: int | None) -> Any:
    return progress.add_task(description, total=total) if progress is not None else None


def _advancer(progress: Any, task: Any) -> Callable[[], None] | None:
    if progress is None:
        return None
    return lambda: progress.advance(task)


@contextlib.contextmanager
def progress_bar(console: Any) -> Iterator[Any]:
    """A rich progress bar (one line per phase) on the lab's console."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        yield progress


# -- verdict -------------------------------------------------------------------------------
def errors_and_timeouts(result: BenchResult) -> tuple[int, int]:
    """Failed requests that were not timeouts, and timeouts (warm-ups included)."""
    c = result.client
    return c["failed"] - c["timeouts"], c["timeouts"]


def criteria(result: BenchResult) -> list[Criterion]:
    """Passes when every level ran, every level measured a throughput, and no request
    failed. Timeouts are counted and reported, not judged (seed Q3: they mean the load is
    beyond what the server answers in time)."""
    lat = result.latency or {}
    ran, planned = len(result.levels), len(result.plan.levels)
    errors, timeouts = errors_and_timeouts(result)
    measured = [lvl for lvl in result.levels if lvl.get("completed")]
    return [
        require("latency_loop", f"延迟循环 {result.plan.latency_runs} 次请求均有回复",
                f"the latency loop's {result.plan.latency_runs} requests were answered",
                lat.get("ok", 0) + lat.get("timeouts", 0) == lat.get("runs", -1) and lat.get("ok", 0) > 0,
                f"{lat.get('ok', 0)}/{lat.get('runs', 0)}", reason="requests failed"),
        require("levels", "所有并发档位都已运行", "every concurrency level ran", ran == planned,
                f"{ran}/{planned}", reason=f"{planned - ran} level(s) not run"),
        require("throughput", "每个档位都测得吞吐量", "each level measured a throughput",
                bool(result.levels) and len(measured) == ran, f"{len(measured)}/{ran}",
                reason="a level had no successful request"),
        require("no_errors", "无失败请求（超时单独计数）", "no failed request (timeouts counted apart)",
                errors == 0, f"{errors} failed, {timeouts} timeouts",
                reason=f"{errors} request(s) failed"),
    ]


def timeout_fix(result: BenchResult, lang: str) -> str | None:
    """Seed Q3's advice when requests timed out (counted, not fatal)."""
    _, timeouts = errors_and_timeouts(result)
    if not timeouts:
        return None
    if lang == "zh":
        return (f"{timeouts} 个请求超时：降低并发数（--concurrency），或调大 api.timeout_s"
                "（INVOKE_LAB_API_TIMEOUT_S）；种子 Q3")
    return (f"{timeouts} request(s) timed out: lower the concurrency (--concurrency) or raise "
            "api.timeout_s (INVOKE_LAB_API_TIMEOUT_S); seed Q3")


def summary_line(result: BenchResult) -> str:
    """One line for 实际结果."""
    lat = result.latency or {}
    parts = []
    if lat.get("avg_latency_ms") is not None:
        parts.append(f"latency loop: avg {lat['avg_latency_ms']:,.0f} ms (min "
                     f"{lat['min_latency_ms']:,.0f}, max {lat['max_latency_ms']:,.0f}) over "
                     f"{lat['ok']}/{lat['runs']} requests")
    for lvl in result.levels:
        parts.append(f"c={lvl['concurrency']}: {fixed(lvl.get('output_throughput'))} out tok/s, "
                     f"{fixed(lvl.get('request_throughput'), 2)} req/s, TTFT p50 "
                     f"{fixed(lvl['ttft_ms']['median'])} ms ({lvl['completed']}/{lvl['requests']} ok)")
    errors, timeouts = errors_and_timeouts(result)
    parts.append(f"{errors} failed, {timeouts} timeouts")
    kv = result.metrics.get("kv") or {}
    if kv.get("peak_kv_cache_usage_perc") is not None:
        parts.append(f"peak KV-cache usage {kv['peak_kv_cache_usage_perc'] * 100:.2f} %")
    return "; ".join(parts)



# -- what the /metrics figures mean ---------------------------------------------------------
def interpret(bench_values: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's "关键指标解读" for one recorded bench: each figure the server counted
    during the benchmark, with a plain-language meaning (zh and en) drawn from its value."""
    m = bench_values.get("metrics") or {}
    d = m.get("delta") or {}
    kv = m.get("kv") or {}
    client = bench_values.get("client") or {}
    rows: list[dict[str, Any]] = []

    def add(key, series, value, unit, zh, en):
        label_zh, label_en = LABELS[key]
        rows.append({"key": key, "label_zh": label_zh, "label_en": label_en, "series": series,
                     "value": value, "unit": unit, "meaning_zh": zh, "meaning_en": en})

    n, sent = d.get("requests_finished"), client.get("requests")
    add("requests_finished", "Δ vllm:e2e_request_latency_seconds_count", n, "requests",
        f"基准测试期间服务端完成了 {fmt_int(n)} 个请求（客户端发出 {fmt_int(sent)} 个，含预热和延迟循环）",
        f"The server finished {fmt_int(n)} requests during the benchmark (the client sent {fmt_int(sent)}, "
        "warm-ups and the latency loop included)")
    p, cp = d.get("prompt_tokens"), client.get("prompt_tokens")
    add("prompt_tokens", "Δ vllm:prompt_tokens_total", p, "tokens",
        f"预填充（prefill）阶段处理了 {fmt_int(p)} 个输入 token（客户端按 usage 统计 {fmt_int(cp)}）",
        f"{fmt_int(p)} prompt tokens went through prefill (the client's usage total: {fmt_int(cp)})")
    g, cg = d.get("generation_tokens"), client.get("output_tokens")
    same = g is not None and cg is not None and round(g) == cg
    add("generation_tokens", "Δ vllm:generation_tokens_total", g, "tokens",
        f"解码阶段生成了 {fmt_int(g)} 个输出 token；客户端 usage 合计 {fmt_int(cg)}，"
        + ("两边一致：吞吐数字可信" if same else "两边不一致：有请求失败或别的客户端在用这台服务"),
        f"Decode generated {fmt_int(g)} output tokens; the client's usage total is {fmt_int(cg)}: "
        + ("they agree, so the throughput figures hold" if same else
           "they differ: requests failed or another client used this server"))
    pre = d.get("preemptions")
    add("preemptions", "Δ vllm:num_preemptions_total", pre, "preemptions",
        "没有请求被抢占：KV Cache 一直够用" if pre == 0 else
        f"{fmt_int(pre)} 次抢占：KV Cache 不够时请求被踢回队列、之后重算，延迟会变高；"
        "可降低并发或提高 --gpu-memory-utilization",
        "No request was preempted: the KV cache always had room" if pre == 0 else
        f"{fmt_int(pre)} preemptions: when the KV cache ran out, requests were evicted and recomputed "
        "later, which raises latency; lower the concurrency or raise --gpu-memory-utilization")
    peak = kv.get("peak_kv_cache_usage_perc")
    pct = None if peak is None else peak * 100
    add("peak_kv_cache_usage", "max vllm:kv_cache_usage_perc (polled)", pct, "%",
        _kv_zh(pct, kv), _kv_en(pct, kv))
    q, step = d.get("mean_queue_time_s"), d.get("mean_tpot_s")
    qms = None if q is None else q * 1000
    zh, en = _queue_meaning(q, step)
    add("mean_queue_time", "Δsum/Δcount vllm:request_queue_time_seconds", qms, "ms",
        f"请求平均在调度队列里等了 {fixed(qms, 2)} ms 才开始执行；{zh}",
        f"Requests waited {fixed(qms, 2)} ms on average in the scheduler's queue before running; {en}")
    for key, name, zh, en in (
            ("mean_ttft", "vllm:time_to_first_token_seconds",
             "服务端测的首 token 延迟（从请求到达算起，含排队和预填充）",
             "The server's time to first token (from arrival: queueing and prefill included)"),
            ("mean_tpot", "vllm:request_time_per_output_token_seconds",
             "服务端测的每个输出 token 的解码时间，即 TPOT",
             "The server's decode time per output token, i.e. TPOT")):
        v = d.get(key + "_s")
        ms = None if v is None else v * 1000
        add(key, f"Δsum/Δcount {name}", ms, "ms",
            f"{zh}，均值 {fixed(ms, 2)} ms；可与客户端表格里的同名数字对照（客户端还多了网络和流式传输）",
            f"{en}, mean {fixed(ms, 2)} ms; compare with the client's table above (the client adds "
            "the network and streaming)")
    return rows


def _queue_meaning(queue_s: float | None, step_s: float | None) -> tuple[str, str]:
    """Queue time against one decode step (the mean TPOT): shorter means a request simply
    joined the batch at the next step; several steps mean it waited for room."""
    if queue_s is None or not step_s:
        return "没有测到", "not measured"
    steps = queue_s / step_s
    if steps < 1:
        return (f"不到一个解码步（TPOT {step_s * 1000:.2f} ms）：下一步就进了批次，没有真正排队",
                f"less than one decode step (TPOT {step_s * 1000:.2f} ms): requests joined the "
                "batch at the next step, no real queue")
    return (f"约 {steps:.0f} 个解码步：请求在等空位，负载超过了引擎一次能跑的量",
            f"about {steps:.0f} decode steps: requests waited for room; the load exceeded what "
            "the engine runs at once")


LABELS = {
    "requests_finished": ("完成的请求数", "requests finished"),
    "prompt_tokens": ("输入（prompt）token 数", "prompt tokens"),
    "generation_tokens": ("生成的输出 token 数", "output tokens generated"),
    "preemptions": ("抢占次数", "preemptions"),
    "peak_kv_cache_usage": ("KV Cache 使用率峰值", "peak KV-cache usage"),
    "mean_queue_time": ("平均排队时间", "mean queue time"),
    "mean_ttft": ("TTFT 均值（服务端）", "mean TTFT (server)"),
    "mean_tpot": ("TPOT 均值（服务端）", "mean TPOT (server)"),
}


def _kv_zh(pct: float | None, kv: dict) -> str:
    if pct is None:
        return "没有采到 KV Cache 使用率（/metrics 读取失败）"
    level = ("远未用满，还能承受更高并发" if pct < 50 else
             "较满，再加并发就接近上限" if pct < 90 else "接近用满，继续加压会出现抢占")
    return f"压测中 KV Cache 最高用了 {pct:.2f}%（每 {kv.get('interval_s', 0):g} s 采样，共 {kv.get('samples')} 次）：{level}"


def _kv_en(pct: float | None, kv: dict) -> str:
    if pct is None:
        return "No KV-cache usage was sampled (/metrics could not be read)"
    level = ("far from full: room for more concurrency" if pct < 50 else
             "fairly full: more concurrency nears the limit" if pct < 90 else
             "nearly full: more load will cause preemptions")
    return (f"The KV cache peaked at {pct:.2f} % during the load (sampled every "
            f"{kv.get('interval_s', 0):g} s, {kv.get('samples')} samples): {level}")


def fmt_int(value: Any) -> str:
    """A count: 4,608 (rounded); None -> "n/a"."""
    return num(None if value is None else round(value))
