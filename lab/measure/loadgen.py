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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import numpy as np
import requests

from lab.core.errors import ConfigError
from lab.core.net import api_root
from lab.measure import stats
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
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)


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
    #: Seed for `lab.measure.prompts.synthetic_prompts` and for the arrival times.
    seed: int = 0
    #: Arrivals (requests/s): inf sends every request at once (the concurrency cap holds
    #: them back); a finite rate spaces them as `vllm bench serve --request-rate` does.
    request_rate: float = math.inf
    #: Gamma shape of the gaps between arrivals (`--burstiness`): 1 is Poisson, < 1
    #: burstier, > 1 more even.
    burstiness: float = 1.0


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
            f"max_model_len {max_model_len}"
        )
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
    if not w.request_rate > 0:
        raise ConfigError(f"request_rate must be > 0 (inf: all at once), got {w.request_rate}")
    if not w.burstiness > 0:
        raise ConfigError(f"burstiness must be > 0, got {w.burstiness}")
    if not math.isinf(w.request_rate) and w.num_requests is None:
        raise ConfigError("a request rate needs num_requests (a timed level sends at once)")


def arrival_offsets(
    n: int, request_rate: float, burstiness: float = 1.0, seed: int = 0
) -> list[float]:
    """When each of `n` requests arrives, in seconds from the start, as `vllm bench serve`
    draws them (`get_request` in vllm/benchmarks/serve.py): gaps from a gamma distribution
    of shape `burstiness` and scale 1 / (rate × burstiness) (Poisson for burstiness 1),
    summed, then scaled so the last arrival is at n / rate exactly. An infinite rate: all 0.
    """
    if n <= 0:
        return []
    if math.isinf(request_rate):
        return [0.0] * n
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / request_rate)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=n)
    offsets = np.cumsum(gaps)
    if offsets[-1] > 0:
        offsets = offsets * ((n / request_rate) / offsets[-1])
    return [float(x) for x in offsets]


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


