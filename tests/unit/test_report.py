"""The performance comparison report: every figure from the logbook (recomputed from the
requests table where it can be), the seed's table and cost view, the roofline, and
"not measured yet — run `invoke X`" for anything missing."""
import re

import pytest

from lab.core.errors import LabError
from lab.deliver import outputs, report
from lab.deliver.gather import gather
from lab.measure import stats
from lab.record.logbook import FAIL, PASS
from lab.record.values import (
    BenchValues,
    CompareValues,
    CompareWorkload,
    LatencyLoop,
    LatencyStats,
    LevelSummary,
)
from tests.fakes.fake_logbook import (
    HOSTILE,
    _crit,
    _step,
    add_hostile,
    cpu_logbook,
    gpu_logbook,
    logbook_on_disk,
    run_invoke,
)


def render(book, tmp_path, lang="en", run_id=None) -> str:
    return report.render_report(gather(book, run_id, now=1.0e9), lang, tmp_path).read_text()


def test_seed_table_speedups_and_cost_come_from_the_compare_step(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path)
    # latency HF ÷ vLLM = 4100 / 790, throughput vLLM ÷ HF = 2400 / 31.2
    assert "| Mean latency | 790 ms | 4,100 ms | 5.19× (HF ÷ vLLM)" in text
    assert "| Throughput | 2,400 tok/s | 31.2 tok/s | 76.92× (vLLM ÷ HF)" in text
    # memory: 71.3 GiB of an 81,559 MiB GPU, and the ratio is not called a gain
    assert "71.30 GiB (89.5 %)" in text and "(vLLM ÷ HF, not a gain)" in text
    # seed 004: 10,000 samples at 14.6 and 1,125 samples/min; vLLM on TP=2 → 2 GPUs
    assert "| HuggingFace | 14.6 | 684.9 | 1 | 684.9 |" in text
    assert "| vLLM | 1,125 | 8.9 | 2 | 17.8 |" in text
    assert "**38.5×** GPU-minutes" in text
    assert "extrapolated from the measured rate" in text


def test_sweep_is_recomputed_from_the_requests_table(fresh_db, tmp_path):
    ids = gpu_logbook(fresh_db)
    data = gather(fresh_db, now=1.0e9)
    assert [lv.concurrency for lv in data.levels] == [1, 4, 16]
    rows = [r for r in fresh_db.requests(ids["bench"], phase="sweep") if r["concurrency"] == 4]
    expected = stats.summarize(rows, None)
    got = data.levels[1].summary
    assert data.levels[1].source == "requests" and data.levels[1].n == 20
    assert got.output_tok_s == pytest.approx(expected["output_throughput"])
    assert got.requests_per_s == pytest.approx(expected["request_throughput"])
    assert got.wall_s == pytest.approx(expected["wall_s"])
    for name in ("ttft_ms", "tpot_ms", "e2el_ms", "queue_ms"):
        for stat in ("mean", "median", "p90", "p99"):
            assert getattr(getattr(got, name), stat) == pytest.approx(expected[name][stat]), name
    # ITLs are stored as float32: equal to float32 precision
    for stat in ("mean", "median", "p90", "p99"):
        assert getattr(got.itl_ms, stat) == pytest.approx(expected["itl_ms"][stat], rel=1e-6)
    assert got.completed == 20  # the warm-up row is not counted
    text = render(fresh_db, tmp_path)
    assert "Recomputed per request from the requests table" in text
    assert f"| 4 | 20 / 0 | {expected['request_throughput']:.2f} |" in text
    assert f"{expected['ttft_ms']['p90']:.2f}" in text
    # the latency loop: 10 sequential requests, avg of e2el
    assert "| 1,945 | 1,900 | 1,990 | 10 | 0 |" in text


def test_roofline_compares_the_bandwidth_bound_with_tpot_at_concurrency_1(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    data = gather(fresh_db, now=1.0e9)
    rf = report.roofline(data)
    bw = 2619 * 5120 * 2 / 8 / 1000  # NVML: max memory clock × bus width × 2
    assert rf.bandwidth_gbps == pytest.approx(bw)
    assert rf.bound_ms == pytest.approx(13.9 * 2**30 / (bw * 1e9) * 1000)
    tpot_c1 = data.levels[0].summary.tpot_ms.median
    assert rf.pct == pytest.approx(rf.bound_ms / tpot_c1 * 100)
    assert f"**{rf.pct:.1f} %**" in render(fresh_db, tmp_path)


def test_cpu_profile_says_what_does_not_apply(fresh_db, tmp_path):
    cpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path)
    assert "Does not apply: the CPU profile has no GPU memory bandwidth" in text
    assert "no NVIDIA GPU (CPU profile)" in text
    assert "not measured yet — run `invoke compare`" in text
    assert "not measured yet — run `invoke bench`" in text
    assert "process tree's RSS and CPU use, not GPU memory" in text
    assert (tmp_path / "plot-monitor-timeline.png").exists()


