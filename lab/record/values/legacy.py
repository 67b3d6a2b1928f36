"""Schema v1 step values (untyped JSON dicts) as the typed values of lab.record.values: the one
place that knows the old shapes and spellings. Used by the logbook's migration to v2 only.

Old spellings mapped here (and nowhere else):
- latency loop: `avg_ms`/`min_ms`/`max_ms`/`n` (some readers' short names) -> `avg_latency_ms`,
  `min_latency_ms`, `max_latency_ms`, `runs`; `mean_tokens_per_s` -> `mean_output_tok_s`;
- level summaries: `output_throughput` -> `output_tok_s`, `request_throughput` ->
  `requests_per_s`, `total_token_throughput` -> `total_tok_s`; a level either flat or under
  `summary`;
- monitor `load.output_throughput`/`request_throughput` -> `output_tok_s`/`requests_per_s`;
  `workload.input_len`/`output_len` -> `input_tokens`/`output_tokens`;
- bench `plan.input_len`/`output_len`/`warmup` -> `input_tokens`/`output_tokens`/`warmup_requests`;
- `metrics.kv.peak_kv_cache_usage_perc` (a 0-1 fraction) -> `peak_kv_usage_frac`;
- api-test `tokens_per_s` -> `output_tok_s`; gpus `nvml` -> `nvml_error`;
- install's flat versions -> `versions`; offline batches `tokens`/`tok_s` ->
  `output_tokens`/`output_tok_s`;
- the Day 4 metrics step's `interpretation` rows (text made at record time) -> the figures
  they were made from (`delta`, `kv`); the text is now made when rendering (lab.explain).

Figures that v1 stored but that are derived (speedup, cost, ratios, the seed table, peak GiB,
latency ms, throughput_rises, seed_output, blocks × block size, used of budget) are dropped:
the types compute them. Keys not listed are left out of the typed value; the original JSON
is kept in `steps.legacy_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.measure.nvml import GpuInfo, GpuProcess
from lab.record.values.common import (
    ClientTotals,
    KvUsage,
    LatencyStats,
    LevelSummary,
    MetricsDelta,
    ServerMeans,
    StepValues,
    VllmVersions,
)
from lab.record.values.day3 import (
    ApiTestValues,
    GpusValues,
    InstallValues,
    LoadPlan,
    LoadSummary,
    MetricsValues,
    MonitorValues,
    OldNameReading,
    SamplerStats,
    SampleSummary,
    SeriesReading,
    ServeValues,
    StreamReply,
    ToolsValues,
    TpWorker,
)
from lab.record.values.day4 import (
    BalanceDevice,
    BalanceValues,
    BenchMetrics,
    BenchValues,
    CompareSide,
    CompareTpValues,
    CompareValues,
    CompareWorkload,
    LatencyLoop,
    SweepPlan,
    TpSide,
)
from lab.record.values.day5 import (
    BatchRow,
    EngineInfo,
    GpuMemory,
    KvCacheValues,
    MemoryValues,
    OfflineMemory,
    OfflineRequest,
    OfflineRun,
    OfflineValues,
    ParamReading,
    ParamsValues,
)
from lab.vllm.logparse import StartupFacts

Json = dict[str, Any]


def _d(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _pick(data: Json, *names: str) -> Any:
    """The first of `names` that `data` holds (not None): one old spelling after another."""
    return next((data[n] for n in names if data.get(n) is not None), None)


def _only(cls: type, data: Json, **renames: str) -> dict[str, Any]:
    """The keys of `data` that `cls` declares (after renaming old -> new)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        key = renames.get(key, key)
        if key in names:
            out[key] = value
    return out


def gpu_info(g: Json) -> GpuInfo:
    g = dict(g)
    procs = [GpuProcess(**_only(GpuProcess, p)) for p in g.get("processes") or []]
    fields = _only(GpuInfo, g)
    fields["processes"] = procs
    for name in (
        "uuid",
        "memory_total_mib",
        "memory_used_mib",
        "memory_free_mib",
        "utilization_gpu_pct",
        "utilization_memory_pct",
        "driver_version",
    ):
        fields.setdefault(name, None)
    fields.setdefault("name", f"GPU {g.get('index')}")
    return GpuInfo(**fields)


