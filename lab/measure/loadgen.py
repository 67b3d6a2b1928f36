"""The load generator: streamed /v1/completions under a concurrency cap, timed like vLLM.

Timing definitions follow `vllm bench serve` (`vllm/benchmarks/serve.py` and
`vllm/benchmarks/lib/endpoint_request_func.py`, vLLM 0.32) so the numbers are comparable:
- the clock starts just before the POST (time spent waiting for a concurrency slot is
  `queue_s`, kept apart and never added to TTFT);
- TTFT: arrival of the first SSE message that has `choices` (vLLM counts it even when its
  text is empty, e.g. a special token or a partial UTF-8 character, because it is a token);
- ITL: the gaps between successive `choices` messages;
- E2EL: arrival of the last `choices` message;
- TPOT: (E2EL - TTFT) / (output_tokens - 1), only for output_tokens > 1;
- output tokens: `usage.completion_tokens` of the final usage chunk.
The stream is read and timed by `lab.vllm.sse` (the one SSE reader, shared with the
`api-test` step's chat stream).

Server faults never raise out of `run_level`: a timeout is a failed record with
error "timeout"; a dead server fails the in-flight requests, and after
`MAX_CONSECUTIVE_CONN_FAILURES` connection failures in a row the requests not yet sent are
recorded as failed ("not sent: server unreachable") instead of being fired at a dead port.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import requests

from lab.core.errors import ConfigError
from lab.core.net import api_root
from lab.measure.stats import summarize
from lab.vllm import api
from lab.vllm.sse import StreamTiming, apayloads

#: Connection failures in a row after which the server is taken to be gone.
MAX_CONSECUTIVE_CONN_FAILURES = 3
#: Per-request timeout when the caller does not set one (seconds).
DEFAULT_TIMEOUT_S = 600.0
#: The error text of a request skipped because the server stopped answering.
NOT_SENT_ERROR = "not sent: server unreachable"
#: How long an idle pooled connection is kept (s): below the server's HTTP keep-alive, or the
#: client may send a request on a socket the server has just closed, which fails as
#: "ServerDisconnectedError"/"Connection reset" without reaching the server (its access log
#: shows only 200 OK). vLLM's default keep-alive is uvicorn's 5 s; the lab starts its servers
#: with 60 s (lab.vllm.launch.SERVER_KEEPALIVE_S), which also covers a client that reads the
#: end of a reply seconds late on a busy machine (the server's keep-alive clock starts when it
#: wrote the reply, not when we read it).
CLIENT_KEEPALIVE_S = 4.0
#: The error text of a request that ran past its timeout.
TIMEOUT_ERROR = "timeout"
#: Longest error text kept in a record (a response body can be large).
MAX_ERROR_CHARS = 300

# Exceptions that mean "the server is not there any more" rather than "it answered badly".
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                      ConnectionError)


@dataclass
class RequestRecord:
    """One request's outcome and timings (seconds). Written to the logbook as it finishes."""

    idx: int
    level: str
    concurrency: int
    warmup: bool
    ok: bool = False
    error: str | None = None
    http_status: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: Time spent waiting for a concurrency slot; not part of TTFT or E2EL.
    queue_s: float | None = None
    #: When the POST was sent, as an offset from the start of the level (warm-up included).
    sent_at_s: float | None = None
    ttft_s: float | None = None
    e2el_s: float | None = None
    tpot_s: float | None = None
    itls_s: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for the logbook)."""
        return asdict(self)


@dataclass
class Workload:
    """One level of load: fixed-length prompts, a concurrency cap and a stopping rule.

    At least one of `num_requests` and `duration_s` is set; with both, whichever comes first
    ends the level. `duration_s` bounds the time new requests are started; in-flight ones
    are allowed to finish.
    """

    input_len: int
    output_len: int
    concurrency: int
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: Seed for `lab.measure.prompts.synthetic_prompts`; run_level itself draws nothing at random.
    seed: int = 0


@dataclass
class LevelResult:
    """All records of a level (warm-up included), its wall time and its summary."""

    records: list[RequestRecord]
    wall_s: float
    summary: dict[str, Any]


def validate_workload(w: Workload, max_model_len: int | None = None) -> None:
    """Raise ConfigError with one clear line when the workload cannot run."""
    if w.concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {w.concurrency}")
    if w.input_len < 1:
        raise ConfigError(f"input_len must be >= 1 token, got {w.input_len}")
    if w.output_len < 1:
        raise ConfigError(f"output_len must be >= 1 token, got {w.output_len}")
    if max_model_len is not None and w.input_len + w.output_len > max_model_len:
        raise ConfigError(
            f"input_len + output_len = {w.input_len + w.output_len} exceeds the model's "
            f"max_model_len {max_model_len}")
    if w.num_requests is None and w.duration_s is None:
        raise ConfigError("set num_requests or duration_s (neither is set)")
    if w.num_requests is not None and w.num_requests < 1:
        raise ConfigError(f"num_requests must be >= 1, got {w.num_requests}")
    if w.duration_s is not None and w.duration_s <= 0:
        raise ConfigError(f"duration_s must be > 0, got {w.duration_s}")
    if w.warmup_requests < 0:
        raise ConfigError(f"warmup_requests must be >= 0, got {w.warmup_requests}")
    if w.timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {w.timeout_s}")


def prompts_needed(w: Workload) -> int | None:
    """How many distinct prompts a level uses (warm-up first), or None for a timed level.

    Give `run_level` at least this many so no prompt repeats (a repeat hits the prefix cache).
    """
    if w.num_requests is None:
        return None
    return w.warmup_requests + w.num_requests


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **api.headers(api_key)}


def _one_line(err: BaseException | str) -> str:
    """A short one-line error text for a record."""
    text = err if isinstance(err, str) else f"{type(err).__name__}: {err}".rstrip(": ")
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def _fill(rec: RequestRecord, timing: StreamTiming) -> None:
    """Copy a finished stream's outcome and timings into the record."""
    rec.ttft_s, rec.itls_s = timing.ttft_s, timing.itls_s
    if timing.prompt_tokens is not None:
        rec.input_tokens = timing.prompt_tokens
    if timing.error is not None:
        rec.error = _one_line(f"stream error: {timing.error}")
        return
    if timing.choice_chunks == 0:
        rec.error = "no token received"
        return
    rec.ok = True
    rec.e2el_s = timing.e2el_s
    rec.output_tokens = timing.output_tokens()
    rec.tpot_s = timing.tpot_s()


