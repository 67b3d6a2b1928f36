"""The PNG plots: drawn only from recorded rows, titled for what they show, never from
made-up numbers, and matplotlib is imported only when a plot is drawn."""
import subprocess
import sys

import numpy as np
import pytest

from lab.deliver import plots
from lab.deliver.gather import gather
from lab.record.values import BatchRow, LatencyStats, LevelSummary
from tests.conftest import ROOT
from tests.fakes.fake_logbook import cpu_logbook, gpu_logbook

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions save (to read titles and labels back)."""
    figs = []
    real_save = plots._save

    def save(fig, labels, path):
        figs.append(fig)
        return real_save(fig, labels, path)

    monkeypatch.setattr(plots, "_save", save)
    return figs


def _texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))


def test_gpu_timeline_plots_memory_and_utilisation_per_gpu(fresh_db, tmp_path, captured):
    gpu_logbook(fresh_db)
    path = plots.timeline(gather(fresh_db, now=0.0).samples, tmp_path / "t.png", "en")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000
    text = _texts(captured[0])
    assert "GPU memory and utilisation (NVML)" in text
    assert "GPU0 used" in text and "GPU0 total" in text and "GPU0 GPU utilisation" in text


def test_cpu_timeline_is_titled_as_the_process_tree(fresh_db, tmp_path, captured):
    cpu_logbook(fresh_db)
    plots.timeline(gather(fresh_db, now=0.0).samples, tmp_path / "t.png", "en")
    text = _texts(captured[0])
    assert "vLLM process tree (CPU profile, no GPU): RSS and CPU %" in text
    assert "RSS (MiB)" in text and "GPU memory" not in text


def test_nothing_recorded_draws_nothing(tmp_path):
    assert plots.timeline([], tmp_path / "a.png") is None
    assert plots.sweep([], tmp_path / "b.png") is None
    assert plots.sweep([LevelSummary(concurrency=None)], tmp_path / "b.png") is None
    assert plots.latency_distribution({}, tmp_path / "c.png") is None
    assert plots.latency_distribution({1: (np.empty(0), np.empty(0))}, tmp_path / "c.png") is None
    assert plots.offline([], tmp_path / "d.png") is None
    assert not list(tmp_path.iterdir())


def test_sweep_plots_levels_in_order_and_tolerates_missing_figures(tmp_path, captured):
    levels = [LevelSummary(concurrency=16, output_tok_s=1600.0, requests_per_s=12.5,
                           ttft_ms=LatencyStats(median=40.0, p99=60.0)),
              LevelSummary(concurrency=1, output_tok_s=170.0, requests_per_s=None,
                           ttft_ms=LatencyStats(median=19.0, p99=None))]
    assert plots.sweep(levels, tmp_path / "s.png", "en").exists()
    thr = captured[0].axes[0]
    assert list(thr.get_lines()[0].get_xdata()) == [1, 16]
    assert "Concurrency sweep" in _texts(captured[0])


def test_distribution_counts_only_measured_successful_requests(fresh_db, tmp_path, captured):
    run = fresh_db.start_run("day4")
    step = fresh_db.start_step(run, "bench", title="b", command="c", expected="")
    for c, rec in ((1, {"ok": 1, "warmup": 0, "ttft_s": 0.02, "tpot_s": 0.005}),
                   (1, {"ok": 1, "warmup": 1, "ttft_s": 9.0, "tpot_s": 9.0}),     # warm-up: left out
                   (1, {"ok": 0, "warmup": 0, "ttft_s": None, "tpot_s": None}),  # failed: left out
                   *[(4, {"ok": 1, "warmup": 0, "ttft_s": 0.03, "tpot_s": 0.006})] * 3):
        fresh_db.add_request(run, step, "sweep", {"concurrency": c, "level": f"c{c}", **rec})
    fresh_db.end_step(step, status="pass")
    data = gather(fresh_db, now=0.0)
    by_level = {lv.concurrency: (lv.ttft_ms, lv.tpot_ms) for lv in data.levels}
    assert list(by_level[1][0]) == pytest.approx([20.0])
    plots.latency_distribution(by_level, tmp_path / "d.png", "en")
    assert "requests per box: 1, 3" in _texts(captured[0])


@pytest.mark.filterwarnings("ignore:Glyph")  # the stand-in "CJK" font has no CJK glyphs
def test_labels_are_chinese_only_with_a_cjk_font(monkeypatch, tmp_path, captured):
    monkeypatch.setattr(plots, "cjk_font", lambda: None)
    plots.offline([BatchRow(1, output_tok_s=10.0), BatchRow(4, output_tok_s=30.0)],
                  tmp_path / "o.png", "zh")
    assert "Offline LLM.generate" in _texts(captured[-1])  # no CJK glyphs: English, not boxes
    monkeypatch.setattr(plots, "cjk_font", lambda: "DejaVu Sans")
    plots.offline([BatchRow(1, output_tok_s=10.0)], tmp_path / "o.png", "zh")
    assert "离线 LLM.generate" in _texts(captured[-1])


def test_matplotlib_is_imported_only_when_a_plot_is_drawn():
    code = ("import sys, tasks, lab.deliver.plots, lab.deliver.report, lab.deliver.dashboard, lab.deliver.progress, lab.deliver.deploy_notes; "
            "print(sorted(m for m in ('matplotlib', 'vllm', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
