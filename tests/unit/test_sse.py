"""lab.vllm.sse: the one SSE reader, and timings exactly as `vllm bench serve` takes them."""

from __future__ import annotations

import asyncio
import json

import pytest

from lab.vllm.sse import (
    DONE,
    SseDecoder,
    StreamTiming,
    apayloads,
    chunk_text,
    message_data,
    payloads,
)


def _sse(*chunks: dict | str) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


def test_payloads_survive_any_split_of_the_bytes():
    body = _sse({"choices": [{"text": "你好"}]}, {"choices": [], "usage": {"completion_tokens": 1}}, DONE)
    whole = list(payloads([body]))
    assert whole == ['{"choices": [{"text": "\\u4f60\\u597d"}]}',
                     '{"choices": [], "usage": {"completion_tokens": 1}}', DONE]
    # One byte at a time: messages split mid-line and mid-character come out the same.
    assert list(payloads(body[i:i + 1] for i in range(len(body)))) == whole


def test_a_multibyte_character_split_across_reads_is_kept():
    body = 'data: {"choices": [{"text": "显存"}]}\n\n'.encode()
    cut = body.index("显".encode()) + 1  # inside the first character's three bytes
    (data,) = payloads([body[:cut], body[cut:]])
    assert json.loads(data)["choices"][0]["text"] == "显存"


def test_comments_fields_crlf_and_multiline_data():
    raw = (b": ping\r\n\r\nevent: message\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
           b"retry: 10\n\n")
    assert list(payloads([raw])) == ['{"a":\n1}']


def test_a_cr_at_the_end_of_a_read_is_half_of_a_crlf():
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a": 1}\r\n\r') == []
    assert decoder.feed(b"\ndata: 2\r\n\r\n") == ['{"a": 1}', "2"]
    assert decoder.close() == []


def test_a_last_message_without_its_blank_line_is_not_lost():
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a": 1}\n\ndata: [DONE]') == ['{"a": 1}']
    assert decoder.close() == [DONE]


def test_message_data():
    assert message_data("data: x") == "x"
    assert message_data("data:x") == "x"
    assert message_data("data:  two spaces") == " two spaces"  # only one space is syntax
    assert message_data(": comment") is None
    assert message_data("event: ping") is None


def test_the_async_reader_gives_the_same_payloads():
    body = _sse({"choices": [{"text": "a"}]}, DONE)

    async def chunks():
        for i in range(0, len(body), 5):
            yield body[i:i + 5]

    async def read():
        return [p async for p in apayloads(chunks())]

    assert asyncio.run(read()) == list(payloads([body]))


def test_chunk_text_of_completions_and_chat():
    assert chunk_text({"choices": [{"text": "t"}]}) == "t"
    assert chunk_text({"choices": [{"delta": {"content": "c"}}]}) == "c"
    assert chunk_text({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert chunk_text({"choices": []}) == ""


class Clock:
    """A perf_counter whose readings the test sets."""

    def __init__(self, *times: float):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def _timing(*arrivals: float) -> StreamTiming:
    return StreamTiming(10.0, clock=Clock(*arrivals))


def test_timings_follow_vllm_bench_serve():
    # Chunks with choices arrive at 10.5, 10.6, 10.8 (the clock starts at 10.0, before the POST).
    t = _timing(10.5, 10.6, 10.8)
    for text in ("a", "", "c"):  # an empty text is still a token (a special token, half a char)
        t.on_data(json.dumps({"choices": [{"text": text}]}))
    t.on_data(json.dumps({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}))
    t.on_data(DONE)
    assert t.ttft_s == pytest.approx(0.5)                       # the first chunk with choices
    assert t.itls_s == pytest.approx([0.1, 0.2])                # gaps between them
    assert t.e2el_s == pytest.approx(0.8)                       # the last one
    assert t.tpot_s() == pytest.approx((0.8 - 0.5) / (3 - 1))   # (E2EL - TTFT) / (out - 1)
    assert (t.prompt_tokens, t.completion_tokens, t.output_tokens()) == (4, 3, 3)
    assert t.choice_chunks == 3 and t.text == "ac" and t.done and t.error is None


def test_output_tokens_come_from_usage_not_from_chunks():
    # vLLM may pack several tokens into one chunk: usage is the count that holds.
    t = _timing(10.2, 10.4)
    t.on_data(json.dumps({"choices": [{"text": "ab"}]}))
    t.on_data(json.dumps({"choices": [{"text": "cd"}], "usage": {"completion_tokens": 4}}))
    assert t.output_tokens() == 4
    assert t.tpot_s() == pytest.approx((0.4 - 0.2) / 3)


def test_without_usage_each_chunk_counts_as_a_token():
    t = _timing(10.1)
    t.on_data(json.dumps({"choices": [{"text": "a"}]}))
    assert t.output_tokens() == 1 and t.tpot_s() is None  # no TPOT for a single token


def test_no_token_means_no_ttft_and_no_e2el():
    t = StreamTiming(3.0, clock=Clock())  # the clock is never read
    t.on_data(json.dumps({"choices": [], "usage": {"completion_tokens": 0}}))
    assert t.ttft_s is None and t.e2el_s is None and t.tpot_s() is None and t.choice_chunks == 0


def test_an_error_in_the_stream_is_kept():
    t = _timing()
    t.on_data(json.dumps({"error": {"message": "injected engine error", "code": 500}}))
    assert t.error == "injected engine error"
    t.on_data(json.dumps({"error": "plain"}))
    assert t.error == "plain"


def test_a_chunk_that_is_not_json_raises_value_error():
    with pytest.raises(ValueError):
        _timing().on_data("{not json")
    t = _timing()
    t.on_data("[1, 2]")  # JSON but not a chunk: ignored
    assert t.choice_chunks == 0
