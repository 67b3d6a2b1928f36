"""Simple calls to vLLM's OpenAI-compatible API, with requests.

The load generator (lab.measure.loadgen) is the asyncio client for many requests at once; these
are the one-at-a-time calls of the `api-test` step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from lab.core.errors import ApiError
from lab.vllm.sse import StreamTiming, payloads


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass
class ChatReply:
    http_status: int
    content: str
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    model: str | None

    @property
    def tokens_per_s(self) -> float | None:
        if not self.completion_tokens or self.latency_s <= 0:
            return None
        return self.completion_tokens / self.latency_s


@dataclass
class StreamReply:
    http_status: int
    content: str
    chunks: int
    ttft_s: float | None
    e2el_s: float
    completion_tokens: int | None
    chunk_gaps_s: list[float] = field(default_factory=list)


def list_models(url: str, api_key: str | None = None, timeout_s: float = 10) -> list[dict]:
    """Command line equivalent: `curl localhost:8000/v1/models`."""
    r = request("GET", f"{url}/v1/models", api_key, timeout_s)
    return r.json().get("data", [])


def load_lora_adapter(
    url: str, name: str, path: str, api_key: str | None = None, timeout_s: float = 120
) -> float:
    """Load a LoRA adapter into the running server under `name`; returns the seconds the
    call took (vLLM answers once the adapter is loaded). The server needs
    `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `--enable-lora`, else the route is missing
    (HTTP 404) — raised as ApiError like any other failure.

    Command line equivalent: `curl -X POST localhost:8000/v1/load_lora_adapter
    -H 'Content-Type: application/json' -d '{"lora_name": "a2", "lora_path": "/path/a2"}'`.
    """
    start = time.perf_counter()
    request(
        "POST",
        f"{url}/v1/load_lora_adapter",
        api_key,
        timeout_s,
        json={"lora_name": name, "lora_path": path},
    )
    return time.perf_counter() - start


def unload_lora_adapter(
    url: str, name: str, api_key: str | None = None, timeout_s: float = 60
) -> float:
    """Unload a LoRA adapter by name; returns the seconds the call took.

    Command line equivalent: `curl -X POST localhost:8000/v1/unload_lora_adapter
    -H 'Content-Type: application/json' -d '{"lora_name": "a2"}'`.
    """
    start = time.perf_counter()
    request("POST", f"{url}/v1/unload_lora_adapter", api_key, timeout_s, json={"lora_name": name})
    return time.perf_counter() - start


def completion_status(
    url: str, model: str, api_key: str | None = None, timeout_s: float = 60
) -> int:
    """The HTTP status of a one-token completion for `model` (404 when the server serves no
    model of that name, e.g. an unloaded adapter); 0 when the server cannot be reached.

    Command line equivalent: `curl -s -o /dev/null -w '%{http_code}' localhost:8000/v1/completions
    -d '{"model": "a2", "prompt": "hi", "max_tokens": 1}'`.
    """
    try:
        r = requests.post(
            f"{url}/v1/completions",
            headers=headers(api_key),
            timeout=timeout_s,
            json={"model": model, "prompt": "hi", "max_tokens": 1},
        )
    except requests.RequestException:
        return 0
    return r.status_code


def health(url: str, timeout_s: float = 5) -> int:
    """HTTP status of /health (200 once the engine is up), or 0 if unreachable."""
    try:
        return requests.get(f"{url}/health", timeout=timeout_s).status_code
    except requests.RequestException:
        return 0


def chat(
    url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int | None = None,
    temperature: float = 0.7,
    api_key: str | None = None,
    timeout_s: float = 300,
) -> ChatReply:
    """One chat completion, timed from just before the POST to the full reply.

    Command line equivalent: `curl localhost:8000/v1/chat/completions -d '{"model": ...,
    "messages": [{"role": "user", "content": "你好，请介绍一下你自己"}], "temperature": 0.7}'`.
    """
    body: dict[str, Any] = {
        "model": model,
        "temperature": temperature,
        "messages": [{"role": "user", "content": prompt}],
    }
    if max_tokens:
        body["max_tokens"] = max_tokens
    start = time.perf_counter()
    r = request("POST", f"{url}/v1/chat/completions", api_key, timeout_s, json=body)
    latency = time.perf_counter() - start
    data = r.json()
    choice = (data.get("choices") or [{}])[0]
    usage = data.get("usage") or {}
    return ChatReply(
        r.status_code,
        (choice.get("message") or {}).get("content") or "",
        latency,
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        choice.get("finish_reason"),
        data.get("model"),
    )


def chat_stream(
    url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int = 64,
    temperature: float = 0.7,
    api_key: str | None = None,
    timeout_s: float = 300,
) -> StreamReply:
    """A streamed chat reply, read by the one SSE reader (lab.vllm.sse) and timed as
    `vllm bench serve` times it, with usage in the last chunk. An error the server reports
    inside the stream, or a chunk that is not JSON, raises ApiError (one line).

    Command line equivalent: `curl -N localhost:8000/v1/chat/completions -d '{..., "stream": true}'`.
    """
    body = {
        "model": model,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}],
    }
    endpoint = f"{url}/v1/chat/completions"
    timing = StreamTiming(time.perf_counter())
    with request("POST", endpoint, api_key, timeout_s, json=body, stream=True) as r:
        try:
            for data in payloads(r.iter_content(chunk_size=None)):
                timing.on_data(data)
                if timing.done:
                    break
        except ValueError as err:
            raise ApiError(
                f"POST {endpoint}: the stream sent a chunk that is not JSON ({err})"
            ) from None
        except requests.RequestException as err:
            raise ApiError(
                f"POST {endpoint}: the stream broke off ({type(err).__name__})"
            ) from None
        status = r.status_code
    if timing.error is not None:
        raise ApiError(
            f"POST {endpoint}: the server reported an error in the stream: "
            f"{' '.join(timing.error.split())[:200]}",
            evidence=timing.error[:1000],
        )
    e2el = timing.e2el_s if timing.e2el_s is not None else time.perf_counter() - timing.start_s
    return StreamReply(
        status,
        timing.text,
        timing.choice_chunks,
        timing.ttft_s,
        e2el,
        timing.completion_tokens,
        list(timing.itls_s),
    )


def request(
    method: str, url: str, api_key: str | None, timeout_s: float, **kw: Any
) -> requests.Response:
    """One HTTP call to the server; every failure is an ApiError whose message is one line
    (the body of an error answer is kept as evidence). The API key goes in the header only.
    Used by every synchronous call to the server (chat, models, /metrics, /tokenize)."""
    try:
        r = requests.request(method, url, headers=headers(api_key), timeout=timeout_s, **kw)
    except requests.ConnectionError:
        raise ApiError(
            f"cannot connect to {url}: is the server running? (`invoke serve`)"
        ) from None
    except requests.Timeout:
        raise ApiError(f"{method} {url} timed out after {timeout_s:g} s") from None
    except requests.RequestException as err:
        raise ApiError(f"{method} {url} failed: {type(err).__name__}") from None
    if r.status_code != 200:
        body = " ".join(r.text.split())
        raise ApiError(
            f"{method} {url} returned HTTP {r.status_code}: {body[:200]}",
            evidence=f"HTTP {r.status_code}\n{r.text[:1000]}",
        )
    return r
