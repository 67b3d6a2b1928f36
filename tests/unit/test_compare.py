"""The vLLM-vs-HF comparison: its arithmetic (speedup, seed 004's cost view), the JSON
contract of the two scripts as lab/compare.py reads it (with a fake vLLM env), and its
faults: a missing vLLM env and a failing script each give one line and a failed step."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.fake_vllm_scripts import FakeScripts, make_model
from rich.console import Console

from lab.checklist import seeds
from lab.checklist.steps import compare
from lab.commands import records, run_step_task
from lab.core.errors import ConfigError, ServerNotRunning
from lab.core.units import ratio
from lab.deliver import day_log
from lab.deliver import jinja as render
from lab.record.session import Lab
from lab.record.values import CompareSide, CompareValues
from lab.vllm.env import parse_result

ROOT = Path(__file__).resolve().parents[2]


def make_lab(tmp_path, **overrides) -> Lab:
    cfg = {"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"),
           "data_dir": str(tmp_path / "data"), "port": 8599, **overrides}
    return Lab.from_config(cfg, console=Console(file=io.StringIO()))


def compare_row(lab: Lab) -> dict:
    rows = [s for r in lab.book.runs("day4") for s in lab.book.steps(r["id"]) if s["key"] == "compare"]
    return rows[-1]


# -- arithmetic ---------------------------------------------------------------------------
def _values(hf: dict, vllm: dict, on_gpu: bool = True) -> CompareValues:
    return CompareValues(on_gpu=on_gpu, hf=CompareSide(**hf), vllm=CompareSide(**vllm))


def test_speedup_is_vllm_over_hf_for_throughput_and_hf_over_vllm_for_latency():
    up = _values({"output_tok_s": 100.0, "samples_per_min": 50.0, "latency_s": 2.0},
                 {"output_tok_s": 400.0, "samples_per_min": 150.0, "latency_s": 0.5}).speedup
    assert (up.throughput_x, up.samples_x, up.latency_x) == (4.0, 3.0, 4.0)


def test_speedup_of_an_unmeasured_side_is_none_not_zero():
    up = _values({"output_tok_s": None, "latency_s": 0.0}, {"output_tok_s": 10.0}).speedup
    assert (up.throughput_x, up.samples_x, up.latency_x) == (None, None, None)
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_cost_reproduces_seed_004s_table():
    # Seed 004: HF on 8 GPUs at 100 samples/min, vLLM on 1 GPU at 500 samples/min.
    c = _values({"samples_per_min": 100.0, "devices": 8},
                {"samples_per_min": 500.0, "devices": 1}).cost
    assert c.unit == "GPU-minutes" and c.samples == 10_000 and c.note is None
    assert c.hf.minutes == 100.0 and c.hf.device_minutes == 800.0 and c.hf.devices == 8
    assert c.vllm.minutes == 20.0 and c.vllm.device_minutes == 20.0
    assert c.saving_x == 40.0


def test_cost_on_cpu_is_cpu_minutes_and_says_it_is_not_a_gpu_figure():
    c = _values({"samples_per_min": 50.0, "devices": 1},
                {"samples_per_min": 1000.0, "devices": 1}, on_gpu=False).cost
    assert c.unit == "CPU-minutes" and "not a GPU figure" in (c.note or "")
    assert c.hf.device_minutes == 200.0
    assert c.vllm.device_minutes == 10.0 and c.saving_x == 20.0


def test_a_side_is_measured_only_with_throughput_latency_and_memory():
    assert CompareSide(output_tok_s=1.0, latency_s=1.0, peak_mem_mib=1.0).measured
    assert not CompareSide(output_tok_s=1.0, latency_s=1.0).measured
    # vLLM on GPU: its peak_mem_mib is the budget it reserves; NVML's used memory counts
    reserved = CompareSide(output_tok_s=1.0, latency_s=1.0, peak_mem_mib=1.0,
                           mem_basis="reserved: gpu-memory-utilization × total")
    assert not reserved.measured
    reserved.device_used_mib = 70_000.0
    assert reserved.measured


def test_prompts_are_distinct_chats_even_past_the_built_in_list():
    chats = compare.chat_prompts(40)
    texts = [c[0]["content"] for c in chats]
    assert len(set(texts)) == 40 and all(c[0]["role"] == "user" for c in chats)
    assert texts[0] == "你好，请介绍一下你自己"


def test_parse_result_takes_the_last_json_object_line():
    out = "INFO vLLM chatter {not json\n" + json.dumps({"ok": True, "x": 1}) + "\n[1, 2]\n"
    assert parse_result(out) == {"ok": True, "x": 1}
    assert parse_result("no json at all") is None


# -- the step, against the scripts' JSON contract ----------------------------------------
def test_compare_step_records_both_sides_speedup_cost_and_renders(tmp_path, monkeypatch):
    scripts = FakeScripts().install(monkeypatch)
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    code = run_step_task(lab, "day4", "compare", num_prompts=5, max_new_tokens=8, batch_size=2,
                         source="auto")
    assert code == 0
    row = compare_row(lab)
    assert row["status"] == "pass", row
    v = row["values"]
    assert isinstance(v, CompareValues) and v.source == "offline" and not v.on_gpu
    # HF: 3 batches of 2 s for 5 prompts × 8 tokens; vLLM: 0.25 s for all of them.
    assert v.hf.output_tok_s == pytest.approx(40 / 6.0)
    assert v.hf.latency_s == 2.0 and v.hf.peak_mem_mib == 512.0
    assert v.vllm.output_tok_s == pytest.approx(160.0) and v.vllm.latency_s == 0.25
    assert v.vllm.peak_mem_mib == 2900.0
    assert v.speedup.throughput_x == pytest.approx(24.0)
    assert v.speedup.latency_x == pytest.approx(8.0)
    assert v.cost.unit == "CPU-minutes"
    assert v.startup.kv_cache_tokens == 1_048_576 and v.startup.evidence == {}
    # The vLLM side got exactly the token ids the HF side used.
    (hf_name, hf_args, _), (off_name, off_args, off_env) = scripts.calls
    assert (hf_name, off_name) == ("hf_baseline.py", "offline_generate.py")
    ids = json.loads(Path(hf_args[hf_args.index("--ids-out") + 1]).read_text())
    runs = json.loads(Path(off_args[off_args.index("--runs-file") + 1]).read_text())
    assert runs["runs"][0]["prompt_ids"] == ids
    assert runs["runs"][0]["sampling"] == {"temperature": 0.0, "max_tokens": 8, "ignore_eos": True}
    assert "--ignore-eos" in hf_args and off_env["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    assert off_env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # Every sample's timing is in the requests table, for both sides.
    phases = [r["phase"] for r in lab.book.requests(row["id"])]
    assert phases.count("compare-hf") == 5 and phases.count("compare-vllm") == 5
    # On the CPU profile every figure says so.
    assert row["actual"].startswith("CPU profile (not GPU figures)")
    measured = {c["key"]: c for c in row["criteria"]}
    assert measured["hf_measured"]["measured"].endswith("(CPU)")
    assert measured["vllm_measured"]["measured"].endswith("(CPU)")
    assert measured["same_work"]["status"] == "pass" and v.inputs_identical is True


def test_sides_that_did_different_work_fail_the_step(tmp_path, monkeypatch):
    class ShortHF(FakeScripts):
        def hf(self, args):
            out = super().hf(args)
            out["output_tokens"] -= 1   # e.g. one sample stopped early on EOS
            return out

    ShortHF().install(monkeypatch)
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "compare", num_prompts=5, max_new_tokens=8,
                         batch_size=2, source="auto") == 1
    row = compare_row(lab)
    assert row["status"] == "fail" and "different token counts" in row["reason"]
    assert row["values"].inputs_identical is False


def test_compare_details_mark_every_figure_cpu(tmp_path, monkeypatch):
    FakeScripts().install(monkeypatch)
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    run_step_task(lab, "day4", "compare", num_prompts=4, max_new_tokens=8, batch_size=4, source="offline")
    data = records(lab)
    step = data.records.latest("compare")
    tmpl = ('{% from "_details_compare.md.j2" import compare_details with context %}'
            '{{ compare_details(s) }}')
    for lang in ("zh", "en"):
        view = day_log.step_view(seeds.DAY4.spec("compare"), step, lang, data.records)
        text = render.environment().from_string(tmpl).render(s=view, lang=lang)
        figures = [line for line in text.splitlines()
                   if line.startswith("| ") and any(ch.isdigit() for ch in line)]
        assert len(figures) >= 7, text
        for line in figures:
            assert "(CPU)" in line or " CPU " in line, line
        assert "CPU-minutes" in text and ("不是 GPU-分钟" in text or "not GPU-minutes" in text)
    # a compare step with nothing measured shows no details
    empty = day_log.step_view(seeds.DAY4.spec("compare"), None, "en", data.records)
    assert render.environment().from_string(tmpl).render(s=empty, lang="en").strip() == ""


# -- faults -------------------------------------------------------------------------------
def test_script_failure_fails_the_step_with_its_last_lines_as_evidence(tmp_path, monkeypatch):
    scripts = FakeScripts().install(monkeypatch)
    scripts.fail["hf_baseline.py"] = (1, "Traceback (most recent call last):\n  File \"x\", line 1\n"
                                         "RuntimeError: boom")
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "compare", num_prompts=2, max_new_tokens=4, batch_size=1,
                         source="offline") == 1
    row = compare_row(lab)
    assert row["status"] == "fail"
    assert row["reason"] == "the HF baseline failed (exit 1): RuntimeError: boom"
    assert "RuntimeError: boom" in row["evidence"] and "Traceback" in row["evidence"]
    assert len(scripts.calls) == 1  # the vLLM side is not started after the HF side failed


def test_vllm_side_failure_keeps_the_measured_hf_side(tmp_path, monkeypatch):
    scripts = FakeScripts().install(monkeypatch)
    scripts.fail["offline_generate.py"] = (1, "ValueError: Unsupported CPU attention configuration: head_dim=16")
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "compare", num_prompts=2, max_new_tokens=4, batch_size=1,
                         source="offline") == 1
    row = compare_row(lab)
    assert row["status"] == "fail" and row["reason"].startswith("vLLM offline LLM.generate failed (exit 1)")
    kept = row["values"]
    assert isinstance(kept, CompareValues) and kept.hf.output_tokens == 8 and kept.vllm is None
    assert "head_dim" in (row["fix"] or "")  # lab.vllm.diagnose recognised the log line


def test_a_script_without_a_json_line_is_a_failure_not_a_crash(tmp_path, monkeypatch):
    FakeScripts().install(monkeypatch)
    monkeypatch.setattr("lab.vllm.env.VllmEnv.run_script", lambda self, name, args, **kw:
                        subprocess.CompletedProcess(args, 0, "just logs\n", "warning: x"))
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day4", "compare", num_prompts=1, max_new_tokens=2, batch_size=1,
                         source="offline") == 1
    assert compare_row(lab)["reason"] == "the HF baseline failed (no JSON result): warning: x"


def test_source_server_without_a_server_is_one_line(tmp_path):
    lab = make_lab(tmp_path)
    with pytest.raises(ServerNotRunning) as err:
        compare.pick_source(lab, "server")
    assert "\n" not in str(err.value)
    assert compare.pick_source(lab, "auto") == ("offline", None)
    with pytest.raises(ConfigError):
        compare.pick_source(lab, "nowhere")


@pytest.mark.parametrize("key,value,message", [
    ("source", "cloud", "compare source must be auto, server or offline"),
    ("num_prompts", "many", "num_prompts must be a whole number"),
    ("batch_size", "0", "compare batch-size must be at least 1"),
    ("max_new_tokens", "5000", "compare max-new-tokens must be between 1 and 2047"),
])
def test_bad_compare_options_are_one_line(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as err:
        make_lab(tmp_path, compare={key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def _invoke(args, tmp_path):
    env = dict(os.environ, COLUMNS="200", INVOKE_LAB_LOGBOOK_DIR=str(tmp_path / "logbook"),
               INVOKE_LAB_DATA_DIR=str(tmp_path / "data"), INVOKE_LAB_PROFILE="cpu")
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_missing_vllm_env_is_one_line_a_failed_step_and_a_nonzero_exit(tmp_path):
    proc = _invoke(["compare", "--num-prompts", "2"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    assert "reason: vLLM env missing:" in out and "run `invoke install`" in out
    import sqlite3
    db = sqlite3.connect(tmp_path / "logbook" / "lab.db")
    status, reason = db.execute("select status, reason from steps where key='compare'").fetchone()
    assert status == "fail" and reason.startswith("vLLM env missing") and "\n" not in reason


def test_bad_flag_is_one_line_before_any_work(tmp_path):
    proc = _invoke(["compare", "--source", "cloud"], tmp_path)
    assert proc.returncode != 0
    assert "compare source must be auto, server or offline" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "logbook" / "lab.db").exists()