class _Level:
    """State shared by the requests of one `run_level` call."""

    def __init__(self, base_url: str, model: str, workload: Workload, level: str,
                 api_key: str | None, on_record, on_progress):
        self.url = api_root(base_url) + "/v1/completions"
        self.model = model
        self.w = workload
        self.level = level
        self.headers = _headers(api_key)
        self.on_record = on_record
        self.on_progress = on_progress
        self.t0 = time.perf_counter()
        self.records: list[RequestRecord] = []
        self.conn_failures_in_a_row = 0
        self.done_measured = 0
        self.total_measured = workload.num_requests
        #: perf_counter times of measured sends and finishes, for the wall time.
        self.first_send: float | None = None
        self.last_finish: float | None = None

    @property
    def unreachable(self) -> bool:
        return self.conn_failures_in_a_row >= MAX_CONSECUTIVE_CONN_FAILURES

    def new_record(self, idx: int, warmup: bool, prompt: Sequence[int]) -> RequestRecord:
        return RequestRecord(idx=idx, level=self.level, concurrency=self.w.concurrency,
                             warmup=warmup, input_tokens=len(prompt))

    def finish(self, rec: RequestRecord) -> None:
        """Keep the record and hand it to the caller at once (crash-safe logging)."""
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        if not rec.warmup:
            self.done_measured += 1
            if self.on_progress is not None:
                self.on_progress(self.done_measured, self.total_measured)

    async def send(self, session: aiohttp.ClientSession, rec: RequestRecord,
                   prompt: Sequence[int]) -> None:
        """POST one streamed completion and fill `rec` in place. Never raises for faults."""
        payload = {
            "model": self.model,
            "prompt": list(prompt),
            "max_tokens": self.w.output_len,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timeout = aiohttp.ClientTimeout(total=self.w.timeout_s)
        st = time.perf_counter()
        rec.sent_at_s = st - self.t0
        if not rec.warmup and self.first_send is None:
            self.first_send = st
        timing = StreamTiming(st)
        try:
            async with session.post(self.url, json=payload, headers=self.headers,
                                    timeout=timeout) as resp:
                rec.http_status = resp.status
                if resp.status != 200:
                    body = await resp.text()
                    rec.error = _one_line(f"HTTP {resp.status}: {body}")
                    self.conn_failures_in_a_row = 0
                    return
                async for data in apayloads(resp.content.iter_any()):
                    timing.on_data(data)
            self.conn_failures_in_a_row = 0
            _fill(rec, timing)
        except asyncio.TimeoutError:
            rec.error = TIMEOUT_ERROR
        except _CONNECTION_ERRORS as err:
            self.conn_failures_in_a_row += 1
            rec.error = _one_line(err)
        except (ValueError, aiohttp.ClientError) as err:  # bad JSON, bad response
            rec.error = _one_line(err)
        finally:
            if not rec.warmup:
                now = time.perf_counter()
                self.last_finish = max(self.last_finish or now, now)

    async def run_phase(self, session: aiohttp.ClientSession, prompts: Sequence[Sequence[int]],
                        count: int | None, duration_s: float | None, warmup: bool) -> None:
        """Send `count` requests (or until `duration_s` passes), at most C at a time.

        A slot is taken before a request's task is created, so at most C requests exist in
        flight. queue_s is measured from the request's arrival: the phase start for a fixed
        count (all requests are queued at once, as in `vllm bench serve`), or the moment the
        previous request was launched for a timed phase.
        """
        sem = asyncio.Semaphore(self.w.concurrency)
        tasks: set[asyncio.Task] = set()
        phase_start = time.perf_counter()
        deadline = phase_start + duration_s if duration_s is not None else None
        indices = range(count) if count is not None else itertools.count()
        for idx in indices:
            arrival = phase_start if count is not None else time.perf_counter()
            await sem.acquire()
            if deadline is not None and time.perf_counter() >= deadline:
                sem.release()
                break
            prompt = prompts[idx % len(prompts)]
            rec = self.new_record(idx, warmup, prompt)
            rec.queue_s = time.perf_counter() - arrival
            if self.unreachable:
                sem.release()
                if count is None:  # a timed phase has no list of unsent requests to record
                    break
                self._mark_not_sent(rec)
                continue
            task = asyncio.create_task(self._guarded(session, rec, prompt, sem))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _mark_not_sent(self, rec: RequestRecord) -> None:
        rec.queue_s = None
        rec.error = NOT_SENT_ERROR
        self.finish(rec)

    async def _guarded(self, session, rec, prompt, sem) -> None:
        try:
            if self.unreachable:  # the server died while this one waited to start
                self._mark_not_sent(rec)
                return
            await self.send(session, rec, prompt)
            self.finish(rec)
        finally:
            sem.release()


async def run_level(base_url: str, model: str, prompts: Sequence[Sequence[int]],
                    workload: Workload, *, api_key: str | None = None,
                    on_record: Callable[[RequestRecord], None] | None = None,
                    on_progress: Callable[[int, int | None], None] | None = None,
                    level: str | None = None) -> LevelResult:
    """Run one level: warm-up requests, then the measured ones, capped at C in flight.

    Prompts are used in order: the first `warmup_requests` for the warm-up, the rest for
    the measured requests (cycled if too few; see `prompts_needed`). `on_record(rec)` is
    called as each request finishes, warm-ups included (they carry `warmup=True`);
    `on_progress(done, total)` counts measured requests (`total` is None for a timed
    level). `level` labels the records (default `c<concurrency>`). Raises ConfigError for
    a bad workload; never raises for server faults.
    """
    validate_workload(workload)
    if not prompts:
        raise ConfigError("no prompts given")
    lvl = _Level(base_url, model, workload, level or f"c{workload.concurrency}", api_key,
                 on_record, on_progress)
    connector = aiohttp.TCPConnector(limit=workload.concurrency, keepalive_timeout=CLIENT_KEEPALIVE_S)
    async with aiohttp.ClientSession(connector=connector) as session:
        n_warm = workload.warmup_requests
        if n_warm:
            await lvl.run_phase(session, prompts[:n_warm], n_warm, None, warmup=True)
        measured_prompts = prompts[n_warm:] or prompts
        await lvl.run_phase(session, measured_prompts, workload.num_requests,
                            workload.duration_s, warmup=False)
    if lvl.first_send is not None and lvl.last_finish is not None:
        wall_s = lvl.last_finish - lvl.first_send
    else:
        wall_s = 0.0
    return LevelResult(records=lvl.records, wall_s=wall_s, summary=summarize(lvl.records, wall_s))


def run_level_sync(base_url: str, model: str, prompts: Sequence[Sequence[int]],
                   workload: Workload, **kwargs: Any) -> LevelResult:
    """`run_level` for synchronous callers (tasks, the step runner)."""
    return asyncio.run(run_level(base_url, model, prompts, workload, **kwargs))


def sequential_chat(base_url: str, model: str, prompt: str, n: int, max_tokens: int,
                    api_key: str | None = None,
                    on_record: Callable[[RequestRecord], None] | None = None,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> list[RequestRecord]:
    """The seed's latency loop: `n` sequential, non-streamed /v1/chat/completions.

    E2EL runs from just before the POST to the full response; output tokens come from
    `usage.completion_tokens`. There is no TTFT (nothing is streamed). Failures are
    recorded, not raised; after repeated connection failures the rest are "not sent".
    """
    if n < 1:
        raise ConfigError(f"number of requests must be >= 1, got {n}")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    url = api_root(base_url) + "/v1/chat/completions"
    headers = _headers(api_key)
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
               "max_tokens": max_tokens, "temperature": 0.0}
    records: list[RequestRecord] = []
    conn_failures_in_a_row = 0
    t0 = time.perf_counter()
    with requests.Session() as session:
        for idx in range(n):
            rec = RequestRecord(idx=idx, level="sequential", concurrency=1, warmup=False,
                                queue_s=0.0)
            if conn_failures_in_a_row >= MAX_CONSECUTIVE_CONN_FAILURES:
                rec.queue_s = None
                rec.error = NOT_SENT_ERROR
            else:
                st = time.perf_counter()
                rec.sent_at_s = st - t0
                try:
                    resp = session.post(url, json=payload, headers=headers, timeout=timeout_s)
                    elapsed = time.perf_counter() - st
                    conn_failures_in_a_row = 0
                    rec.http_status = resp.status_code
                    if resp.status_code != 200:
                        rec.error = _one_line(f"HTTP {resp.status_code}: {resp.text}")
                    else:
                        usage = resp.json().get("usage") or {}
                        rec.input_tokens = usage.get("prompt_tokens")
                        rec.output_tokens = usage.get("completion_tokens")
                        rec.e2el_s = elapsed
                        rec.ok = True
                except requests.Timeout:
                    rec.error = TIMEOUT_ERROR
                except requests.RequestException as err:  # refused, reset, cut mid-body
                    conn_failures_in_a_row += 1
                    rec.error = _one_line(err)
                except ValueError as err:  # the body was not JSON
                    rec.error = _one_line(f"bad response: {err}")
            records.append(rec)
            if on_record is not None:
                on_record(rec)
    return records
