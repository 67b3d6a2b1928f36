"""A stand-in for `python -m vllm.entrypoints.openai.api_server`, for tests (stdlib only).

It behaves like vLLM where lab.vllm.process cares:
- it binds the port at once but only listens after `--startup-s` (vLLM reserves its socket early);
- it logs vLLM-like lines, ending with "Application startup complete.";
- `GET /health` answers `--health-status` (200; 503 means "engine dead"), `GET /v1/models`
  lists the model (behind `--api-key` when given, like vLLM's /v1 routes);
- `--die-after-s S`: logs a CUDA OOM error and exits 1 after S seconds;
- `--spawn-children N`: N sleeping children titled `VLLM::Worker_TP<i>`; child 0 calls setsid
  (escapes the process group) and has a grandchild, to prove the whole tree is ended;
- `--ignore-sigterm`: the server and its children ignore SIGTERM, to prove SIGKILL escalation.
- `--crash-at-s S`: after S seconds, print the 2×H200 TP=2 CUDA-graph crash signature
  (tests/fixtures/h200x2_tp2_cuda_graph_crash.log, shared/gpu/README.md) and hang: every
  process stays alive and /health never answers, as seen on the lent GPUs. With
  `--enforce-eager` (the known fix) it starts normally instead.
- `--progress`: print vLLM-like startup phase lines (loading, profiling, CUDA graphs k/n).
Unknown vLLM flags are accepted and ignored. Each child's pid is logged as `FAKE child pid=N`.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def log(level: str, where: str, message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"{level} {stamp} [{where}] {message}", flush=True)


def set_title(title: str) -> None:
    """Like setproctitle on Linux: sets the short name that `ps -o comm` and psutil show."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, title.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--startup-s", type=float, default=0.5)
    p.add_argument("--die-after-s", type=float, default=None)
    p.add_argument("--spawn-children", type=int, default=0)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--health-status", type=int, default=200)
    p.add_argument("--crash-at-s", type=float, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--setsid", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--grandchild", action="store_true", help=argparse.SUPPRESS)
    args, _unknown = p.parse_known_args(argv)
    return args


def ignore_sigterm() -> None:
    def handler(signum, frame):
        log("WARNING", "fake_vllm_server.py:1", f"pid {os.getpid()} ignoring SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def run_child(args: argparse.Namespace) -> None:
    if args.setsid:
        os.setsid()
    set_title(f"VLLM::Worker_TP{args.child}")
    if args.ignore_sigterm:
        ignore_sigterm()
    if args.grandchild:
        spawn([f"--child={args.child}"], args)
    while True:
        time.sleep(3600)


def spawn(extra: list[str], args: argparse.Namespace) -> None:
    argv = [sys.executable, os.path.abspath(__file__), *extra]
    if args.ignore_sigterm:
        argv.append("--ignore-sigterm")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    log("INFO", "fake_vllm_server.py:2", f"FAKE child pid={proc.pid}")


def die_later(delay_s: float) -> None:
    def die():
        time.sleep(delay_s)
        log("ERROR", "core.py:700", "EngineCore failed to start.")
        print("Traceback (most recent call last):", flush=True)
        print('  File "vllm/worker/gpu_model_runner.py", line 1, in profile_run', flush=True)
        print(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
            "GPU 0 has a total capacity of 79.19 GiB of which 1.02 GiB is free.",
            flush=True,
        )
        os._exit(1)

    threading.Thread(target=die, daemon=True).start()


def crash_and_hang(delay_s: float, pid: int) -> None:
    """The 2xH200 signature: a worker fails during CUDA-graph capture, nothing exits."""
    time.sleep(delay_s)
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"(Worker_TP0 pid={pid}) Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  12%|█▏        | 8/67 [00:01<00:09,  6.21it/s]", flush=True)
    print(f"(Worker_TP1 pid={pid}) ERROR {stamp} [multiproc_executor.py:671] gemm_and_bias error: CUBLAS_STATUS_EXECUTION_FAILED", flush=True)
    print(f"(Worker_TP0 pid={pid}) ERROR {stamp} [multiproc_executor.py:671] CUDA error: an illegal memory access was encountered", flush=True)
    print(f"(Worker_TP1 pid={pid}) ERROR {stamp} [multiproc_executor.py:671] WorkerProc hit an exception.", flush=True)
    while True:
        time.sleep(3600)


