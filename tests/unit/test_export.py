"""A result exported as `vllm bench serve --save-result` JSON, read back with only the field
names vLLM writes (vllm/benchmarks/serve.py, 0.32)."""
from __future__ import annotations

import json

import pytest

from lab.measure.export import bench_serve_json, write
from lab.measure.loadgen import RequestRecord

#: Fields `vllm bench serve --save-result --save-detailed` writes for a generation benchmark
#: (result_json keys of vllm/benchmarks/serve.py; percentiles default to p99).
VLLM_FIELDS = {
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
    "request_rate", "burstiness", "max_concurrency", "duration", "completed", "failed",
    "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
    "output_throughput", "total_token_throughput", "input_lens", "output_lens", "ttfts",
    "itls", "latencies", "start_times", "queue_times", "generated_texts", "errors",
    *(f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")),
}


def records() -> list[RequestRecord]:
    """Two measured requests (TTFT 10/30 ms, 3 tokens at 5 ms gaps), one failed, one warm-up."""
    recs = [RequestRecord(idx=0, level="c2", concurrency=2, warmup=True, ok=True, ttft_s=9.0,
                          e2el_s=9.0, input_tokens=4, output_tokens=1, sent_at_s=0.0)]
    for i, ttft in enumerate((0.010, 0.030)):
        recs.append(RequestRecord(idx=i, level="c2", concurrency=2, warmup=False, ok=True,
                                  input_tokens=4, output_tokens=3, sent_at_s=1.0 + i * 0.01,
                                  queue_s=0.0, ttft_s=ttft, e2el_s=ttft + 0.010,
                                  tpot_s=0.005, itls_s=[0.005, 0.005]))
    recs.append(RequestRecord(idx=2, level="c2", concurrency=2, warmup=False, ok=False,
                              error="HTTP 500: boom", http_status=500, input_tokens=4,
                              sent_at_s=1.02))
    return recs


def read_like_a_vllm_reader(path) -> dict:
    """What a reader of vLLM's result files does: json.load, then index by vLLM's names."""
    with open(path) as fh:
        data = json.load(fh)
    return {"completed": data["completed"], "failed": data["failed"],
            "req_s": data["request_throughput"], "out_tok_s": data["output_throughput"],
            "median_ttft": data["median_ttft_ms"], "p99_ttft": data["p99_ttft_ms"],
            "mean_tpot": data["mean_tpot_ms"], "median_itl": data["median_itl_ms"],
            "n_ttfts": len(data["ttfts"]), "goodput": data["request_goodput"],
            "concurrency": data["max_concurrency"], "rate": data["request_rate"],
            "duration": data["duration"], "errors": data["errors"]}


def test_the_export_has_vllms_fields_and_figures(tmp_path):
    result = bench_serve_json(records(), 0.05, model_id="m", num_prompts=3, max_concurrency=2,
                              goodput={"ttft": 20.0})
    assert set(result) >= VLLM_FIELDS
    path = write(tmp_path / "r.json", result)
    got = read_like_a_vllm_reader(path)
    assert (got["completed"], got["failed"], got["n_ttfts"]) == (2, 1, 3)  # warm-up left out
    assert got["req_s"] == pytest.approx(2 / 0.05)
    assert got["out_tok_s"] == pytest.approx(6 / 0.05)
    assert got["median_ttft"] == pytest.approx(20.0)
    assert got["p99_ttft"] == pytest.approx(29.8)
    assert got["mean_tpot"] == pytest.approx(5.0) and got["median_itl"] == pytest.approx(5.0)
    assert got["goodput"] == pytest.approx(1 / 0.05)  # only the 10 ms TTFT meets 20 ms
    assert (got["concurrency"], got["rate"], got["duration"]) == (2, "inf", 0.05)
    assert got["errors"] == ["", "", "HTTP 500: boom"]


def test_no_goodput_target_writes_none_like_vllm():
    assert bench_serve_json(records(), 0.05, model_id="m")["request_goodput"] is None


def test_a_bench_step_exports_each_level(tmp_path):
    """The bench step's export reads the logbook rows (dicts), not the live records."""
    rows = [r.to_dict() for r in records()]
    result = bench_serve_json(rows, None, model_id="m")
    assert result["completed"] == 2 and result["duration"] == pytest.approx(0.05)
