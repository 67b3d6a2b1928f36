"""A fake vLLM OpenAI server with known timing, for tests and for bench/client_ceiling.py.

Endpoints (shapes copied from vLLM 0.32):
- `POST /v1/completions`: streamed SSE in vLLM's format when `stream: true` (one choice chunk
  per token, the last with `finish_reason: "length"`; a final `choices: []` chunk with
  `usage` when `stream_options.include_usage`; then `data: [DONE]`), or one JSON body.
- `POST /v1/chat/completions`: a chat reply with `usage`; streamed like the completions
  (`delta.content` instead of `text`, a first chunk with the role) when `stream: true`.
- `POST /tokenize`: `{count, max_model_len, tokens}`; words hashed to ids.
- `GET /health`, `GET /v1/models`, `GET /metrics` (with `metrics=True`: usage gauges), and
  `GET /fake/stats` (what the fake saw).

Timing truth: token k (0-based) of a request is written at `t_recv + first_token_s + k * itl_s`
on an absolute schedule, so sleep overshoot does not accumulate. So the true TTFT is
`first_token_s` (plus the network path), the true TPOT and mean ITL are `itl_s`.

Faults: `die_after` (after that many completed completion requests the server aborts every
open connection and stops listening, like a crashed vLLM), `hang_all` / `hang_indices`
(requests that never answer, for timeout tests), `http_error_indices` (HTTP 500).

Run it in a background thread with `FakeServer(config).start()` (a context manager), in a
subprocess with `start_subprocess(...)`, or standalone: `python fake_openai_stream.py --help`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field

from aiohttp import web

# Connection aborts are the point of `die_after`; keep aiohttp from logging tracebacks.
logging.getLogger("aiohttp").setLevel(logging.CRITICAL)


@dataclass
class FakeConfig:
    """How the fake behaves. Times in seconds."""

    first_token_s: float = 0.05
    itl_s: float = 0.005
    model: str = "fake-model"
    max_model_len: int = 4096
    vocab_size: int = 32000
    #: After this many completed /v1/completions requests, the server dies.
    die_after: int | None = None
    #: Every completion request hangs (never answers).
    hang_all: bool = False
    #: 0-based arrival indices of completion requests that hang.
    hang_indices: frozenset[int] = frozenset()
    #: 0-based arrival indices of completion requests answered with HTTP 500.
    http_error_indices: frozenset[int] = frozenset()
    #: Output-token positions streamed with empty text (like a special token or half of a
    #: multi-byte character): still tokens, still chunks with `choices`.
    empty_text_tokens: frozenset[int] = frozenset()
    #: After this many tokens, stream a vLLM-style `{"error": ...}` chunk and stop.
    stream_error_after: int | None = None
    #: Serve `GET /metrics`: vLLM's usage gauges from what is in flight (KV usage 5 % per
    #: request in flight), and the generated-tokens counter.
    metrics: bool = False
    #: Like `vllm serve --api-key`: /v1 routes answer 401 without `Authorization: Bearer KEY`.
    api_key: str | None = None
    #: LoRA adapters served from the start (`--lora-modules NAME=PATH`), listed by
    #: /v1/models with the base model as parent; a completion for an unknown model is a 404.
    lora_modules: tuple[str, ...] = ()
    #: Like VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: /v1/load_lora_adapter and
    #: /v1/unload_lora_adapter exist (404 otherwise, like vLLM without it).
    runtime_lora: bool = False
    #: Export vLLM's `vllm:spec_decode_*` counters (one draft of 3 tokens per 4 tokens
    #: written, 2 of them accepted), like a server started with --speculative-config.
    spec_decode: bool = False


@dataclass
class FakeStats:
    """What the fake saw; read it after a run (or from `GET /fake/stats`)."""

    completions_started: int = 0
    completions_finished: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    chat_requests: int = 0
    #: How late tokens were written versus their schedule (sum and max, seconds).
    lateness_sum_s: float = 0.0
    lateness_max_s: float = 0.0
    tokens_written: int = 0
    auth_headers: list[str] = field(default_factory=list)
    last_payload: dict | None = None
    #: Completions per requested model name (base or adapter).
    by_model: dict[str, int] = field(default_factory=dict)


def _token_text(k: int) -> str:
    """Text of output token k: one short word, so every chunk has non-empty text."""
    return f" t{k}"


class FakeApp:
    """The aiohttp application and its state."""

    def __init__(self, config: FakeConfig):
        self.config = config
        self.stats = FakeStats()
        self.dead = False
        self._transports: set[asyncio.BaseTransport] = set()
        self._listeners: list = []  # aiohttp sites, closed on death
        self.adapters: dict[str, str] = {name: f"/adapters/{name}" for name in config.lora_modules}
        self.running_adapters: list[str] = []

    # ---- helpers -------------------------------------------------------------------

    def _note_request(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization")
        if auth:
            self.stats.auth_headers.append(auth)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """vLLM's answer to a /v1 call without the server's API key (docs/facts.md)."""
        key = self.config.api_key
        if key and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    def _refuse_if_dead(self, request: web.Request) -> None:
        """A dead server drops connections that the client kept alive."""
        if self.dead:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("fake server is dead")

    async def _die(self) -> None:
        """Stop listening and abort every open connection, like a crashed process."""
        self.dead = True
        for site in self._listeners:
            await site.stop()
        for transport in list(self._transports):
            transport.abort()

    def _prompt_len(self, prompt) -> int:
        if isinstance(prompt, list):
            return len(prompt)
        return len(str(prompt).split())

    # ---- handlers ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        self._refuse_if_dead(request)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        self._refuse_if_dead(request)
        self._note_request(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        cfg = self.config
        card = {"id": cfg.model, "object": "model", "root": cfg.model, "parent": None,
                "owned_by": "vllm", "max_model_len": cfg.max_model_len}
        adapters = [{"id": name, "object": "model", "root": path, "parent": cfg.model,
                     "owned_by": "vllm", "max_model_len": None}
                    for name, path in self.adapters.items()]
        return web.json_response({"object": "list", "data": [card, *adapters]})

    async def load_lora(self, request: web.Request) -> web.Response:
        """vLLM's runtime LoRA loading: 400 when the name is taken, else 200 with a line."""
        self._refuse_if_dead(request)
        if not self.config.runtime_lora:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        name = body.get("lora_name", "")
        if name in self.adapters:
            return web.json_response({"error": {"message": f"The lora adapter '{name}' has "
                                                "already been loaded.", "code": 400}}, status=400)
        self.adapters[name] = body.get("lora_path", "")
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        self._refuse_if_dead(request)
        if not self.config.runtime_lora:
            return web.json_response({"detail": "Not Found"}, status=404)
        name = (await request.json()).get("lora_name", "")
        if self.adapters.pop(name, None) is None:
            return web.json_response({"error": {"message": f"The lora adapter '{name}' cannot "
                                                "be found.", "code": 404}}, status=404)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def tokenize(self, request: web.Request) -> web.Response:
        self._refuse_if_dead(request)
        self._note_request(request)
        body = await request.json()
        words = str(body.get("prompt", "")).split()
        # Stable ids (crc32, not hash()) so tests are deterministic across processes.
        tokens = [2 + zlib.crc32(w.encode()) % (self.config.vocab_size - 2) for w in words]
        if body.get("add_special_tokens", True):
            tokens = [1, *tokens]
        return web.json_response({"count": len(tokens), "max_model_len": self.config.max_model_len,
                                  "tokens": tokens, "token_strs": None})

    async def metrics(self, request: web.Request) -> web.Response:
        self._refuse_if_dead(request)
        if not self.config.metrics:
            return web.Response(status=404)
        labels = f'{{engine="0",model_name="{self.config.model}"}}'
        running = self.stats.in_flight
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{labels} {running}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{labels} 0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{labels} {min(1.0, 0.05 * running)}",
            "# TYPE vllm:generation_tokens counter",
            f"vllm:generation_tokens_total{labels} {self.stats.tokens_written}",
        ]
        if self.config.spec_decode:
            drafts = self.stats.tokens_written // 4
            for name, value in (("drafts", drafts), ("draft_tokens", 3 * drafts),
                                ("accepted_tokens", 2 * drafts)):
                lines += [f"# TYPE vllm:spec_decode_num_{name} counter",
                          f"vllm:spec_decode_num_{name}_total{labels} {value}"]
        if self.config.lora_modules or self.config.runtime_lora:
            running = ",".join(sorted(set(self.running_adapters)))
            lines += ["# TYPE vllm:lora_requests_info gauge",
                      f'vllm:lora_requests_info{{max_lora="2",running_lora_adapters="{running}",'
                      f'waiting_lora_adapters=""}} {time.time()}']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def fake_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self._refuse_if_dead(request)
        self._note_request(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        t_recv = time.perf_counter()
        body = await request.json()
        self.stats.chat_requests += 1
        self.stats.last_payload = body
        out = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        prompt_len = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        if body.get("stream"):
            return await self._stream(request, body, t_recv, out, prompt_len, chat=True)
        done_at = t_recv + self.config.first_token_s + (out - 1) * self.config.itl_s
        await asyncio.sleep(max(0.0, done_at - time.perf_counter()))
        text = "".join(_token_text(k) for k in range(out))
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": self.config.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_len, "completion_tokens": out,
                      "total_tokens": prompt_len + out},
        })

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self._refuse_if_dead(request)
        self._note_request(request)
        t_recv = time.perf_counter()
        cfg, stats = self.config, self.stats
        index = stats.completions_started
        stats.completions_started += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        if request.transport is not None:
            self._transports.add(request.transport)
        model: str | None = None
        try:
            if (denied := self._unauthorized(request)) is not None:
                return denied
            body = await request.json()
            stats.last_payload = body
            model = str(body.get("model", cfg.model))
            if (cfg.lora_modules or cfg.runtime_lora) and model != cfg.model \
                    and model not in self.adapters:
                return web.json_response({"error": {"message": f"The model `{model}` does not "
                                                    "exist.", "code": 404}}, status=404)
            stats.by_model[model] = stats.by_model.get(model, 0) + 1
            if model in self.adapters:
                self.running_adapters.append(model)
            if cfg.hang_all or index in cfg.hang_indices:
                await asyncio.Event().wait()  # never set: the client must time out
            if index in cfg.http_error_indices:
                return web.json_response({"error": {"message": "injected failure", "code": 500}},
                                         status=500)
            out = int(body.get("max_tokens") or 16)
            prompt_len = self._prompt_len(body.get("prompt", ""))
            if body.get("stream"):
                resp = await self._stream(request, body, t_recv, out, prompt_len)
            else:
                resp = await self._whole(body, t_recv, out, prompt_len)
            stats.completions_finished += 1
            if cfg.die_after is not None and stats.completions_finished >= cfg.die_after:
                asyncio.get_running_loop().create_task(self._die())
            return resp
        finally:
            if model in self.running_adapters:
                self.running_adapters.remove(model)
            stats.in_flight -= 1
            if request.transport is not None:
                self._transports.discard(request.transport)

    async def _wait_until(self, target: float) -> None:
        """Sleep to an absolute perf_counter time and note how late we woke."""
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = time.perf_counter() - target
        self.stats.lateness_sum_s += max(0.0, late)
        self.stats.lateness_max_s = max(self.stats.lateness_max_s, late)
        self.stats.tokens_written += 1

    async def _stream(self, request, body, t_recv, out, prompt_len,
                      chat: bool = False) -> web.StreamResponse:
        cfg = self.config
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-fake" if chat else "cmpl-fake",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": cfg.model}
        for k in range(out):
            if cfg.stream_error_after is not None and k >= cfg.stream_error_after:
                err = {"error": {"message": "injected engine error", "type": "InternalServerError",
                                 "code": 500}}
                await resp.write(f"data: {json.dumps(err)}\n\n".encode())
                break
            await self._wait_until(t_recv + cfg.first_token_s + k * cfg.itl_s)
            if chat and k == 0:  # vLLM sends the role, without text, with the first output
                role = {"index": 0, "delta": {"role": "assistant", "content": ""},
                        "logprobs": None, "finish_reason": None}
                await resp.write(f"data: {json.dumps({**base, 'choices': [role]})}\n\n".encode())
            text = "" if k in cfg.empty_text_tokens else _token_text(k)
            finish = "length" if k == out - 1 else None
            choice = ({"index": 0, "delta": {"content": text}, "logprobs": None,
                       "finish_reason": finish} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                       "stop_reason": None})
            await resp.write(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt_len, "total_tokens": prompt_len + out,
                     "completion_tokens": out}
            await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                             .encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _whole(self, body, t_recv, out, prompt_len) -> web.Response:
        await self._wait_until(t_recv + self.config.first_token_s + (out - 1) * self.config.itl_s)
        text = "".join(_token_text(k) for k in range(out))
        return web.json_response({
            "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": self.config.model,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_len, "completion_tokens": out,
                      "total_tokens": prompt_len + out},
        })

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/fake/stats", self.fake_stats)
        app.router.add_post("/v1/load_lora_adapter", self.load_lora)
        app.router.add_post("/v1/unload_lora_adapter", self.unload_lora)
        return app


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeServer:
    """The fake in a background thread with its own event loop, on a free port.

    Use as a context manager: `with FakeServer(FakeConfig(...)) as fake: fake.base_url`.
    """

    def __init__(self, config: FakeConfig | None = None, port: int | None = None):
        self.config = config or FakeConfig()
        self.app = FakeApp(self.config)
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> FakeStats:
        return self.app.stats

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(self.app.make_app(), handle_signals=False,
                                         shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.app._listeners.append(site)
        except BaseException as err:
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def start(self) -> FakeServer:
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"fake server failed to start: {self._error}")
        return self

    def kill(self) -> None:
        """Make the server die now (from any thread)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.app._die(), self._loop).result(5)

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_subprocess(config: FakeConfig, port: int | None = None,
                     ready_timeout_s: float = 15.0) -> tuple[subprocess.Popen, str]:
    """Run the fake in its own process (its own CPU core and GIL); returns (proc, base_url).

    Only timing and model options are passed on. The caller terminates `proc`.
    """
    import requests

    port = port or free_port()
    argv = [sys.executable, os.path.abspath(__file__), "--port", str(port),
            "--first-token-ms", repr(config.first_token_s * 1000),
            "--itl-ms", repr(config.itl_s * 1000), "--model", config.model]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake server exited with code {proc.returncode}")
        try:
            if requests.get(base_url + "/health", timeout=1).status_code == 200:
                return proc, base_url
        except requests.RequestException:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("fake server did not become ready")


def main(argv: list[str] | None = None) -> None:
    """Serve the fake in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--die-after", type=int, default=None)
    args = parser.parse_args(argv)
    config = FakeConfig(first_token_s=args.first_token_ms / 1000, itl_s=args.itl_ms / 1000,
                        model=args.model, die_after=args.die_after)
    app = FakeApp(config)
    port = args.port or free_port()
    print(f"fake vLLM server on http://127.0.0.1:{port}", flush=True)

    async def serve() -> None:
        runner = web.AppRunner(app.make_app(), shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        app._listeners.append(site)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