def log_progress(pid: int) -> None:
    log("INFO", "gpu_model_runner.py:1", "Starting to load model fake-model...")
    time.sleep(0.05)
    log("INFO", "default_loader.py:1", "Loading weights took 0.05 seconds")
    time.sleep(0.05)
    log("INFO", "monitor.py:1", "torch.compile took 0.05 s in total")
    for k in (8, 67):
        print(f"(Worker_TP0 pid={pid}) Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): "
              f"{k * 100 // 67:3d}%|█▏        | {k}/67 [00:01<00:09,  6.21it/s]", flush=True)
        time.sleep(0.05)
    log("INFO", "gpu_model_runner.py:2", "Graph capturing finished in 1 secs, took 0.10 GiB")


def make_handler(args: argparse.Namespace):
    model_id = args.served_model_name or args.model

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/health":
                self.reply(args.health_status, b"")
            elif self.path == "/v1/models":
                if args.api_key and self.headers.get("Authorization") != f"Bearer {args.api_key}":
                    self.reply(401, json.dumps({"error": "Unauthorized"}).encode())
                    return
                body = {
                    "object": "list",
                    "data": [
                        {
                            "id": model_id,
                            "object": "model",
                            "created": int(time.time()),
                            "owned_by": "vllm",
                            "root": args.model,
                            "max_model_len": args.max_model_len,
                        }
                    ],
                }
                self.reply(200, json.dumps(body).encode())
            else:
                self.reply(404, json.dumps({"detail": "Not Found"}).encode())

        def reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *fargs):  # uvicorn-style access log
            print(f"INFO:     {self.client_address[0]}:{self.client_address[1]} - {fmt % fargs}", flush=True)

    return Handler


def graceful_exit(signum, frame):
    log("INFO", "launcher.py:80", "Shutting down FastAPI HTTP server.")
    sys.exit(0)


def run_server(args: argparse.Namespace) -> None:
    if args.ignore_sigterm:
        ignore_sigterm()
    else:
        signal.signal(signal.SIGTERM, graceful_exit)
    log("INFO", "api_server.py:1", "vLLM API server version 0.0.0+fake")
    log("INFO", "api_server.py:2", f"args: model={args.model!r} port={args.port}")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    ThreadingHTTPServer.address_family = family
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args), bind_and_activate=False)
    server.allow_reuse_address = True
    server.server_bind()  # reserve the port now, listen later, like vLLM
    if args.die_after_s is not None:
        die_later(args.die_after_s)
    for i in range(args.spawn_children):
        spawn([f"--child={i}"] + (["--setsid", "--grandchild"] if i == 0 else []), args)
    if args.crash_at_s is not None and not args.enforce_eager:
        crash_and_hang(args.crash_at_s, os.getpid())
    if args.progress:
        log_progress(os.getpid())
    time.sleep(args.startup_s / 2)
    log("INFO", "default_loader.py:1", "Model loading took 0.01 GiB and 0.10 seconds")
    log("INFO", "kv_cache_utils.py:1", "GPU KV cache size: 1,041,472 tokens")
    time.sleep(args.startup_s / 2)
    log("INFO", "core.py:1", "init engine (profile, create kv cache, warmup model) took 0.20 seconds")
    server.server_activate()
    log("INFO", "launcher.py:1", f"Starting vLLM API server 0 on http://{args.host}:{args.port}")
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever(poll_interval=0.1)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child is not None:
        run_child(args)
    else:
        run_server(args)


if __name__ == "__main__":
    main(sys.argv[1:])
