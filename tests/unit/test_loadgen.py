"""lab.measure.loadgen against the fake vLLM server, whose token timing is known."""
import time
from collections import Counter

import pytest

from lab.core.errors import ConfigError
from lab.measure.loadgen import (
    NOT_SENT_ERROR,
    TIMEOUT_ERROR,
    Workload,
    prompts_needed,
    run_level_sync,
    sequential_chat,
    validate_workload,
)
from tests.fakes.fake_openai_stream import FakeConfig, free_port

FIRST_S = 0.040  # the `fake` fixture's timing (tests/conftest.py)
ITL_S = 0.010
PROMPTS = [[100 + i, 200 + i, 300 + i, 400 + i] for i in range(64)]


def _workload(**kw):
    base = dict(input_len=4, output_len=8, concurrency=2, num_requests=6, timeout_s=5.0)
    base.update(kw)
    return Workload(**base)


def _max_overlap(records):
    """Most requests whose [send, finish] intervals overlap, from the client's records."""
    events = []
    for r in records:
        if r.sent_at_s is not None and r.e2el_s is not None:
            events += [(r.sent_at_s, 1), (r.sent_at_s + r.e2el_s, -1)]
    best = cur = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        cur += step
        best = max(best, cur)
    return best


def test_timings_match_known_spacing(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS, _workload(output_len=10))
    s = res.summary
    assert s["completed"] == 6 and s["failed"] == 0
    assert all(r.output_tokens == 10 for r in res.records)
    # TTFT can only be later than the server's first write, never earlier.
    assert FIRST_S * 1000 <= s["ttft_ms"]["median"] <= FIRST_S * 1000 + 40
    assert s["tpot_ms"]["median"] == pytest.approx(ITL_S * 1000, abs=2.5)
    assert s["itl_ms"]["mean"] == pytest.approx(ITL_S * 1000, abs=2.5)
    assert all(len(r.itls_s) == 9 for r in res.records)
    truth_e2el_ms = (FIRST_S + 9 * ITL_S) * 1000
    assert truth_e2el_ms <= s["e2el_ms"]["median"] <= truth_e2el_ms + 60
    assert s["total_output_tokens"] == 60
    assert s["output_throughput"] == pytest.approx(60 / res.wall_s)


def test_payload_shape_and_api_key(fake):
    res = run_level_sync(fake.base_url + "/v1", "fake-model", PROMPTS,
                         _workload(num_requests=1), api_key="sk-secret")
    body = fake.stats.last_payload
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 8
    assert body["temperature"] == 0 and body["prompt"] == PROMPTS[0]
    assert fake.stats.auth_headers[-1] == "Bearer sk-secret"
    assert "sk-secret" not in repr(res)


def test_semaphore_caps_in_flight(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=3, num_requests=12, output_len=4))
    assert res.summary["completed"] == 12
    assert fake.stats.max_in_flight == 3
    assert _max_overlap(res.records) <= 3


def test_queue_time_kept_out_of_ttft(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=1, num_requests=4, output_len=4))
    recs = sorted(res.records, key=lambda r: r.idx)
    e2el_s = FIRST_S + 3 * ITL_S
    # With one slot, request k waits for the k before it...
    assert recs[0].queue_s < 0.01
    assert recs[3].queue_s >= 3 * e2el_s
    # ...but its TTFT is still the server's, not server + queue.
    assert all(FIRST_S <= r.ttft_s <= FIRST_S + 0.04 for r in recs)
    assert res.summary["queue_ms"]["p99"] >= 3 * e2el_s * 1000


def test_warmup_recorded_but_excluded(fake):
    seen, progress = [], []
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(num_requests=4, warmup_requests=2, output_len=3),
                         on_record=seen.append, on_progress=lambda d, t: progress.append((d, t)))
    assert len(res.records) == 6 and len(seen) == 6
    assert sum(r.warmup for r in res.records) == 2
    assert res.summary["requests"] == 4 and res.summary["completed"] == 4
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # The fake counts a finish after its last write, which the client may read first.
    deadline = time.monotonic() + 2
    while fake.stats.completions_finished < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.stats.completions_finished == 6
    assert prompts_needed(_workload(num_requests=4, warmup_requests=2)) == 6


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.002,
                                             hang_indices=frozenset({1}))], indirect=True)
def test_timeout_counted_not_fatal(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(num_requests=4, output_len=3, timeout_s=0.5))
    s = res.summary
    assert (s["completed"], s["failed"], s["timeouts"]) == (3, 1, 1)
    assert [r.error for r in res.records if not r.ok] == [TIMEOUT_ERROR]


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.002,
                                             http_error_indices=frozenset({0}))], indirect=True)
