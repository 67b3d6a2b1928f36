"""vLLM's streamed replies: server-sent events parsed into chunks, timed on arrival.

One reader for every streamed call: the `api-test` step's chat stream (lab.vllm.api, sync,
requests) and the load generator's completions (lab.measure.loadgen, asyncio, aiohttp).

- `SseDecoder` turns raw bytes, in whatever pieces the socket delivers them, into the data
  payloads of complete SSE messages (a message ends at a blank line; `data:` lines of one
  message are joined; comments and other fields are skipped). UTF-8 is decoded
  incrementally, so a character split across two reads survives.
- `StreamTiming` reads those payloads as vLLM's OpenAI server sends them (a JSON chunk per
  message, `[DONE]` last) and times them exactly as `vllm bench serve` does
  (`vllm/benchmarks/lib/endpoint_request_func.py`, vLLM 0.32; docs/facts.md, "Benchmark
  definitions"):
  - the clock starts just before the POST (`start_s`, a `time.perf_counter()` reading);
  - each message with `choices` is a token arrival, stamped when it is handled: TTFT is the
    first (even when its text is empty: a special token or a partial character is still a
    token), the gaps between successive ones are the ITLs, the last one ends E2EL;
  - output tokens come from the `usage` chunk (`stream_options.include_usage`);
  - an `error` chunk (vLLM reports failures inside the stream) is kept as the error.

Command line equivalent: `curl -N localhost:8000/v1/completions -d '{..., "stream": true}'`
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: The payload vLLM sends after the last chunk.
DONE = "[DONE]"


class SseDecoder:
    """Incremental SSE parser: `feed(bytes)` returns the data payloads completed so far;
    `close()` returns a last message the stream ended without a blank line after."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, raw: bytes) -> list[str]:
        text = self._buffer + self._decoder.decode(raw)
        # Normalise line ends; a "\r" at the very end may be the first half of a "\r\n".
        keep_cr = text.endswith("\r")
        text = text[:-1] if keep_cr else text
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        messages = text.split("\n\n")
        self._buffer = messages.pop() + ("\r" if keep_cr else "")
        return [data for data in map(message_data, messages) if data is not None]

    def close(self) -> list[str]:
        rest = (self._buffer + self._decoder.decode(b"", final=True)).replace("\r\n", "\n")
        self._buffer = ""
        data = message_data(rest.replace("\r", "\n"))
        return [data] if data is not None else []


def message_data(message: str) -> str | None:
    """The data of one SSE message (its `data:` lines joined by newlines); None for a
    message without data (a comment such as `: ping`, or only other fields)."""
    lines = []
    for line in message.split("\n"):
        if line == "data" or line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(lines) if lines else None


def payloads(chunks: Iterable[bytes]) -> Iterator[str]:
    """The data payloads of a byte stream read synchronously (e.g. requests'
    `iter_content(chunk_size=None)`), each yielded as soon as its message is complete."""
    decoder = SseDecoder()
    for raw in chunks:
        yield from decoder.feed(raw)
    yield from decoder.close()


async def apayloads(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """`payloads` for an asyncio byte stream (e.g. aiohttp's `response.content.iter_any()`)."""
    decoder = SseDecoder()
    async for raw in chunks:
        for data in decoder.feed(raw):
            yield data
    for data in decoder.close():
        yield data


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text of a chunk's first choice: `text` (/v1/completions) or `delta.content`
    (/v1/chat/completions); "" when it carries none."""
    choices = chunk.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta")
    text = choice.get("text")
    if text is None and isinstance(delta, dict):
        text = delta.get("content")
    return text if isinstance(text, str) else ""


@dataclass
class StreamTiming:
    """One streamed reply, timed as `vllm bench serve` times it (see the module doc).

    Feed it every payload with `on_data`, in arrival order; read the figures after the
    stream ends. Times are seconds; `start_s` and `last_s` are `time.perf_counter()` readings.
    """

    start_s: float
    #: Arrival of the latest chunk with `choices` (start_s until one arrives).
    last_s: float = 0.0
    choice_chunks: int = 0
    ttft_s: float | None = None
    itls_s: list[float] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False
    parts: list[str] = field(default_factory=list)
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)

    def __post_init__(self) -> None:
        self.last_s = self.last_s or self.start_s

    def on_data(self, data: str) -> None:
        """Handle one payload. Raises ValueError when it is neither JSON nor `[DONE]`."""
        if data.strip() == DONE:
            self.done = True
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            return
        if chunk.get("error"):
            err = chunk["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)
            return
        if chunk.get("choices"):
            now = self.clock()
            if self.choice_chunks == 0:
                self.ttft_s = now - self.start_s
            else:
                self.itls_s.append(now - self.last_s)
            self.last_s = now
            self.choice_chunks += 1
            self.parts.append(chunk_text(chunk))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def e2el_s(self) -> float | None:
        """Start to the last chunk with `choices`; None when no token arrived."""
        return self.last_s - self.start_s if self.choice_chunks else None

    @property
    def prompt_tokens(self) -> int | None:
        return (self.usage or {}).get("prompt_tokens")

    @property
    def completion_tokens(self) -> int | None:
        return (self.usage or {}).get("completion_tokens")

    def output_tokens(self) -> int:
        """`usage.completion_tokens`; without a usage chunk, one token per chunk is the best
        guess left."""
        return self.completion_tokens or self.choice_chunks

    def tpot_s(self) -> float | None:
        """(E2EL − TTFT) / (output tokens − 1), only for more than one output token."""
        out = self.output_tokens()
        if self.ttft_s is None or self.e2el_s is None or out <= 1:
            return None
        return (self.e2el_s - self.ttft_s) / (out - 1)
