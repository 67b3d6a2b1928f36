"""lab.explain: the bilingual explanations as data. Each explanation exists in both
languages, and the meanings drawn from a benchmark's figures say what the figures say."""
import pytest

from lab.core.errors import ConfigError
from lab.explain import bench, flags, metrics, notes, params


def test_interpret_explains_each_figure_from_its_value():
    f = metrics.BenchFigures(
        requests_finished=20.0, prompt_tokens=400.0, generation_tokens=900.0, preemptions=3.0,
        mean_queue_time_s=0.25, mean_ttft_s=0.3, mean_tpot_s=0.01, peak_kv_usage_frac=0.95,
        kv_samples=7, kv_interval_s=0.5, client_requests=20, client_prompt_tokens=400,
        client_output_tokens=900)
    zh = {r.key: r for r in metrics.interpret(f, "zh")}
    en = {r.key: r for r in metrics.interpret(f, "en")}
    assert zh["generation_tokens"].value == 900.0 and "一致" in zh["generation_tokens"].meaning
    assert "3 preemptions" in en["preemptions"].meaning
    assert en["peak_kv_cache_usage"].value == pytest.approx(95.0)
    assert "nearly full" in en["peak_kv_cache_usage"].meaning and "7 samples" in \
        en["peak_kv_cache_usage"].meaning
    assert en["mean_queue_time"].value == pytest.approx(250.0)
    assert "25 decode steps" in en["mean_queue_time"].meaning
    assert en["mean_tpot"].value == pytest.approx(10.0)
    assert zh["preemptions"].label == "抢占次数" and en["preemptions"].label == "preemptions"


def test_interpret_of_nothing_measured_invents_nothing():
    empty = metrics.interpret(metrics.BenchFigures(), "en")
    assert len(empty) == 8 and all(r.value is None for r in empty)
    kv = next(r for r in empty if r.key == "peak_kv_cache_usage")
    assert "could not be read" in kv.meaning
    assert "n/a" in next(r for r in empty if r.key == "requests_finished").meaning
    # the client's count differs from nothing measured: said so, not "they agree"
    assert "differ" in next(r for r in empty if r.key == "generation_tokens").meaning


def test_every_key_series_and_old_name_is_explained_in_both_languages():
    for info in metrics.KEY_SERIES:
        assert info.meaning("zh") and info.meaning("en") and info.meaning("zh") != info.meaning("en")
        assert metrics.series_info(info.name) is info
        if info.old_name:
            assert info.old_name in metrics.OLD_NAMES
    for old in metrics.OLD_NAMES.values():
        assert old.note("zh") and old.note("en")
    assert metrics.series_info("vllm:not_a_series") is None


@pytest.mark.parametrize("table", [flags.PARAMS, flags.ENV_VARS])
def test_every_flag_note_has_both_languages(table):
    for name, entry in table.items():
        zh, en = entry.text("zh"), entry.text("en")
        for field in ("default", "meaning", "memory", "speed"):
            assert getattr(zh, field) and getattr(en, field), (name, field)
        assert zh.seed == en.seed


def test_seed_params_and_notes_on_where_this_vllm_differs():
    assert [p.flag for p in params.SEED_PARAMS][:2] == ["--model", "--tensor-parallel-size"]
    assert params.BY_NAME["block_size"].seed_default == 16
    assert "V1" in params.note("swap_space", None, False, True, "en")
    assert "VLLM_CPU_KVCACHE_SPACE" in params.note("gpu_memory_utilization", 0.9, True, False, "en")
    assert params.note("gpu_memory_utilization", 0.9, True, True, "en") == ""
    assert params.note("block_size", 128, True, False, "zh") == "本次为 128（种子说默认 16；CPU 后端的默认值）"
    assert params.note("enable_prefix_caching", True, True, True, "en").startswith("on by default")


def test_definitions_notes_and_languages():
    assert [t for t, _ in bench.definitions("en")][:2] == ["TTFT", "TPOT"]
    assert len(bench.naming("zh")) == len(bench.NAMING)
    for name, (zh, en) in notes.NOTES.items():
        assert zh and en and zh != en, name
        assert notes.note(name, "zh") == zh and notes.note(name, "en") == en
    with pytest.raises(ConfigError):
        notes.note("bench_definitions", "fr")