def versions(v: Json) -> VllmVersions | None:
    fields = _only(VllmVersions, v)
    return VllmVersions(**fields) if fields else None


def latency_stats(v: Any) -> LatencyStats:
    return LatencyStats(**_only(LatencyStats, _d(v)))


def server_means(v: Any) -> ServerMeans | None:
    return ServerMeans(**_only(ServerMeans, v)) if isinstance(v, dict) else None


def level(lv: Json) -> LevelSummary:
    """A level recorded flat ({concurrency, level, **summary}) or under `summary`."""
    s = {**lv, **_d(lv.get("summary"))}
    return LevelSummary(
        concurrency=s.get("concurrency"),
        level=s.get("level"),
        requests=s.get("requests"),
        completed=s.get("completed"),
        failed=s.get("failed"),
        timeouts=s.get("timeouts"),
        wall_s=s.get("wall_s"),
        total_input_tokens=s.get("total_input_tokens"),
        total_output_tokens=s.get("total_output_tokens"),
        requests_per_s=_pick(s, "requests_per_s", "request_throughput"),
        output_tok_s=_pick(s, "output_tok_s", "output_throughput"),
        total_tok_s=_pick(s, "total_tok_s", "total_token_throughput"),
        ttft_ms=latency_stats(s.get("ttft_ms")),
        tpot_ms=latency_stats(s.get("tpot_ms")),
        itl_ms=latency_stats(s.get("itl_ms")),
        e2el_ms=latency_stats(s.get("e2el_ms")),
        queue_ms=latency_stats(s.get("queue_ms")),
        server=server_means(s.get("server")),
    )


def delta(v: Any) -> MetricsDelta | None:
    if not isinstance(v, dict) or not v:
        return None
    return MetricsDelta(**_only(MetricsDelta, v))


def kv(v: Any) -> KvUsage | None:
    if not isinstance(v, dict) or not v:
        return None
    return KvUsage(
        **_only(
            KvUsage,
            v,
            last_error="scrape_error",
            first_error="scrape_error",
            peak_kv_cache_usage_perc="peak_kv_usage_frac",
            mean_kv_cache_usage_perc="mean_kv_usage_frac",
            peak_num_requests_running="peak_requests_running",
            peak_num_requests_waiting="peak_requests_waiting",
        )
    )


def client(v: Any) -> ClientTotals | None:
    if not isinstance(v, dict) or not v:
        return None
    return ClientTotals(**_only(ClientTotals, v))


def plan(p: Any) -> SweepPlan | None:
    if not isinstance(p, dict) or "levels" not in p:
        return None
    return SweepPlan(
        **_only(
            SweepPlan,
            p,
            input_len="input_tokens",
            output_len="output_tokens",
            warmup="warmup_requests",
        )
    )


# -- one function per step key -------------------------------------------------------------
def _gpus(v: Json, run: Json) -> GpusValues:
    return GpusValues(
        gpus=[gpu_info(g) for g in v.get("gpus") or []],
        free_gpus=v.get("free_gpus"),
        driver=v.get("driver"),
        nvml_error=v.get("nvml"),
    )


def _install(v: Json, run: Json) -> InstallValues:
    return InstallValues(
        python=v.get("python"),
        managed=v.get("managed"),
        install_s=v.get("install_s"),
        install_log=v.get("install_log"),
        versions=versions(v),
    )


def _tools(v: Json, run: Json) -> ToolsValues:
    return ToolsValues(versions=dict(_d(v.get("versions"))), paths=dict(_d(v.get("paths"))))


def serve(v: Json, run: Json | None = None) -> ServeValues:
    fields = _only(ServeValues, v)
    fields["tp_workers"] = [TpWorker(**_only(TpWorker, w)) for w in v.get("tp_workers") or []]
    fields["tp"] = int(v.get("tp") or 1)
    return ServeValues(**fields)


