"""lab.measure.bench against the fake streaming server: the latency loop, the sweep, rows written as
each request finishes, timeouts counted, a server that dies mid-sweep, and the bench options."""
import pytest

from lab.checklist.steps import bench as bench_step
from lab.core import config
from lab.core.errors import ConfigError
from lab.measure import bench
from lab.measure.loadgen import NOT_SENT_ERROR
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer


def _plan(**kw):
    base = dict(levels=[1, 4], input_len=8, output_len=6, num_requests=8, warmup=2,
                duration_s=None, latency_runs=3, latency_prompt="解释一下什么是深度学习",
                latency_max_tokens=5, timeout_s=5.0, kv_poll_s=0.1)
    base.update(kw)
    return bench.BenchPlan(**base)


@pytest.fixture
def fake(request):
    config_ = getattr(request, "param", None) or FakeConfig(first_token_s=0.01, itl_s=0.002)
    with FakeServer(config_) as server:
        yield server


def test_latency_loop_then_sweep_records_each_request_as_it_finishes(fake):
    rows = []
    plan = _plan()
    res = bench.run_bench(fake.base_url, "fake-model", plan,
                          record=lambda phase, rec: rows.append((phase, rec)))
    # latency loop: 3 sequential chats, then per level 2 warm-ups + 8 measured requests
    assert [p for p, _ in rows[:3]] == ["latency"] * 3
    assert len(rows) == 3 + 2 * (2 + 8)
    assert {r.level for p, r in rows if p == "sweep"} == {"c1", "c4"}
    assert sum(1 for p, r in rows if p == "sweep" and r.warmup) == 4
    lat = res.latency
    assert lat["runs"] == lat["ok"] == 3 and lat["failed"] == 0
    assert lat["min_latency_ms"] <= lat["avg_latency_ms"] <= lat["max_latency_ms"]
    assert set(lat["seed_output"]) == {"avg_latency_ms", "min_latency_ms", "max_latency_ms"}
    assert [lvl["concurrency"] for lvl in res.levels] == [1, 4]
    for lvl in res.levels:
        assert lvl["completed"] == 8 and lvl["failed"] == 0
        assert lvl["total_output_tokens"] == 8 * 6
        assert lvl["output_throughput"] > 0 and lvl["total_token_throughput"] > lvl["output_throughput"]
        assert set(lvl["ttft_ms"]) == {"mean", "median", "p90", "p99"}
        assert lvl["server"] is None            # the fake has no /metrics
    # client totals include warm-ups and the latency loop
    assert res.client["requests"] == len(rows) and res.client["failed"] == 0
    assert res.client["output_tokens"] == 3 * 5 + 2 * (2 + 8) * 6
    assert "error" in res.metrics             # /metrics could not be read: said, not raised
    assert all(c.status == "pass" for c in bench_step.criteria(res))
    assert res.died_during is None and bench_step.timeout_fix(res, "en") is None


def test_sweep_prompts_have_the_exact_token_length_and_ignore_eos(fake):
    bench.run_bench(fake.base_url, "fake-model", _plan(levels=[2], input_len=11))
    payload = fake.stats.last_payload
    assert len(payload["prompt"]) == 11 and payload["ignore_eos"] is True
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.002,
                                             hang_indices=frozenset({3}))], indirect=True)
def test_timeouts_are_counted_not_fatal(fake):
    res = bench.run_bench(fake.base_url, "fake-model", _plan(levels=[1, 2], warmup=0, timeout_s=0.5))
    assert [lvl["concurrency"] for lvl in res.levels] == [1, 2]   # the run went on
    assert res.levels[0]["timeouts"] == 1 and res.levels[0]["completed"] == 7
    assert bench_step.errors_and_timeouts(res) == (0, 1)
    crits = {c.key: c for c in bench_step.criteria(res)}
    assert crits["no_errors"].status == "pass" and crits["no_errors"].measured == "0 failed, 1 timeouts"
    assert "timed out" in bench_step.timeout_fix(res, "en")


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.005, die_after=5)],
                         indirect=True)
def test_server_dying_mid_sweep_keeps_finished_requests_and_fails_the_rest(fake):
    rows = []
    plan = _plan(levels=[2, 4, 8], warmup=0, latency_runs=1)
    res = bench.run_bench(fake.base_url, "fake-model", plan,
                          record=lambda phase, rec: rows.append((phase, rec)),
                          is_alive=lambda: not fake.app.dead)
    assert res.died_during == "level c=2"
    sweep = [r for p, r in rows if p == "sweep"]
    ok = [r for r in sweep if r.ok]
    assert 5 <= len(ok) <= 6                 # finished before the death (c=2): kept
    assert len(sweep) == 3 * 8               # every planned request has a row
    later = [r for r in sweep if r.level in ("c4", "c8")]
    assert len(later) == 16 and all(r.error == NOT_SENT_ERROR and not r.ok for r in later)
    assert len(res.levels) == 1 and res.levels[0]["failed"] == 8 - len(ok)