def _stale_connection(err: BaseException, rec: RequestRecord) -> bool:
    """A failure on a reused connection before any reply: the server had closed it (its
    keep-alive ran out while a busy client read the previous reply late). A refused connect
    (ClientConnectorError: no server) is not one. bench/keepalive_race.py reproduces it."""
    if rec.http_status is not None or isinstance(err, aiohttp.ClientConnectorError):
        return False
    return isinstance(err, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))


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

    def __init__(
        self,
        base_url: str,
        model: str,
        workload: Workload,
        level: str,
        api_key: str | None,
        on_record,
        on_progress,
    ):
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

    def new_record(
        self, idx: int, warmup: bool, prompt: Sequence[int], label: str | None = None
    ) -> RequestRecord:
        return RequestRecord(
            idx=idx,
            level=label or self.level,
            concurrency=self.w.concurrency,
            warmup=warmup,
            input_tokens=len(prompt),
        )

    def finish(self, rec: RequestRecord) -> None:
        """Keep the record and hand it to the caller at once (crash-safe logging)."""
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)
        if not rec.warmup:
            self.done_measured += 1
            if self.on_progress is not None:
                self.on_progress(self.done_measured, self.total_measured)

    async def send(
        self,
        session: aiohttp.ClientSession,
        rec: RequestRecord,
        prompt: Sequence[int],
        output_len: int | None = None,
    ) -> None:
        """POST one streamed completion and fill `rec` in place. Never raises for faults."""
        payload = {
            "model": self.model,
            "prompt": list(prompt),
            "max_tokens": output_len or self.w.output_len,
            "temperature": 0.0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timeout = aiohttp.ClientTimeout(total=self.w.timeout_s)
        try:
            # A kept-alive connection the server closed meanwhile fails before any reply:
            # the request never reached the server, so it is sent again. Each stale
            # connection is dropped as it fails; the pool holds at most C of them.
            for tries_left in range(self.w.concurrency, -1, -1):
                if not await self._attempt(
                    session, rec, payload, timeout, retry_stale=tries_left > 0
                ):
                    break
        finally:
            if not rec.warmup:
                now = time.perf_counter()
                self.last_finish = max(self.last_finish or now, now)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        rec: RequestRecord,
        payload: dict[str, Any],
        timeout: aiohttp.ClientTimeout,
        retry_stale: bool,
    ) -> bool:
        """One POST; fills `rec`. True when it failed on a stale kept-alive connection before
        any reply (and `retry_stale`): the caller sends it again."""
        st = time.perf_counter()
        rec.sent_at_s = st - self.t0
        if not rec.warmup and self.first_send is None:
            self.first_send = st
        timing = StreamTiming(st)
        try:
            async with session.post(
                self.url, json=payload, headers=self.headers, timeout=timeout
            ) as resp:
                rec.http_status = resp.status
                if resp.status != 200:
                    body = await resp.text()
                    rec.error = _one_line(f"HTTP {resp.status}: {body}")
                    self.conn_failures_in_a_row = 0
                    return False
                async for data in apayloads(resp.content.iter_any()):
                    timing.on_data(data)
            self.conn_failures_in_a_row = 0
            _fill(rec, timing)
        except asyncio.TimeoutError:
            rec.error = TIMEOUT_ERROR
        except _CONNECTION_ERRORS as err:
            if retry_stale and _stale_connection(err, rec):
                return True
            self.conn_failures_in_a_row += 1
            rec.error = _one_line(err)
        except (ValueError, aiohttp.ClientError) as err:  # bad JSON, bad response
            rec.error = _one_line(err)
        return False

    async def run_phase(
        self,
        session: aiohttp.ClientSession,
        prompts: Sequence[Sequence[int]],
        count: int | None,
        duration_s: float | None,
        warmup: bool,
        output_lens: Sequence[int] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        """Send `count` requests (or until `duration_s` passes), at most C at a time.

        A slot is taken before a request's task is created, so at most C requests exist in
        flight. queue_s is measured from the request's arrival: its arrival time for a fixed
        count (at once, as in `vllm bench serve`, or at the workload's request rate), or the
        moment the previous request was launched for a timed phase. `output_lens` and
        `labels` (parallel to `prompts`) give a request its own max_tokens and record label.
        """
        sem = asyncio.Semaphore(self.w.concurrency)
        tasks: set[asyncio.Task] = set()
        phase_start = time.perf_counter()
        deadline = phase_start + duration_s if duration_s is not None else None
        indices = range(count) if count is not None else itertools.count()
        rate = math.inf if warmup else self.w.request_rate
        offsets = (
            arrival_offsets(count, rate, self.w.burstiness, self.w.seed)
            if count is not None
            else []
        )
        for idx in indices:
            if count is not None:
                arrival = phase_start + offsets[idx]
                if arrival > time.perf_counter():
                    await asyncio.sleep(arrival - time.perf_counter())
            else:
                arrival = time.perf_counter()
            await sem.acquire()
            if deadline is not None and time.perf_counter() >= deadline:
                sem.release()
                break
            prompt = prompts[idx % len(prompts)]
            rec = self.new_record(
                idx, warmup, prompt, labels[idx % len(labels)] if labels else None
            )
            out_len = output_lens[idx % len(output_lens)] if output_lens else None
            rec.queue_s = max(0.0, time.perf_counter() - arrival)
            if self.unreachable:
                sem.release()
                if count is None:  # a timed phase has no list of unsent requests to record
                    break
                self._mark_not_sent(rec)
                continue
            task = asyncio.create_task(self._guarded(session, rec, prompt, sem, out_len))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _mark_not_sent(self, rec: RequestRecord) -> None:
        rec.queue_s = None
        rec.error = NOT_SENT_ERROR
        self.finish(rec)

    async def _guarded(self, session, rec, prompt, sem, output_len=None) -> None:
        try:
            if self.unreachable:  # the server died while this one waited to start
                self._mark_not_sent(rec)
                return
            await self.send(session, rec, prompt, output_len)
            self.finish(rec)
        finally:
            sem.release()


async def run_level(
    base_url: str,
    model: str,
    prompts: Sequence[Sequence[int]],
    workload: Workload,
    *,
    api_key: str | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    level: str | None = None,
    output_lens: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    goodput: dict[str, float] | None = None,
) -> LevelResult:
    """Run one level: warm-up requests, then the measured ones, capped at C in flight.

    Prompts are used in order: the first `warmup_requests` for the warm-up, the rest for
    the measured requests (cycled if too few; see `prompts_needed`). `on_record(rec)` is
    called as each request finishes, warm-ups included (they carry `warmup=True`);
    `on_progress(done, total)` counts measured requests (`total` is None for a timed
    level). `level` labels the records (default `c<concurrency>`). `output_lens` and
    `labels`, parallel to `prompts`, give each request its own max_tokens and record label
    (a mixed load); `goodput` ({"ttft": ms, "tpot": ms, "e2el": ms}) adds
    `request_goodput` to the summary (lab.measure.stats.goodput). Raises ConfigError for
    a bad workload; never raises for server faults.
    """
    validate_workload(workload)
    if not prompts:
        raise ConfigError("no prompts given")
    lvl = _Level(
        base_url,
        model,
        workload,
        level or f"c{workload.concurrency}",
        api_key,
        on_record,
        on_progress,
    )
    connector = aiohttp.TCPConnector(
        limit=workload.concurrency, keepalive_timeout=CLIENT_KEEPALIVE_S
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        n_warm = workload.warmup_requests
        if n_warm:
            await lvl.run_phase(
                session,
                prompts[:n_warm],
                n_warm,
                None,
                warmup=True,
                output_lens=output_lens[:n_warm] if output_lens else None,
                labels=labels[:n_warm] if labels else None,
            )
        rest = prompts[n_warm:]
        measured_prompts = rest or prompts
        await lvl.run_phase(
            session,
            measured_prompts,
            workload.num_requests,
            workload.duration_s,
            warmup=False,
            output_lens=(output_lens[n_warm:] if rest else output_lens) if output_lens else None,
            labels=(labels[n_warm:] if rest else labels) if labels else None,
        )
    if lvl.first_send is not None and lvl.last_finish is not None:
        wall_s = lvl.last_finish - lvl.first_send
    else:
        wall_s = 0.0
    summary = summarize(lvl.records, wall_s)
    if goodput:
        summary["request_goodput"] = stats.goodput(lvl.records, goodput, wall_s)
    return LevelResult(records=lvl.records, wall_s=wall_s, summary=summary)


def run_level_sync(
    base_url: str, model: str, prompts: Sequence[Sequence[int]], workload: Workload, **kwargs: Any
) -> LevelResult:
    """`run_level` for synchronous callers (tasks, the step runner)."""
    return asyncio.run(run_level(base_url, model, prompts, workload, **kwargs))


def sequential_chat(
    base_url: str,
    model: str,
    prompt: str,
    n: int,
    max_tokens: int,
    api_key: str | None = None,
    on_record: Callable[[RequestRecord], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[RequestRecord]:
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
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    records: list[RequestRecord] = []
    conn_failures_in_a_row = 0
    t0 = time.perf_counter()
    with requests.Session() as session:
        for idx in range(n):
            rec = RequestRecord(
                idx=idx, level="sequential", concurrency=1, warmup=False, queue_s=0.0
            )
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
