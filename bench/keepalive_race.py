"""Why a load on a busy machine can lose a few requests that never reach the server (issue 9:
"2 requests failed", the server's access log showing only 200 OK), and what fixes it.

uvicorn (vLLM's HTTP server) closes a kept-alive connection `timeout_keep_alive` seconds after
it has *written* the last reply on it (vLLM: VLLM_HTTP_TIMEOUT_KEEP_ALIVE, default 5 s). A
client that is starved of CPU reads the end of a reply late; it then hands the connection
back to its pool and sends the next request on it at once, onto a socket the server has
already closed: the request fails on the client (ServerDisconnectedError / connection reset)
without reaching the server. The client's own pool keep-alive cannot help (to the client the
connection was idle for microseconds); a server keep-alive longer than the client's lag does.

This script reproduces it without vLLM: a minimal ASGI app that streams vLLM-shaped SSE
completions, served by uvicorn (from the vLLM env, which has it) with a given keep-alive, and
this project's load generator (lab.measure.loadgen) whose event loop is blocked for `--lag`
seconds once mid-load (as a starved client is). It prints the failed requests by error for
each server keep-alive.

    python bench/keepalive_race.py --python .lab/venv-cpu/bin/python --keepalive 5 60 --lag 6 [--no-retry]

The client now sends a request that failed on a stale connection again (lab.measure.loadgen
`_stale_connection`), and the lab starts vLLM with a 60 s keep-alive; `--no-retry` shows the
client as it was.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = r'''
import asyncio, json, sys
import uvicorn

TOKENS = int(sys.argv[3])

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    for i in range(TOKENS):
        chunk = {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "a"}]}
        await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True})
        await asyncio.sleep(0.005)
    usage = {"id": "x", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": TOKENS}}
    await send({"type": "http.response.body", "body": f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode(),
                "more_body": False})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), timeout_keep_alive=int(sys.argv[2]),
            log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the SSE server on port {port} did not start")


def one(python: str, keepalive: int, lag_s: float, concurrency: int, requests: int,
        tokens: int) -> Counter:
    from lab.measure import loadgen
    port = free_port()
    app = Path(tempfile.mkdtemp(prefix="ka-")) / "sse_app.py"
    app.write_text(APP)
    server = subprocess.Popen([python, str(app), str(port), str(keepalive), str(tokens)])
    try:
        wait_port(port)
        done = {"n": 0}

        def on_record(rec) -> None:
            done["n"] += 1
            if done["n"] == concurrency:  # mid-load, the client is starved once
                time.sleep(lag_s)

        work = loadgen.Workload(input_len=4, output_len=tokens, concurrency=concurrency,
                                num_requests=requests, timeout_s=60)
        prompts = [[1, 2, 3, 4]] * requests
        result = loadgen.run_level_sync(f"http://127.0.0.1:{port}", "m", prompts, work,
                                        on_record=on_record)
        return Counter(r.error or "ok" for r in result.records)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=str(ROOT / ".lab" / "venv-cpu" / "bin" / "python"),
                    help="an interpreter with uvicorn (the vLLM env has it)")
    ap.add_argument("--keepalive", type=int, nargs="+", default=[5, 60],
                    help="server keep-alive seconds to compare (vLLM's default 5; the lab's 60)")
    ap.add_argument("--lag", type=float, default=6.0, help="seconds the client is starved once")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-retry", action="store_true",
                    help="the client as before issue 9: a request on a stale connection fails")
    args = ap.parse_args()
    if args.no_retry:
        from lab.measure import loadgen
        loadgen._stale_connection = lambda err, rec: False  # type: ignore[assignment]
    for keepalive in args.keepalive:
        for r in range(1, args.rounds + 1):
            counts = one(args.python, keepalive, args.lag, args.concurrency, args.requests, args.tokens)
            failed = {k: v for k, v in counts.items() if k != "ok"}
            print(f"server keep-alive {keepalive:>3} s, client starved {args.lag:g} s once, round {r}: "
                  f"{counts.get('ok', 0)} ok, {sum(failed.values())} failed {failed or ''}", flush=True)


if __name__ == "__main__":
    main()
