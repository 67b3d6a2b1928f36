"""Where does our client's TTFT go? Ours against `vllm bench serve`'s own request function,
on a fake server whose first token comes after a known delay.

The fake vLLM server (tests/fakes/fake_openai_stream.py, its own process) sends the first
token `--first-token-ms` after it read the request, then one every `--itl-ms`. At
concurrency 1 each client sends `--num-requests` streamed completions; what it measures as
TTFT minus the fake's delay is its own overhead (socket, HTTP, parsing, timestamping).
Sides alternate (ours, theirs, ours, …) over `--rounds`.

- ours: `lab.measure.loadgen.run_level` (the lab's load generator, as `invoke bench` runs it);
- theirs: `vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions` over
  one aiohttp session, as `vllm bench serve` runs it (in the vLLM env, `--python`).

Prints per side the median TTFT overhead (ms) per round and the difference ours − theirs.
On the lent H200 ours read 1.7 ms higher than `vllm bench serve` at concurrency 1
(docs/facts.md, "Fidelity"); this isolates the client from the server.

Usage: python bench/client_overhead.py --python .lab/venv-cpu/bin/python [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.measure.loadgen import Workload, run_level_sync
from tests.fakes.fake_openai_stream import FakeConfig, start_subprocess

#: Run in the vLLM env: vLLM's own request function, one session, sequential requests.
THEIRS = r"""
import asyncio, json, sys, time
import aiohttp
from vllm.benchmarks.lib.endpoint_request_func import (
    RequestFuncInput, async_request_openai_completions)
url, model, n, out_len, prompt_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
async def main():
    connector = aiohttp.TCPConnector(limit=1, limit_per_host=1, ttl_dns_cache=300,
                                     use_dns_cache=True, keepalive_timeout=60,
                                     enable_cleanup_closed=True, force_close=False)
    ttfts = []
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 60 * 60)) as s:
        for i in range(n + 2):  # 2 warm-ups
            inp = RequestFuncInput(prompt=list(range(1, prompt_len + 1)), api_url=url + "/v1/completions",
                                   prompt_len=prompt_len, output_len=out_len, model=model,
                                   extra_body={"ignore_eos": True, "temperature": 0.0})
            out = await async_request_openai_completions(inp, s)
            if i >= 2 and out.success:
                ttfts.append(out.ttft)
    print(json.dumps(ttfts))
asyncio.run(main())
"""


def ours(url: str, model: str, n: int, out_len: int, prompt_len: int) -> list[float]:
    w = Workload(input_len=prompt_len, output_len=out_len, concurrency=1, num_requests=n,
                 warmup_requests=2)
    prompts = [list(range(1, prompt_len + 1))] * (n + 2)
    res = run_level_sync(url, model, prompts, w)
    return [r.ttft_s for r in res.records if r.ok and not r.warmup and r.ttft_s is not None]


def theirs(python: str, url: str, model: str, n: int, out_len: int, prompt_len: int) -> list[float]:
    proc = subprocess.run([python, "-c", THEIRS, url, model, str(n), str(out_len),
                           str(prompt_len)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"theirs failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", required=True, help="the vLLM env's python (has vllm)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-requests", type=int, default=50)
    ap.add_argument("--first-token-ms", type=float, default=20.0)
    ap.add_argument("--itl-ms", type=float, default=5.0)
    ap.add_argument("--output-len", type=int, default=8)
    ap.add_argument("--input-len", type=int, default=128)
    args = ap.parse_args(argv)
    proc, url = start_subprocess(FakeConfig(first_token_s=args.first_token_ms / 1000,
                                            itl_s=args.itl_ms / 1000))
    truth = args.first_token_ms
    rows = []
    try:
        for rnd in range(1, args.rounds + 1):
            a = ours(url, "fake-model", args.num_requests, args.output_len, args.input_len)
            b = theirs(args.python, url, "fake-model", args.num_requests, args.output_len,
                       args.input_len)
            oa = statistics.median(a) * 1000 - truth
            ob = statistics.median(b) * 1000 - truth
            rows.append((rnd, oa, ob))
            print(f"round {rnd}: median TTFT overhead ours {oa:.3f} ms, theirs {ob:.3f} ms, "
                  f"ours - theirs {oa - ob:+.3f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    diffs = [oa - ob for _, oa, ob in rows]
    print(f"ours - theirs over {len(rows)} rounds: median {statistics.median(diffs):+.3f} ms "
          f"(min {min(diffs):+.3f}, max {max(diffs):+.3f}); fake first token {truth:g} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