def _monitor(v: Json, run: Json) -> MonitorValues:
    load, work = _d(v.get("load")), v.get("workload")
    return MonitorValues(
        source=v.get("source"),
        summary=[SampleSummary(**_only(SampleSummary, r)) for r in v.get("summary") or []],
        sampler=SamplerStats(**_only(SamplerStats, v["sampler"])) if v.get("sampler") else None,
        load=LoadSummary(
            completed=load.get("completed"),
            failed=load.get("failed"),
            output_tok_s=_pick(load, "output_tok_s", "output_throughput"),
            requests_per_s=_pick(load, "requests_per_s", "request_throughput"),
        )
        if load
        else None,
        workload=LoadPlan(
            **_only(LoadPlan, work, input_len="input_tokens", output_len="output_tokens")
        )
        if isinstance(work, dict)
        else None,
        peak_mem_used_pct=v.get("peak_mem_used_pct"),
        peak_util_pct=v.get("peak_util_pct"),
        mean_util_pct=v.get("mean_util_pct"),
        peak_rss_mib=v.get("peak_rss_mib"),
        peak_cpu_pct=v.get("peak_cpu_pct"),
    )


def _api_test(v: Json, run: Json) -> ApiTestValues:
    stream = v.get("stream")
    return ApiTestValues(
        prompt=v.get("prompt"),
        max_tokens=v.get("max_tokens"),
        reply=v.get("reply"),
        latency_s=v.get("latency_s"),
        prompt_tokens=v.get("prompt_tokens"),
        completion_tokens=v.get("completion_tokens"),
        output_tok_s=_pick(v, "output_tok_s", "tokens_per_s"),
        finish_reason=v.get("finish_reason"),
        models=[str(m) for m in v.get("models") or []],
        stream=StreamReply(**_only(StreamReply, stream)) if isinstance(stream, dict) else None,
    )


#: The Day 4 metrics step's v1 interpretation rows: key -> (delta or kv field, scale to it).
_INTERPRETED = {
    "requests_finished": ("requests_finished", 1.0),
    "prompt_tokens": ("prompt_tokens", 1.0),
    "generation_tokens": ("generation_tokens", 1.0),
    "preemptions": ("preemptions", 1.0),
    "mean_queue_time": ("mean_queue_time_s", 1e-3),
    "mean_ttft": ("mean_ttft_s", 1e-3),
    "mean_tpot": ("mean_tpot_s", 1e-3),
}


def _metrics(v: Json, run: Json) -> MetricsValues:
    d, k = delta(v.get("delta")), kv(v.get("kv"))
    rows = [r for r in v.get("interpretation") or [] if isinstance(r, dict)]
    if rows and d is None:  # v1 kept only the text rows: recover their figures
        d = MetricsDelta()
        for r in rows:
            name, scale = _INTERPRETED.get(r.get("key") or "", (None, 1.0))
            if name and r.get("value") is not None:
                setattr(d, name, r["value"] * scale)
    peak = next((r.get("value") for r in rows if r.get("key") == "peak_kv_cache_usage"), None)
    if k is None and peak is not None:
        k = KvUsage(peak_kv_usage_frac=peak / 100)
    return MetricsValues(
        series=[
            SeriesReading(
                name=r["name"],
                present=bool(r.get("present")),
                value=r.get("value"),
                count=r.get("count"),
                found_as=r.get("found_as"),
            )
            for r in v.get("series") or []
            if r.get("name")
        ],
        old_names=[
            OldNameReading(
                old_name=r["old_name"],
                old_present=r.get("old_present"),
                current_present=list(r.get("current_present") or []),
            )
            for r in v.get("old_names") or []
            if r.get("old_name")
        ],
        vllm_series=v.get("vllm_series"),
        bench_step_id=v.get("bench_step_id"),
        bench_run_id=v.get("bench_run_id"),
        delta=d,
        kv=k,
        client=client(v.get("client")),
    )


def _balance(v: Json, run: Json) -> BalanceValues:
    devices = [
        BalanceDevice(device=str(d.get("device")), used_mib=d.get("used_mib"), pid=d.get("pid"))
        for d in v.get("devices") or []
    ]
    return BalanceValues(
        source=v.get("source"),
        devices=devices,
        threshold_pct=v.get("threshold_pct"),
        tp=int(v.get("tp") or 1),
        n=int(v.get("n") or len(devices)),
        max_mib=v.get("max_mib"),
        min_mib=v.get("min_mib"),
        spread_pct=v.get("spread_pct"),
    )


