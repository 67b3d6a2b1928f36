"""The typed step values and their codec: every registered type goes to JSON and back
unchanged; decoding is strict (an unknown field, a missing one or a wrong kind is an error,
never a quietly different figure); derived figures are properties, not stored."""
import dataclasses
import json
import typing

import pytest

from lab.measure.nvml import GpuInfo, GpuProcess
from lab.record import codec
from lab.record.values import (
    BY_NAME,
    COST_SAMPLES,
    TYPES,
    BatchRow,
    BenchMetrics,
    BenchValues,
    ClientTotals,
    CompareSide,
    CompareTpValues,
    CompareValues,
    GpusValues,
    KvCacheValues,
    KvUsage,
    LatencyLoop,
    LatencyStats,
    LevelSummary,
    MemoryValues,
    MetricsDelta,
    MetricsValues,
    OfflineValues,
    ParamReading,
    ParamsValues,
    ServerMeans,
    ServeValues,
    StepValues,
    TpSide,
    TpWorker,
    cost_side,
)
from lab.record.values.day5 import GpuMemory
from lab.vllm.logparse import StartupFacts


def roundtrip(value):
    data = json.loads(json.dumps(codec.encode(value)))
    return codec.decode(type(value), data)


def test_every_step_key_has_one_registered_type():
    assert set(TYPES) == {"gpus", "install", "tools", "download", "serve", "monitor", "api-test", "metrics",
                          "balance", "bench", "compare", "compare-tp", "offline", "kv-cache",
                          "memory", "params",
                          "experiment-arm", "experiment",
                          # Day 6 (issue 12)
                          "nodes", "node", "serve-nodes", "node-share", "compare-nodes"}
    for key, cls in TYPES.items():
        assert issubclass(cls, StepValues) and key == cls.KEY and cls.VERSION >= 1
        assert BY_NAME[cls.__name__] is cls
        cls()  # every field has a default: a step that failed early records what it had


def _field_names(cls) -> set[str]:
    names = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        for arg in typing.get_args(typing.get_type_hints(cls)[f.name]) or \
                (typing.get_type_hints(cls)[f.name],):
            if dataclasses.is_dataclass(arg) and arg is not cls:
                names |= _field_names(arg)
    return names


def test_figures_carry_their_unit_in_the_name():
    """The issue's spellings: ready_s, model_load_gib, kv_cache_tokens, output_tok_s,
    peak_rss_mib, avg_latency_ms; and none of the old unit-less names is left."""
    every = set().union(*(_field_names(cls) for cls in TYPES.values()))
    assert {"ready_s", "model_load_gib", "kv_cache_tokens", "output_tok_s", "peak_rss_mib",
            "avg_latency_ms", "requests_per_s", "peak_kv_usage_frac"} <= every
    assert not every & {"output_throughput", "request_throughput", "tokens_per_s", "tok_s",
                        "avg_ms", "peak_kv_cache_usage_perc", "input_len"}


def test_a_full_bench_value_goes_to_json_and_back_unchanged():
    level = LevelSummary(concurrency=4, level="c4", requests=8, completed=8, failed=0,
                         wall_s=1.5, output_tok_s=300.0, ttft_ms=LatencyStats(1.0, 2.0, 3.0, 4.0),
                         server=ServerMeans(mean_tpot_ms=4.0, requests_finished=9.0))
    value = BenchValues(
        latency=LatencyLoop(runs=3, ok=3, avg_latency_ms=1192.45),
        levels=[level],
        metrics=BenchMetrics(delta=MetricsDelta(requests_finished=21.0,
                                                requests_by_reason={"length": 21.0}),
                             kv=KvUsage(samples=6, peak_kv_usage_frac=0.0)),
        client=ClientTotals(requests=21, ok=21, failed=0), tp=2, profile="cpu")
    assert roundtrip(value) == value


def test_reused_types_round_trip_too():
    gpus = GpusValues(gpus=[GpuInfo(0, "H100", "GPU-0", 81559.0, 1.0, 81000.0, 0, 0, "550",
                                    processes=[GpuProcess(42, "python", 1024.0)],
                                    max_memory_clock_mhz=2619, memory_bus_width_bits=5120)],
                      free_gpus=1)
    assert roundtrip(gpus) == gpus
    assert roundtrip(gpus).gpus[0].peak_memory_bandwidth_gbps == pytest.approx(3352.32)
    offline = OfflineValues(startup=StartupFacts(kv_cache_tokens=1048576, kv_cache_device="CPU"),
                            batches=[BatchRow(1, output_tok_s=10.0, ok=True)])
    offline.engine.params = {"model": "m", "max_num_seqs": 256, "gpu_memory_utilization": 0.92,
                             "enable_prefix_caching": True, "swap": None}
    back = roundtrip(offline)
    assert back == offline
    # a whole number stays a whole number, a switch a switch
    assert back.engine.params["max_num_seqs"] == 256 and type(back.engine.params["max_num_seqs"]) is int
    assert back.engine.params["enable_prefix_caching"] is True


