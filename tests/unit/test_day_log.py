"""The day logs (lab.deliver.day_log): each step in the seed's layout from its record, the
details drawn from its typed values, the 验收 boxes ticked only from a recorded pass, a step
the day did not run shown as such, and untrusted text escaped."""
from __future__ import annotations

import pytest

from lab.checklist import seeds
from lab.deliver import day_log
from lab.deliver.gather import gather
from lab.record.logbook import FAIL, SKIPPED
from lab.record.queries import Records
from lab.record.values import BalanceDevice, BalanceValues, MemoryValues, ServeValues
from tests.fakes.fake_logbook import HOSTILE, _crit, _step, add_hostile, cpu_logbook


def render(book, day, tmp_path, lang="en", run_id=None) -> str:
    data = gather(book, now=1.0e9, measurements=False)
    return day_log.render_day(data, day, lang, tmp_path, run_id=run_id).read_text()


def test_a_step_view_says_what_was_recorded(fresh_db):
    run = fresh_db.start_run("day3", profile="cpu")
    _step(fresh_db, run, "serve", FAIL, ServeValues(ready_s=12.0),
          [_crit("ready_s", "启动耗时", "startup", 901.0, FAIL, "<", 900, "s", reason="too slow")],
          reason="too slow", command="")
    step = Records(fresh_db).latest("serve")
    view = day_log.step_view(seeds.DAY3.spec("serve"), step, "en", Records(fresh_db))
    assert (view.icon, view.recorded, view.reason) == ("❌", True, "too slow")
    assert view.command == seeds.DAY3.spec("serve").command     # none recorded: the seed's
    assert view.criteria[0].expected == "< 900 s" and view.criteria[0].result == "❌ fail"
    assert view.kind == "serve" and view.details.v.ready_s == 12.0
    missing = day_log.step_view(seeds.DAY3.spec("tools"), None, "zh", Records(fresh_db))
    assert (missing.icon, missing.recorded, missing.actual) == ("⬜", False, "待记录")


def test_acceptance_is_ticked_from_the_recorded_criterion_only(fresh_db, tmp_path):
    cpu_logbook(fresh_db)
    rows = {a.label: a for a in day_log.acceptance(
        "day3", Records(fresh_db).latest_by_key("day3"), "en")}
    assert rows["the vLLM server started"].done
    gpu = rows["memory used > 90 % (nvitop)"]
    assert not gpu.done and gpu.status == SKIPPED and gpu.reason == "no NVIDIA GPU: CPU profile"
    assert not rows["nvitop can monitor the GPUs"].done and rows["nvitop can monitor the GPUs"].run_id is None
    md = render(fresh_db, "day3", tmp_path)
    assert "- [x] the vLLM server started" in md
    assert "- [ ] memory used > 90 % (nvitop) — ⏭️ skipped：no NVIDIA GPU: CPU profile" in md


def test_day4_renders_the_seeds_parts_and_the_steps_not_run(fresh_db, tmp_path):
    run = fresh_db.start_run("day4", profile="cpu")
    _step(fresh_db, run, "balance", SKIPPED, BalanceValues(
        source="process_rss", devices=[BalanceDevice("VLLM::Worker_TP0", 1700.0, 11),
                                       BalanceDevice("VLLM::Worker_TP1", 1750.0, 12)],
        max_mib=1750.0, min_mib=1700.0, spread_pct=2.857, threshold_pct=10.0),
        [_crit("spread_pct", "两张 GPU 的显存占用差异", "difference in GPU memory used", None,
               SKIPPED, "<", 10, "%", reason="no NVIDIA GPU: CPU profile")])
    md = render(fresh_db, "day4", tmp_path, lang="zh")
    assert md.index("上午：双卡张量并行") < md.index("下午：性能对比测试") < md.index("晚上：监控与日志")
    assert "| VLLM::Worker\\_TP0 (pid 11) | 1,700 |" in md and "**2.86 %**" in md
    assert "进程 RSS MiB（不是显存）" in md
    # compare and compare-tp were not run: their commands, and the seed's empty table
    assert "⏳ 待执行（本次未运行：运行 `invoke compare`）" in md
    assert "| 显存利用率 | ? | ? | ? |" in md
    assert "（CPU 配置：两个 TP worker 进程的 RSS 相差 2.86 %，这不是显存）" in md


def test_memory_on_the_cpu_profile_names_what_was_measured(fresh_db, tmp_path):
    run = fresh_db.start_run("day5", profile="cpu")
    _step(fresh_db, run, "memory", SKIPPED, MemoryValues(peak_tree_rss_mib=2953.6,
                                                          cpu_kv_cache_gib=1.0))
    md = render(fresh_db, "day5", tmp_path)
    assert ("No GPU memory on the CPU profile: recorded instead is the peak RSS of the offline "
            "run's process tree (script, EngineCore, worker) = 2,954 MiB (CPU), of which KV "
            "cache 1 GiB.") in md


def test_a_past_run_renders_alone_and_hostile_text_stays_text(fresh_db, tmp_path):
    ids = cpu_logbook(fresh_db)
    hostile = add_hostile(fresh_db)
    md = render(fresh_db, "day3", tmp_path, run_id=hostile["run"])
    assert f"run #{hostile['run']}" in md and f"run #{ids['day3']} " not in md
    assert HOSTILE not in md and "<script>" not in md and "&lt;script&gt;" in md
    whole = render(fresh_db, "day3", tmp_path)
    assert "latest record of each step" in whole


@pytest.mark.parametrize("day", list(seeds.DAYS))
def test_an_empty_logbook_renders_every_day_as_pending(fresh_db, tmp_path, day):
    md = render(fresh_db, day, tmp_path, lang="zh")
    assert "⏳ 待执行" in md and "- [x]" not in md
    assert md.count("#### ⬜") == len(seeds.DAYS[day].steps)