def latency_loop(lat: Any) -> LatencyLoop | None:
    if not isinstance(lat, dict) or not lat:
        return None
    return LatencyLoop(
        runs=int(_pick(lat, "runs", "n") or 0),
        ok=int(lat.get("ok") or 0),
        failed=int(lat.get("failed") or 0),
        timeouts=int(lat.get("timeouts") or 0),
        avg_latency_ms=_pick(lat, "avg_latency_ms", "avg_ms"),
        min_latency_ms=_pick(lat, "min_latency_ms", "min_ms"),
        max_latency_ms=_pick(lat, "max_latency_ms", "max_ms"),
        median_latency_ms=lat.get("median_latency_ms"),
        p90_latency_ms=lat.get("p90_latency_ms"),
        p99_latency_ms=lat.get("p99_latency_ms"),
        mean_output_tokens=lat.get("mean_output_tokens"),
        mean_output_tok_s=_pick(lat, "mean_output_tok_s", "mean_tokens_per_s"),
        prompt=lat.get("prompt"),
        max_tokens=lat.get("max_tokens"),
    )


def _bench(v: Json, run: Json) -> BenchValues:
    m = _d(v.get("metrics"))
    return BenchValues(
        plan=plan(v.get("plan")),
        latency=latency_loop(v.get("latency")),
        levels=[level(lv) for lv in v.get("levels") or [] if isinstance(lv, dict)],
        metrics=BenchMetrics(
            delta=delta(m.get("delta") or v.get("metrics_delta")),
            kv=kv(m.get("kv")),
            error=m.get("error"),
        ),
        client=client(v.get("client")),
        died_during=v.get("died_during"),
        model=v.get("model"),
        tp=int(v.get("tp") or 1),
        profile=v.get("profile"),
    )


def compare_side(s: Any) -> CompareSide | None:
    if not isinstance(s, dict) or not s:
        return None
    fields = _only(CompareSide, s, num_gpus="gpus")
    if fields.get("peak_mem_mib") is None and s.get("peak_mem_gib") is not None:
        fields["peak_mem_mib"] = s["peak_mem_gib"] * 1024
    if fields.get("latency_s") is None and s.get("latency_ms") is not None:
        fields["latency_s"] = s["latency_ms"] / 1000
    return CompareSide(**fields)


def _compare(v: Json, run: Json) -> CompareValues:
    work, startup = v.get("workload"), v.get("startup")
    profile = v.get("profile") or run.get("profile")
    return CompareValues(
        profile=profile,
        on_gpu=bool(v.get("on_gpu", profile not in ("cpu", None))),
        source=v.get("source"),
        model=v.get("model"),
        dummy_weights=v.get("dummy_weights"),
        hf=compare_side(v.get("hf")),
        vllm=compare_side(v.get("vllm")),
        workload=CompareWorkload(**_only(CompareWorkload, work))
        if isinstance(work, dict)
        else None,
        versions=versions(_d(v.get("versions"))),
        startup=StartupFacts(**_only(StartupFacts, startup))
        if isinstance(startup, dict) and startup
        else None,
        work_dir=v.get("work_dir"),
        inputs_identical=v.get("inputs_identical"),
    )


def _compare_tp(v: Json, run: Json) -> CompareTpValues:
    sides = [
        TpSide(
            tp=int(s["tp"]),
            summary=level(_d(s.get("summary"))),
            ready_s=s.get("ready_s"),
            kv_cache_tokens=s.get("kv_cache_tokens"),
            argv=list(s.get("argv") or []),
        )
        for s in v.get("sides") or []
        if isinstance(s, dict) and s.get("tp")
    ]
    return CompareTpValues(
        concurrency=v.get("concurrency"),
        plan=plan(v.get("plan")),
        sides=sides,
        profile=v.get("profile") or run.get("profile"),
    )


def gpu_memory(gpus: Any) -> list[GpuMemory]:
    return [GpuMemory(**_only(GpuMemory, g)) for g in gpus or [] if isinstance(g, dict)]


