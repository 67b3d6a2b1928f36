"""Day 5 with a fake vLLM env: one offline engine run recorded, its batches, KV blocks, memory
(skipped on CPU, never passed) and key parameters judged, and logbook/day5.md rendered with its
self-check ticked from the results."""
import io

import pytest
from fakes.fake_vllm_scripts import FakeScripts, make_model
from rich.console import Console

from lab.checklist.steps import offline as day5
from lab.commands import run_day
from lab.core.errors import ConfigError
from lab.record.session import Lab
from lab.record.values import BatchRow, KvCacheValues, MemoryValues, OfflineValues, ParamsValues


def make_lab(tmp_path, **overrides) -> Lab:
    cfg = {"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"),
           "data_dir": str(tmp_path / "data"), "port": 8598, **overrides}
    return Lab.from_config(cfg, console=Console(file=io.StringIO()))


def steps_of(lab: Lab) -> dict:
    run = lab.book.runs("day5")[-1]
    return {s["key"]: s for s in lab.book.steps(run["id"])}


def run_day5(tmp_path, monkeypatch, scripts=None, **overrides):
    scripts = (scripts or FakeScripts()).install(monkeypatch)
    make_model(tmp_path / "data")
    lab = make_lab(tmp_path, **overrides)
    code = run_day(lab, "day5", keep_server=True)
    return lab, code, steps_of(lab), scripts


def test_batch_row_and_the_seeds_observation():
    row = day5.batch_row(4, {"n": 4, "elapsed_s": 0.5, "output_tokens": 400, "output_tok_s": 800.0})
    assert row == BatchRow(batch_size=4, n=4, time_s=0.5, output_tokens=400, output_tok_s=800.0,
                           prompt_tokens=None, ok=True)
    assert day5.batch_row(4, {"n": 3, "output_tokens": 300}).ok is False

    def rises(*tok_s):
        return OfflineValues(batches=[BatchRow(i + 1, output_tok_s=v)
                                      for i, v in enumerate(tok_s)]).throughput_rises
    assert rises(1.0, 2.0, 3.0) is True
    assert rises(1.0, 3.0, 2.0) is False
    assert rises(1.0) is None and rises(1.0, None) is None


def test_day5_runs_one_engine_and_records_every_step(tmp_path, monkeypatch):
    lab, code, steps, scripts = run_day5(tmp_path, monkeypatch,
                                         day5={"batch_sizes": "1,4,8,16", "max_tokens": "10"})
    assert code == 0
    assert list(steps) == ["install", "offline", "kv-cache", "memory", "params"]
    assert [c[0] for c in scripts.calls] == ["offline_generate.py"]  # one engine load
    off = steps["offline"]
    assert off["status"] == "pass", off
    v = off["values"]
    assert isinstance(v, OfflineValues) and v.profile == "cpu" and v.engine.block_size == 128
    assert [b.batch_size for b in v.batches] == [1, 4, 8, 16]
    assert [b.output_tokens for b in v.batches] == [10, 40, 80, 160]
    assert all(b.output_tok_s > 0 for b in v.batches)
    assert v.startup.kv_cache_tokens == 1_048_576 and v.startup.evidence == {}
    assert "offline_generate.py" in off["command"] and "VLLM_CPU_KVCACHE_SPACE=1" in off["command"]
    assert steps["kv-cache"]["status"] == "pass"
    kv = steps["kv-cache"]["values"]
    assert isinstance(kv, KvCacheValues) and kv.blocks_x_block_size == 1_048_576
    # GPU memory on the CPU profile: skipped with the reason, never passed; RSS recorded.
    mem = steps["memory"]
    assert (mem["status"], mem["reason"]) == ("skipped", "no NVIDIA GPU: CPU profile")
    assert isinstance(mem["values"], MemoryValues) and mem["values"].peak_tree_rss_mib == 2900.0
    params = steps["params"]
    assert params["status"] == "pass"
    assert isinstance(params["values"], ParamsValues) and params["values"].on_gpu is False
    rows = {r.name: r for r in params["values"].rows}
    assert rows["block_size"].value == 128 and rows["swap_space"].present is False
    assert "api_server" in params["values"].server_command

    md = (lab.logbook_dir / "day5.md").read_text()
    assert "- [x] 成功运行vLLM离线推理示例" in md
    assert "- [x] 不同 batch size 都跑完" in md
    assert "- [x] 每个 batch size 记录了 tok/s" in md
    assert "- [x] 记录 Block 分配信息" in md
    assert "- [ ] 记录显存占用（nvidia-smi） — ⏭️ 跳过：no NVIDIA GPU: CPU profile" in md
    assert "| 16 | 0.250 | 160 | 640 (CPU) |" in md
    # Model output is untrusted: escaped, never raw HTML or table-breaking pipes.
    assert "<b>hi</b>" not in md and "&lt;b&gt;hi&lt;/b&gt; \\| \\*x\\*" in md
    assert "待记录" not in md
    # memory on the CPU profile: the process tree's peak RSS, called so
    assert "CPU 配置没有显存：记录的是离线推理进程树" in md and "= 2,900 MiB (CPU)" in md
    assert "| `--block-size` | PagedAttention的Block大小 | 16 | 128 | 本次为 128（种子说默认 16；CPU 后端的默认值） |" in md