def test_decoding_is_strict():
    with pytest.raises(codec.CodecError, match=r"unknown field.*avg_ms"):
        codec.decode(LatencyLoop, {"avg_ms": 1.0})
    with pytest.raises(codec.CodecError, match="missing field batch_size"):
        codec.decode(BatchRow, {"time_s": 1.0})
    with pytest.raises(codec.CodecError, match="expected a number"):
        codec.decode(ServeValues, {"ready_s": "fast"})
    with pytest.raises(codec.CodecError, match="expected a whole number"):
        codec.decode(ServeValues, {"tp": 1.5})
    with pytest.raises(codec.CodecError, match="expected a number"):
        codec.decode(ServeValues, {"ready_s": True})      # a bool is not a figure
    with pytest.raises(codec.CodecError, match=r"levels\[0\].ttft_ms.median"):
        codec.decode(BenchValues, {"levels": [{"ttft_ms": {"median": "x"}}]})
    with pytest.raises(codec.CodecError, match="summary: expected an object"):
        codec.decode(TpSide, {"tp": 2, "summary": None})
    assert codec.decode(ServeValues, {"tp": 2.0}).tp == 2   # 2.0 is a whole number


def test_encode_refuses_what_json_cannot_hold():
    with pytest.raises(codec.CodecError):
        codec.encode(ServeValues(model=object()))  # type: ignore[arg-type]


def test_derived_figures_are_computed_not_stored():
    hf = CompareSide(output_tok_s=100.0, samples_per_min=50.0, latency_s=2.0, devices=8,
                     peak_mem_mib=2048.0)
    vllm = CompareSide(output_tok_s=400.0, samples_per_min=500.0, latency_s=0.5, devices=1)
    v = CompareValues(on_gpu=True, hf=hf, vllm=vllm)
    assert "speedup" not in codec.encode(v) and "cost" not in codec.encode(v)
    assert (v.speedup.throughput_x, v.speedup.latency_x) == (4.0, 4.0)
    assert v.cost.samples == COST_SAMPLES == 10_000
    assert (v.cost.hf.device_minutes, v.cost.vllm.device_minutes, v.cost.saving_x) == (1600.0, 20.0, 80.0)
    assert hf.peak_mem_gib == 2.0 and hf.latency_ms == 2000.0 and CompareSide().peak_mem_gib is None
    assert cost_side(None, 2).minutes is None and cost_side(100.0, None).device_minutes is None
    assert LatencyLoop(avg_latency_ms=1192.4579, min_latency_ms=876.006).seed_output == \
        {"avg_latency_ms": 1192.46, "min_latency_ms": 876.01, "max_latency_ms": None}
    assert KvCacheValues(num_gpu_blocks=8192, block_size=128).blocks_x_block_size == 1_048_576
    assert MemoryValues(gpus=[GpuMemory(0, 72_000.0, 81_559.0, 73_403.1)]).used_of_budget_pct == 98.1
    assert MemoryValues().used_of_budget_pct is None


def test_tp_ratios_need_both_sides():
    def side(tp, thr):
        return TpSide(tp, LevelSummary(output_tok_s=thr, tpot_ms=LatencyStats(median=thr / 10)))
    v = CompareTpValues(sides=[side(2, 50.0), side(1, 100.0)])
    assert v.ratios.output_tok_s == 0.5 and v.ratios.tpot_median == 0.5
    assert v.ratios.server_tpot is None                   # no /metrics means: not measured
    assert CompareTpValues(sides=[side(2, 50.0)]).ratios is None


def test_level_summary_reads_the_statistics_module_names_once():
    summary = {"requests": 8, "completed": 8, "failed": 0, "timeouts": 0, "wall_s": 2.0,
               "total_input_tokens": 256, "total_output_tokens": 256, "request_throughput": 4.0,
               "output_throughput": 128.0, "total_token_throughput": 256.0,
               "ttft_ms": {"mean": 1.0, "median": 1.0, "p90": 1.0, "p99": 1.0},
               "server": {"mean_ttft_ms": 14.9, "requests_finished": 9.0}}
    lv = LevelSummary.from_summary(summary, concurrency=1, level="c1")
    assert (lv.requests_per_s, lv.output_tok_s, lv.total_tok_s) == (4.0, 128.0, 256.0)
    assert lv.server == ServerMeans(mean_ttft_ms=14.9, requests_finished=9.0)
    assert lv.tpot_ms == LatencyStats()                    # not in the summary: not measured


def test_metrics_and_bench_give_the_same_figures_to_explain():
    delta = MetricsDelta(generation_tokens=640.0, preemptions=0.0)
    kv = KvUsage(peak_kv_usage_frac=0.2, samples=4, interval_s=0.5)
    client = ClientTotals(requests=10, output_tokens=640)
    bench = BenchValues(metrics=BenchMetrics(delta=delta, kv=kv), client=client)
    metrics = MetricsValues(delta=delta, kv=kv, client=client, bench_step_id=1)
    assert bench.figures() == metrics.figures()
    assert bench.figures().peak_kv_usage_frac == 0.2 and bench.figures().client_output_tokens == 640
    assert BenchValues().figures().generation_tokens is None


def test_params_and_serve_defaults_say_not_measured():
    assert ParamsValues().rows == [] and ParamReading("block_size").present is False
    s = ServeValues()
    assert s.tp == 1 and s.ready_s is None and s.tp_workers == [] and s.gpu_used_mib == {}
    assert roundtrip(ServeValues(tp_workers=[TpWorker(1, "VLLM::Worker_TP0", 1747.4)])).tp_workers[0].rss_mib == 1747.4