def test_http_error_recorded(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=1, num_requests=3, output_len=3))
    bad = [r for r in res.records if not r.ok]
    assert len(bad) == 1 and bad[0].http_status == 500
    assert bad[0].error.startswith("HTTP 500")
    assert res.summary["completed"] == 2


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=FIRST_S, itl_s=0.1,
                                             empty_text_tokens=frozenset({0, 1}))],
                         indirect=True)
def test_empty_text_chunks_are_tokens(fake):
    # Wide spacing (100 ms): counting the empty chunks gives TTFT ~40 ms, skipping them
    # would give ~240 ms, so the bound holds on a loaded machine.
    # As in vLLM: a chunk with `choices` is a token even when its text is empty.
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=1, num_requests=1, output_len=4))
    rec = res.records[0]
    assert rec.ok and rec.output_tokens == 4 and len(rec.itls_s) == 3
    assert FIRST_S <= rec.ttft_s < FIRST_S + 0.1


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.002,
                                             stream_error_after=2)], indirect=True)
def test_error_inside_stream_fails_request(fake):
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=1, num_requests=2, output_len=5))
    assert [r.ok for r in res.records] == [False, False]
    assert all(r.error == "stream error: injected engine error" for r in res.records)


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.005, die_after=3)],
                         indirect=True)
def test_server_dying_mid_level_keeps_finished(fake):
    seen = []
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(concurrency=2, num_requests=40, output_len=10),
                         on_record=seen.append)
    assert len(res.records) == 40 and len(seen) == 40  # every request accounted for
    errors = Counter(r.error for r in res.records)
    assert res.summary["completed"] >= 3
    assert errors[NOT_SENT_ERROR] >= 30  # stopped sending once the server was gone
    conn_errors = [e for e in errors if e and e != NOT_SENT_ERROR]
    assert conn_errors and all(e != TIMEOUT_ERROR for e in conn_errors)
    assert fake.stats.completions_started <= 10


def test_server_down_from_start_is_not_hammered():
    res = run_level_sync(f"http://127.0.0.1:{free_port()}", "m", PROMPTS,
                         _workload(concurrency=1, num_requests=20))
    errors = Counter(r.error for r in res.records)
    assert errors[NOT_SENT_ERROR] == 17
    assert res.summary["failed"] == 20 and res.summary["completed"] == 0
    assert not res.summary["request_throughput"]


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=0.01, itl_s=0.005)], indirect=True)
def test_timed_level(fake):
    progress = []
    res = run_level_sync(fake.base_url, "fake-model", PROMPTS,
                         _workload(num_requests=None, duration_s=0.3, output_len=4),
                         on_progress=lambda d, t: progress.append(t))
    assert res.summary["completed"] >= 4
    assert max(r.sent_at_s for r in res.records) < 0.3 + 0.05
    assert set(progress) == {None}


@pytest.mark.parametrize("change,match", [
    (dict(concurrency=0), "concurrency"),
    (dict(input_len=0), "input_len"),
    (dict(output_len=0), "output_len"),
    (dict(duration_s=0.0), "duration_s"),
    (dict(num_requests=None), "neither"),
    (dict(input_len=3000, output_len=2000), "max_model_len 4096"),
])
def test_validation_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        validate_workload(_workload(**change), max_model_len=4096)


def test_run_level_rejects_bad_workload_before_sending():
    with pytest.raises(ConfigError):
        run_level_sync("http://127.0.0.1:1", "m", PROMPTS, _workload(concurrency=0))
    with pytest.raises(ConfigError):
        run_level_sync("http://127.0.0.1:1", "m", [], _workload())


def test_sequential_chat(fake):
    seen = []
    recs = sequential_chat(fake.base_url, "fake-model", "Hello, who are you?", 3, 5,
                           on_record=seen.append, api_key="sk-x")
    assert len(recs) == 3 and len(seen) == 3 and all(r.ok for r in recs)
    assert all(r.output_tokens == 5 for r in recs)
    truth_s = FIRST_S + 4 * ITL_S
    # Upper bounds are loose: the test box is shared, so the scheduler adds delay.
    assert all(truth_s <= r.e2el_s <= truth_s + 0.1 for r in recs)
    assert fake.stats.chat_requests == 3
    assert fake.stats.auth_headers[-1] == "Bearer sk-x"