def test_an_empty_logbook_makes_up_nothing(fresh_db, tmp_path):
    text = render(fresh_db, tmp_path, lang="zh")
    assert text.startswith("# vLLM 性能对比报告")
    for task in ("gpus", "install", "serve", "compare", "bench", "monitor", "day5"):
        assert f"请运行 `invoke {task}`" in text
    assert "![" not in text and not list(tmp_path.glob("*.png"))
    assert "n/a" not in text  # no empty table: each missing piece names its task instead
    assert "| " not in text.split("## 1.")[1].split("## 8.")[0]


def test_stale_plots_are_removed_when_their_data_is_gone(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    render(fresh_db, tmp_path)
    assert len(list(tmp_path.glob("plot-*.png"))) == 4
    from lab.record.logbook import Logbook
    empty = Logbook(tmp_path / "other" / "lab.db")
    render(empty, tmp_path)
    assert not list(tmp_path.glob("plot-*.png"))


def test_plots_referenced_by_the_report_exist(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path)
    for name in ("plot-sweep.png", "plot-latency-distribution.png", "plot-monitor-timeline.png",
                 "plot-offline-batches.png"):
        assert f"]({name})" in text and (tmp_path / name).exists()


def test_run_option_picks_that_day4_run_and_rejects_others(fresh_db, tmp_path):
    ids = gpu_logbook(fresh_db)
    run = fresh_db.start_run("day4", profile="gpu")
    bench = fresh_db.start_step(run, "bench", title="bench", command="c", expected="")
    fresh_db.end_step(bench, status=PASS, values=BenchValues(latency=LatencyLoop(
        avg_latency_ms=3333.0, min_latency_ms=3000.0, max_latency_ms=3600.0, runs=10, failed=0)))
    assert "| 3,333 | 3,000 | 3,600 | 10 | 0 |" in render(fresh_db, tmp_path)  # the latest
    assert "| 1,945 | 1,900 | 1,990 |" in render(fresh_db, tmp_path, run_id=ids["day4"])
    with pytest.raises(LabError, match="day3 run; --run takes a day4 run"):
        gather(fresh_db, ids["day3"], now=1.0e9)
    with pytest.raises(LabError, match="no run #999"):
        gather(fresh_db, 999, now=1.0e9)


def test_bench_values_alone_are_used_when_no_request_rows_exist(fresh_db, tmp_path):
    run = fresh_db.start_run("day4", profile="gpu")
    level = LevelSummary(concurrency=2, level="c2", completed=5, failed=1, output_tok_s=321.0,
                         requests_per_s=2.5, ttft_ms=LatencyStats(median=12.0),
                         tpot_ms=LatencyStats(median=4.0, p99=5.0))
    _step(fresh_db, run, "bench", FAIL, BenchValues(levels=[level]), reason="1 request(s) failed")
    text = render(fresh_db, tmp_path)
    assert "As the bench step summarised it" in text
    assert "| 2 | 5 / 1 | 2.50 | 321 | n/a |" in text
    assert "❌ fail" in text and "1 request(s) failed" in text and "partial results are kept" in text


def test_interpretation_explains_what_the_server_counted_during_the_bench(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path)
    assert "What the server's /metrics counted during the benchmark" in text
    assert "| output tokens generated | 12,288 tokens |" in text
    assert "| preemptions | 0 preemptions |" in text and "the KV cache always had room" in text
    assert "| peak KV-cache usage | 3.1000 % |" in text


def test_hostile_text_is_escaped_in_the_report(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    run = fresh_db.start_run("day4", profile="gpu")
    _step(fresh_db, run, "compare", FAIL,
          CompareValues(source=HOSTILE, model=HOSTILE, workload=CompareWorkload(greedy=True)),
          [_crit("k", "k", "k", None, FAIL)], reason=HOSTILE)
    text = render(fresh_db, tmp_path)
    assert HOSTILE not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert not re.search(r"(?<!\\)\]\((http|javascript)", text)  # no live link or image
    assert "the compare step recorded no figures" in text and "Workload: greedy=True" in text


def test_render_all_writes_every_deliverable(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    paths = outputs.render_all(fresh_db, "zh", tmp_path)
    names = {p.name for p in paths}
    assert {"report.md", "deploy-notes.md", "dashboard.html", "prometheus.yml",
            "plot-sweep.png"} <= names
    assert all(p.exists() for p in paths)


def test_invoke_report_prints_paths_and_bad_options_give_one_line(tmp_path):
    ids = logbook_on_disk(tmp_path, gpu_logbook)
    out = run_invoke(["report", "--lang", "en", "--run", str(ids["day4"])], tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "report.md") in out.stdout and str(tmp_path / "dashboard.html") in out.stdout
    bad = run_invoke(["report", "--run", "x"], tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --run must be a whole number, got 'x'"


def test_api_key_never_reaches_any_deliverable(fresh_db, tmp_path):
    from tests.fakes.fake_logbook import LEAKED_KEY
    gpu_logbook(fresh_db)
    add_hostile(fresh_db)
    for path in outputs.render_all(fresh_db, "en", tmp_path):
        if path.suffix in (".md", ".html", ".yml"):
            assert LEAKED_KEY not in path.read_text(), path.name