def test_bench_options_come_from_config_with_defaults():
    plan = bench.BenchPlan.from_cfg(config.validate(config.merged(config.invoke_defaults())))
    assert plan.levels == [1, 4, 16, 64] and plan.latency_runs == 10
    assert plan.duration_s is None and plan.num_requests == 64
    assert plan.latency_prompt == "解释一下什么是深度学习" and plan.latency_max_tokens == 256


@pytest.mark.parametrize("bad,message", [
    ({"concurrency": "0"}, "bench concurrency must be comma-separated whole numbers >= 1"),
    ({"concurrency": "1,x"}, "bench concurrency must be comma-separated whole numbers >= 1"),
    ({"concurrency": ""}, "bench concurrency must be"),
    ({"concurrency": "4,4"}, "lists a level twice"),
    ({"input_len": "0"}, "bench input_len (tokens) must be at least 1"),
    ({"output_len": "abc"}, "output_len must be a whole number"),
    ({"input_len": "2000", "output_len": "100"}, "exceeds max-model-len 2048"),
    ({"duration_s": "-5"}, "bench duration (s) must be at least 0.1"),
    ({"duration_s": "soon"}, "bench duration (s) must be a number"),
    ({"num_requests": "", "duration_s": ""}, "bench needs num_requests or duration_s"),
    ({"latency_runs": "0"}, "bench latency_runs must be at least 1"),
])
def test_bad_bench_options_are_rejected_with_one_line(bad, message):
    with pytest.raises(ConfigError) as err:
        config.validate(config.merged({"bench": bad}))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_duration_alone_limits_a_level(fake):
    plan = _plan(levels=[2], num_requests=None, duration_s=0.3, warmup=0, latency_runs=1)
    res = bench.run_bench(fake.base_url, "fake-model", plan)
    assert res.levels[0]["completed"] > 0 and res.levels[0]["failed"] == 0


# -- KV-cache usage: the one Sampler over /metrics ---------------------------------------------
def _gauges(kv: float, running: int, waiting: int) -> str:
    return "".join(f'# TYPE vllm:{n} gauge\nvllm:{n}{{engine="0",model_name="m"}} {v}\n'
                   for n, v in (("kv_cache_usage_perc", kv), ("num_requests_running", running),
                                ("num_requests_waiting", waiting)))


def test_kv_usage_keeps_peaks_and_counts_failed_scrapes():
    import time

    from lab.core.errors import ApiError
    from lab.measure.sampler import Sampler
    from lab.vllm import metrics

    script = [_gauges(0.1, 4, 0), ApiError("GET x: connection refused"), _gauges(0.7, 16, 9),
              "not prometheus {", _gauges(0.3, 8, 2)]
    calls = {"n": 0}

    def sample():
        item = script[min(calls["n"], len(script) - 1)]
        calls["n"] += 1
        if isinstance(item, Exception):
            raise item
        return metrics.usage_row(metrics.parse(item))

    usage = Sampler(sample, interval_s=0.005, name="kv-usage").start()
    deadline = time.monotonic() + 5
    while calls["n"] < len(script) + 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    usage.stop()
    kv = bench.kv_usage_summary(usage)
    assert kv["peak_kv_cache_usage_perc"] == pytest.approx(0.7)
    assert kv["peak_num_requests_running"] == 16 and kv["peak_num_requests_waiting"] == 9
    assert kv["scrape_failures"] == 2 and kv["samples"] >= 3
    assert kv["first_error"] == "ApiError: GET x: connection refused"
    assert 0.1 < kv["mean_kv_cache_usage_perc"] < 0.7
    assert kv["interval_s"] == 0.005 and kv["duration_s"] > 0


def test_kv_usage_of_a_server_never_reached_is_none_not_zero():
    from lab.core.errors import ApiError
    from lab.measure.sampler import Sampler

    def down():
        raise ApiError("refused")

    with Sampler(down, interval_s=0.005, name="kv-usage") as usage:
        pass
    kv = bench.kv_usage_summary(usage)
    assert kv["samples"] == 0 and kv["scrape_failures"] >= 1
    assert kv["peak_kv_cache_usage_perc"] is None and kv["mean_kv_cache_usage_perc"] is None


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.004, metrics=True)],
                         indirect=True)
def test_the_sweep_samples_kv_usage_from_metrics(fake):
    res = bench.run_bench(fake.base_url, "fake-model", _plan(levels=[4], num_requests=16,
                                                               output_len=20, kv_poll_s=0.05))
    kv = res.metrics["kv"]
    assert kv["samples"] >= 2 and kv["scrape_failures"] == 0 and kv["first_error"] is None
    # Four requests in flight at the peak: the fake reports 5 % KV usage per request.
    assert 1 <= kv["peak_num_requests_running"] <= 4
    assert kv["peak_kv_cache_usage_perc"] == pytest.approx(0.05 * kv["peak_num_requests_running"])
    assert res.metrics["delta"]["generation_tokens"] > 0