def test_a_batch_that_came_back_short_fails_its_criterion(tmp_path, monkeypatch):
    scripts = FakeScripts()
    scripts.short_batch = 8
    lab, code, steps, _ = run_day5(tmp_path, monkeypatch, scripts)
    assert code == 1
    off = steps["offline"]
    assert off["status"] == "fail"
    crit = {c["key"]: c for c in off["criteria"]}
    assert crit["all_batches"]["status"] == "fail" and crit["all_batches"]["measured"] == "3/4"
    # What needed the engine run is pending, not judged on a failed run.
    assert steps["kv-cache"]["status"] == "pending"
    md = (lab.logbook_dir / "day5.md").read_text()
    assert "- [ ] 不同 batch size 都跑完" in md


def test_kv_blocks_that_disagree_with_the_log_fail(tmp_path, monkeypatch):
    scripts = FakeScripts()
    scripts.num_gpu_blocks = 4096
    _, code, steps, _ = run_day5(tmp_path, monkeypatch, scripts)
    kv = steps["kv-cache"]
    assert code == 1 and kv["status"] == "fail"
    assert "4,096 × 128 = 524,288; log 1,048,576" in kv["reason"]


def test_no_kv_line_in_the_log_is_skipped_not_passed(tmp_path, monkeypatch):
    scripts = FakeScripts()
    scripts.stderr_lines = ["nothing useful"]
    _, _, steps, _ = run_day5(tmp_path, monkeypatch, scripts)
    kv = steps["kv-cache"]
    assert kv["status"] == "skipped" and kv["reason"] == "vLLM printed no 'KV cache size' line"


def test_engine_failure_is_a_failed_step_with_the_last_lines(tmp_path, monkeypatch):
    scripts = FakeScripts()
    scripts.fail["offline_generate.py"] = (1, "INFO starting\nRuntimeError: Engine core initialization failed.")
    _lab, code, steps, _ = run_day5(tmp_path, monkeypatch, scripts)
    off = steps["offline"]
    assert code == 1 and off["status"] == "fail"
    assert off["reason"] == ("vLLM offline LLM.generate failed (exit 1): "
                             "RuntimeError: Engine core initialization failed.")
    assert "INFO starting" in off["evidence"]


def test_missing_vllm_env_fails_install_and_nothing_else_runs(tmp_path):
    # An interpreter that is not there (a managed env would be pip-installed instead).
    lab = make_lab(tmp_path, python=str(tmp_path / "nope" / "bin" / "python"))
    assert run_day(lab, "day5", keep_server=True) == 1
    steps = steps_of(lab)
    assert steps["install"]["status"] == "fail"
    assert steps["install"]["reason"].startswith("vLLM env missing")
    assert {steps[k]["status"] for k in ("offline", "kv-cache", "memory", "params")} == {"pending"}


@pytest.mark.parametrize("value,message", [
    ("1,x", "day5 batch sizes must be comma-separated whole numbers >= 1"),
    ("0", "day5 batch sizes must be comma-separated whole numbers >= 1"),
    ("4,4", "day5 batch sizes lists a level twice"),
])
def test_bad_batch_sizes_are_one_line(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        make_lab(tmp_path, day5={"batch_sizes": value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_batch_sizes_parse(tmp_path):
    assert make_lab(tmp_path, day5={"batch_sizes": "1, 4,8,16"}).cfg["day5"]["batch_sizes"] == [1, 4, 8, 16]