def _offline(v: Json, run: Json) -> OfflineValues:
    ex, mem, startup = _d(v.get("example")), _d(v.get("memory")), _d(v.get("startup"))
    return OfflineValues(
        profile=v.get("profile") or run.get("profile"),
        model=v.get("model"),
        model_path=v.get("model_path"),
        load_format=v.get("load_format"),
        model_built=v.get("model_built"),
        model_build_s=v.get("model_build_s"),
        vllm_version=v.get("vllm_version"),
        load_s=v.get("load_s"),
        warmup_s=v.get("warmup_s"),
        engine=EngineInfo(**_only(EngineInfo, _d(v.get("engine")))),
        startup=StartupFacts(**_only(StartupFacts, startup)),
        memory=OfflineMemory(
            peak_tree_rss_mib=mem.get("peak_tree_rss_mib"),
            samples=mem.get("samples"),
            ru_maxrss_self_mib=mem.get("ru_maxrss_self_mib"),
            gpus=gpu_memory(mem.get("gpus")),
        ),
        example=OfflineRun(
            **{
                **_only(OfflineRun, ex),
                "requests": [
                    OfflineRequest(**_only(OfflineRequest, r)) for r in ex.get("requests") or []
                ],
            }
        ),
        batches=[
            BatchRow(
                batch_size=int(b["batch_size"]),
                n=b.get("n"),
                time_s=b.get("time_s"),
                output_tokens=_pick(b, "output_tokens", "tokens"),
                output_tok_s=_pick(b, "output_tok_s", "tok_s"),
                prompt_tokens=b.get("prompt_tokens"),
                ok=bool(b.get("ok")),
            )
            for b in v.get("batches") or []
            if isinstance(b, dict) and b.get("batch_size")
        ],
        max_tokens=v.get("max_tokens"),
        batch_sizes=list(v.get("batch_sizes") or []),
        llm_call=v.get("llm_call"),
        work_dir=v.get("work_dir"),
        log_path=v.get("log_path"),
    )


def _kv_cache(v: Json, run: Json) -> KvCacheValues:
    return KvCacheValues(**_only(KvCacheValues, v))


def _memory(v: Json, run: Json) -> MemoryValues:
    return MemoryValues(
        peak_tree_rss_mib=v.get("peak_tree_rss_mib"),
        gpus=gpu_memory(v.get("gpus")),
        cpu_kv_cache_gib=v.get("cpu_kv_cache_gib"),
        samples=v.get("samples"),
    )


def _params(v: Json, run: Json) -> ParamsValues:
    rows = [
        ParamReading(
            name=r["name"],
            value=r.get("value"),
            present=bool(r.get("present")),
            in_this_vllm=bool(r.get("in_this_vllm", True)),
        )
        for r in v.get("rows") or []
        if isinstance(r, dict) and r.get("name")
    ]
    return ParamsValues(
        rows=rows,
        on_gpu=run.get("profile") in ("gpu", "rehearsal"),
        llm_call=v.get("llm_call"),
        server_command=v.get("server_command"),
        vllm_version=v.get("vllm_version"),
    )


MAPPERS: dict[str, Callable[[Json, Json], StepValues]] = {
    "gpus": _gpus,
    "install": _install,
    "tools": _tools,
    "serve": serve,
    "monitor": _monitor,
    "api-test": _api_test,
    "metrics": _metrics,
    "balance": _balance,
    "bench": _bench,
    "compare": _compare,
    "compare-tp": _compare_tp,
    "offline": _offline,
    "kv-cache": _kv_cache,
    "memory": _memory,
    "params": _params,
}


def from_v1(key: str, values: Any, run: Json | None = None) -> StepValues | None:
    """The typed value of a v1 step's values; None when nothing was recorded (an empty dict,
    e.g. a step that failed before measuring). Raises on a shape it cannot read."""
    if not isinstance(values, dict) or not values:
        return None
    mapper = MAPPERS.get(key)
    if mapper is None:
        raise ValueError(f"no typed values for step key {key!r}")
    return mapper(values, run or {})