def test_sequential_chat_server_down():
    recs = sequential_chat(f"http://127.0.0.1:{free_port()}", "m", "hi", 6, 5, timeout_s=2)
    assert [r.ok for r in recs] == [False] * 6
    assert [r.error for r in recs][3:] == [NOT_SENT_ERROR] * 3


def _load_fidelity():
    """bench/ is not a package: load bench/fidelity.py by path."""
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "fidelity.py"
    spec = importlib.util.spec_from_file_location("bench_fidelity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fidelity_dry_run_against_fake(fake, capsys, monkeypatch):
    fidelity = _load_fidelity()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hidden")
    rc = fidelity.main(["--base-url", fake.base_url, "--model", "fake-model", "--dry-run",
                        "--concurrency", "1,2", "--num-prompts", "2", "--warmup", "1",
                        "--rounds", "1", "--input-len", "8", "--output-len", "4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "--max-concurrency 2" in out and "--ignore-eos" in out
    assert "sk-hidden" not in out
    assert fake.stats.auth_headers[-1] == "Bearer sk-hidden"
    assert fake.stats.completions_finished == 6  # (1 warm-up + 2) x 2 levels
    argv = fidelity.theirs_argv(fidelity.argparse.Namespace(
        python="/venv/bin/python", base_url="http://h:1/", model="m", tokenizer=None,
        input_len=64, output_len=64, num_prompts=64, warmup=2), 16, 7, "/tmp/r", "x.json")
    assert argv[:2] == ["/venv/bin/python", "-c"] and argv[3:5] == ["bench", "serve"]
    assert argv[argv.index("--random-input-len") + 1] == "64"
    assert argv[argv.index("--base-url") + 1] == "http://h:1"


def _level_with_stale_connections(monkeypatch, fake, retry: bool):
    """32 requests where the 2nd and 6th POST go out on a kept-alive socket the server has
    already closed (aiohttp raises before any reply; bench/keepalive_race.py shows it happen
    on uvicorn when a busy client reads a reply's end later than vLLM's 5 s keep-alive)."""
    import aiohttp

    from lab.measure import loadgen
    if not retry:
        monkeypatch.setattr(loadgen, "_stale_connection", lambda err, rec: False)
    real_post = aiohttp.ClientSession.post
    calls = {"n": 0}

    def post(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (2, 6):
            raise aiohttp.ServerDisconnectedError()
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "post", post)
    return run_level_sync(fake.base_url, "fake-model", PROMPTS,
                          _workload(concurrency=4, num_requests=32, output_len=4)).records


def test_a_request_on_a_connection_the_server_closed_is_sent_again_not_failed(monkeypatch, fake):
    """Issue 9's lost monitor requests: they failed on stale kept-alive sockets and never
    reached the server (its access log showed only 200 OK)."""
    kept = _level_with_stale_connections(monkeypatch, fake, retry=True)
    assert [r.error for r in kept if not r.ok] == [] and len(kept) == 32
    assert fake.stats.completions_finished == 32          # the stale attempts never arrived


def test_without_the_retry_those_requests_are_lost(monkeypatch, fake):
    lost = [r for r in _level_with_stale_connections(monkeypatch, fake, retry=False) if not r.ok]
    assert [r.error for r in lost] == ["ServerDisconnectedError: Server disconnected"] * 2


def test_fidelity_cut_off_by_sigterm_keeps_the_runs_that_finished(fake, capsys, tmp_path,
                                                                   monkeypatch):
    """`timeout` ends a long comparison with SIGTERM: the table and --json-out still hold
    every run measured before it (on the lent H100 a 230 s limit once lost all seven)."""
    import json
    import os
    import signal

    fidelity = _load_fidelity()
    real = fidelity.run_ours
    calls = {"n": 0}

    def run_ours(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(fidelity, "run_ours", run_ours)
    before = signal.getsignal(signal.SIGTERM)
    out_json = tmp_path / "fidelity.json"
    rc = fidelity.main(["--base-url", fake.base_url, "--model", "fake-model", "--dry-run",
                        "--concurrency", "1,2", "--num-prompts", "2", "--warmup", "1",
                        "--rounds", "1", "--input-len", "8", "--output-len", "4",
                        "--json-out", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in out
    assert "Total time" in out  # the table of the finished runs was printed
    kept = json.loads(out_json.read_text())
    assert [(r["side"], r["concurrency"]) for r in kept] == [("ours", 1)]
    assert kept[0]["figures"]["median_ttft_ms"] > 0
    assert signal.getsignal(signal.SIGTERM) == before
