"""lab.vllm.api against the fake vLLM server (tests/fakes/fake_openai_stream.py), whose token
timing is known: chat, the streamed chat, /v1/models, /health, and each error as one line."""

from __future__ import annotations

import pytest

from lab.core.errors import ApiError, LabError
from lab.vllm import api
from tests.fakes.fake_openai_stream import FakeConfig, free_port

FIRST_S = 0.040  # the `fake` fixture's timing (tests/conftest.py)
ITL_S = 0.010


def test_chat_is_timed_and_reads_usage(fake):
    reply = api.chat(fake.base_url, "fake-model", "你好 请 介绍", max_tokens=5, temperature=0.0)
    assert reply.http_status == 200
    assert reply.content == " t0 t1 t2 t3 t4"
    assert (reply.prompt_tokens, reply.completion_tokens) == (3, 5)
    assert reply.finish_reason == "length" and reply.model == "fake-model"
    assert reply.latency_s >= FIRST_S + 4 * ITL_S
    assert reply.tokens_per_s == pytest.approx(5 / reply.latency_s)
    sent = fake.stats.last_payload
    assert sent["messages"] == [{"role": "user", "content": "你好 请 介绍"}]
    assert sent["max_tokens"] == 5 and sent["temperature"] == 0.0


def test_chat_stream_times_the_chunks(fake):
    reply = api.chat_stream(fake.base_url, "fake-model", "hi", max_tokens=6)
    assert reply.http_status == 200
    assert reply.content == " t0 t1 t2 t3 t4 t5"
    assert reply.completion_tokens == 6
    # vLLM's first chat chunk carries the role: it has choices, so it is a chunk too.
    assert reply.chunks == 7 and len(reply.chunk_gaps_s) == 6
    assert FIRST_S <= reply.ttft_s < FIRST_S + 0.5
    assert reply.e2el_s >= FIRST_S + 5 * ITL_S and reply.e2el_s > reply.ttft_s
    assert sum(reply.chunk_gaps_s) == pytest.approx(reply.e2el_s - reply.ttft_s)
    sent = fake.stats.last_payload
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_list_models_and_health(fake):
    assert [m["id"] for m in api.list_models(fake.base_url)] == ["fake-model"]
    assert api.health(fake.base_url) == 200


def test_health_of_nothing_is_zero():
    assert api.health(f"http://127.0.0.1:{free_port()}", timeout_s=1) == 0


@pytest.mark.parametrize("fake", [FakeConfig(api_key="sk-right")], indirect=True)
def test_the_key_is_sent_as_a_bearer_token_and_a_wrong_one_is_one_line(fake):
    assert api.list_models(fake.base_url, api_key="sk-right")[0]["id"] == "fake-model"
    assert fake.stats.auth_headers[-1] == "Bearer sk-right"
    with pytest.raises(ApiError) as err:
        api.chat(fake.base_url, "fake-model", "hi", api_key="sk-wrong")
    msg = str(err.value)
    assert "HTTP 401" in msg and "Unauthorized" in msg and "\n" not in msg
    assert "sk-wrong" not in msg and "sk-right" not in msg
    assert err.value.evidence.startswith("HTTP 401")


def test_a_server_that_is_not_there_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    for call in (lambda: api.chat(url, "m", "hi"), lambda: api.list_models(url),
                 lambda: api.chat_stream(url, "m", "hi")):
        with pytest.raises(ApiError, match=r"cannot connect to .*invoke serve") as err:
            call()
        assert "\n" not in str(err.value) and isinstance(err.value, LabError)


@pytest.mark.parametrize("fake", [FakeConfig(first_token_s=2.0)], indirect=True)
def test_a_slow_server_times_out_in_one_line(fake):
    with pytest.raises(ApiError, match=r"timed out after 0.3 s"):
        api.chat(fake.base_url, "fake-model", "hi", max_tokens=2, timeout_s=0.3)


@pytest.mark.parametrize("fake", [FakeConfig(stream_error_after=2)], indirect=True)
def test_an_error_inside_the_stream_is_one_line(fake):
    with pytest.raises(ApiError, match="reported an error in the stream: injected engine error") as err:
        api.chat_stream(fake.base_url, "fake-model", "hi", max_tokens=5)
    assert "\n" not in str(err.value)


def test_headers():
    assert api.headers(None) == {} and api.headers("") == {}
    assert api.headers("k") == {"Authorization": "Bearer k"}


def test_an_error_body_over_several_lines_is_still_one_line():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"Internal Server Error\nTraceback (most recent call last):\n  boom\n")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ApiError) as err:
            api.list_models(f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    msg = str(err.value)
    assert "HTTP 500: Internal Server Error Traceback" in msg and "\n" not in msg
    assert "  boom" in err.value.evidence


@pytest.mark.parametrize("fake", [FakeConfig(lora_modules=("a1",), runtime_lora=True)], indirect=True)
def test_a_lora_adapter_is_loaded_listed_and_unloaded_at_run_time(fake):
    names = lambda: {m["id"]: m.get("parent") for m in api.list_models(fake.base_url)}  # noqa: E731
    assert names() == {"fake-model": None, "a1": "fake-model"}
    assert api.load_lora_adapter(fake.base_url, "a2", "/adapters/a2") >= 0
    assert names()["a2"] == "fake-model"
    with pytest.raises(ApiError, match=r"HTTP 400.*already been loaded"):
        api.load_lora_adapter(fake.base_url, "a2", "/adapters/a2")
    assert api.unload_lora_adapter(fake.base_url, "a2") >= 0
    assert "a2" not in names()
    with pytest.raises(ApiError, match="HTTP 404"):
        api.unload_lora_adapter(fake.base_url, "a2")


@pytest.mark.parametrize("fake", [FakeConfig(lora_modules=("a1",))], indirect=True)
def test_run_time_loading_without_vllms_setting_is_a_404_in_one_line(fake):
    with pytest.raises(ApiError, match=r"load_lora_adapter returned HTTP 404"):
        api.load_lora_adapter(fake.base_url, "a2", "/adapters/a2")
