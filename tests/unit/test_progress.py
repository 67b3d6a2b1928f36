"""Learning progress: the whole roadmap ticked only from recorded passes or manual notes,
and the run history."""
from dataclasses import asdict

import pytest
from rich.console import Console

from lab import commands
from lab.checklist import roadmap
from lab.core.errors import ConfigError
from lab.deliver import progress
from lab.deliver.gather import gather
from lab.record.logbook import FAIL, PASS, PENDING, SKIPPED
from lab.record.queries import Records
from lab.record.values import InstallValues
from lab.ui import tables
from tests.fakes.fake_logbook import (
    HOSTILE,
    _step,
    add_hostile,
    cpu_logbook,
    gpu_logbook,
    logbook_on_disk,
    run_invoke,
)


def states(book, lang="en") -> dict:
    return {i.id: asdict(i) for g in progress.checklist_state(Records(book), lang)
            for i in g.entries}


def test_the_roadmap_covers_the_seeds_with_unique_ids():
    groups = roadmap.roadmap()
    assert roadmap.unique_ids(groups)
    ids = {g.id for g in groups}
    assert {"d3-theory", "d3-acceptance", "d4-acceptance", "d5", "module", "p1", "p2", "p3", "p4"} <= ids
    items = roadmap.items_by_id()
    assert {"q1", "q2", "q3"} <= {i for i, item in items.items() if item.manual}
    assert {g.source for g in groups} == {"seed 000", "seed 002", "seed 003",
                                          "lab (seeds 001, 003 P3)"}  # Day 6, lab-defined


def test_an_empty_logbook_ticks_nothing_and_names_the_task(fresh_db):
    s = states(fresh_db)
    assert not any(i["done"] for i in s.values())
    assert s["d3-serve"]["detail"] == "not measured yet — run `invoke serve`"
    assert s["d4-serve"]["detail"] == "not measured yet — run `invoke serve --tp 2`"
    assert s["d4-bench"]["status"] == PENDING


def test_only_a_recorded_pass_ticks_a_step_item(fresh_db):
    cpu_logbook(fresh_db)
    s = states(fresh_db)
    assert s["d3-install"]["done"]
    # "serve the 7B model on one GPU": a cpu run served a tiny model on no GPU
    assert not s["d3-serve"]["done"] and s["d3-serve"]["status"] == SKIPPED
    assert not s["m-7b"]["done"]
    # skipped on the CPU profile: shown with its reason, never ticked
    assert not s["d3-gpus"]["done"] and s["d3-gpus"]["status"] == SKIPPED
    assert "no NVIDIA GPU: CPU profile" in s["d3-gpus"]["detail"]
    assert not s["d3-acc-3"]["done"] and "GPU memory used" in s["d3-acc-3"]["detail"]
    # an item that needs two steps is ticked only when both passed
    assert not s["m-nvitop"]["done"]


def test_the_latest_record_wins(fresh_db):
    for status in (PASS, FAIL):
        run = fresh_db.start_run("day3", profile="gpu")
        _step(fresh_db, run, "install", status, InstallValues(),
              reason="pip failed" if status == FAIL else None)
    s = states(fresh_db)
    assert not s["d3-install"]["done"] and s["d3-install"]["status"] == FAIL
    assert "pip failed" in s["d3-install"]["detail"]


def test_day4_items_read_the_day4_records(fresh_db):
    gpu_logbook(fresh_db)
    s = states(fresh_db)
    assert s["d4-serve"]["done"] and s["d4-balance"]["done"] and s["d4-bench"]["done"]
    assert "difference in GPU memory used = 0.4 %" in s["d4-balance"]["detail"]
    offline = "d5-acc-1"
    assert s[offline]["done"] and s["g-api"]["done"]
    assert not s["d4-api"]["done"]  # no Day 4 api-test was recorded


def test_a_tp1_server_does_not_tick_the_tp2_item(fresh_db):
    cpu_logbook(fresh_db)
    assert not states(fresh_db)["d4-serve"]["done"]


def test_done_ticks_note_items_only_and_lists_valid_ids(fresh_db):
    commands.mark_done(fresh_db, "q2", note="块表 ≈ 页表")
    s = states(fresh_db)
    assert s["q2"]["done"] and s["q2"]["detail"] == "块表 ≈ 页表"
    commands.mark_done(fresh_db, "q2", undo=True)
    assert not states(fresh_db)["q2"]["done"]
    with pytest.raises(ConfigError, match=r"unknown item 'q9'; items ticked by hand: .*q1, q2, q3"):
        commands.mark_done(fresh_db, "q9")
    with pytest.raises(ConfigError, match="ticked only from recorded results; run `invoke serve`"):
        commands.mark_done(fresh_db, "d3-serve")


def test_progress_md_has_the_checklist_the_history_and_escaped_notes(fresh_db, tmp_path):
    cpu_logbook(fresh_db)
    add_hostile(fresh_db)
    text = progress.render_progress(gather(fresh_db, now=1.0e9, measurements=False), "zh",
                                    tmp_path).read_text()
    assert text.startswith("# vLLM 学习进度")
    assert "- [x] 安装 vLLM 并打印版本号 `d3-install`" in text
    assert "- [ ] 检查 GPU 资源" in text
    for title in ("第一阶段", "第二阶段", "第三阶段", "第四阶段", "Day 5 自检清单", "## 运行历史"):
        assert title in text
    assert "| #1 | day3 |" in text
    assert HOSTILE not in text and "<script>" not in text and "&lt;script&gt;" in text


def test_status_table_prints_db_text_literally(fresh_db):
    add_hostile(fresh_db)
    console = Console(record=True, width=200)
    groups = progress.checklist_state(Records(fresh_db), "en")
    console.print(tables.status_table([asdict(g) for g in groups], "en"))
    out = console.export_text()
    assert "[c](javascript:alert(1))" in out  # shown as text, not taken as rich markup
    assert "Phase 4" in out


def test_status_done_and_compare_runs_tasks(tmp_path):
    ids = logbook_on_disk(tmp_path, cpu_logbook)
    out = run_invoke(["done", "q1", "--note", "continuous batching + paged KV"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("已勾选: q1 — 自测 Q1") and "progress.md" in out.stdout
    out = run_invoke(["status", "--lang", "en"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "continuous batching + paged KV" in out.stdout and "progress.md" in out.stdout
    assert "continuous batching + paged KV" in (tmp_path / "progress.md").read_text()
    bad = run_invoke(["done", "nope"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: unknown item 'nope'; items ticked by hand: d3-read")
    out = run_invoke(["compare-runs", str(ids["day3"]), str(ids["day3"]), "--lang", "en"], tmp_path)
    assert out.returncode == 0 and "startup (until /health = 200)" in out.stdout
    bad = run_invoke(["compare-runs", "1", "x"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: run B must be a whole number, got 'x'"
