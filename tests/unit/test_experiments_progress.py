"""`invoke status` ticks a phase-2/3 item from a measured experiment (and links it); a
skipped or failed verdict does not; a note still ticks it by hand."""
from __future__ import annotations

from lab.deliver.progress import checklist_state
from lab.record.logbook import FAIL, PASS, SKIPPED, Logbook
from lab.record.queries import Records
from lab.record.values import ExperimentValues


def record_verdict(book: Logbook, name: str, status: str, skipped: str | None = None) -> int:
    run = book.start_run("experiment", task=f"experiment {name}", profile="cpu")
    step = book.start_step(run, "experiment", title=name, command="", expected="")
    book.end_step(step, status=status, values=ExperimentValues(
        name=name, profile="cpu", rounds=1, skipped=skipped,
        lesson_en="TTFT went from 631 ms to 45 ms", lesson_zh="TTFT 从 631 ms 变为 45 ms"))
    book.end_run(run, status)
    return run


def item(book: Logbook, item_id: str, lang: str = "en"):
    groups = checklist_state(Records(book), lang)
    return next(i for g in groups for i in g.entries if i.id == item_id)


def test_a_measured_experiment_ticks_its_items_and_links_experiments_md(tmp_path):
    book = Logbook(tmp_path / "lab.db")
    assert not item(book, "p2-paged").done
    run = record_verdict(book, "prefix-caching", PASS)
    state = item(book, "p2-paged")
    assert state.done and state.status == PASS and state.run_ids == [run]
    assert "experiments.md#prefix-caching" in state.detail and "631 ms" in state.detail
    assert not item(book, "p2-backend").done  # attention-backend has not run


def test_a_skipped_or_failed_verdict_ticks_nothing(tmp_path):
    book = Logbook(tmp_path / "lab.db")
    record_verdict(book, "attention-backend", SKIPPED, skipped="no NVIDIA GPU: CPU profile")
    record_verdict(book, "cuda-graphs", FAIL)
    assert not item(book, "p2-backend").done and not item(book, "p3-tuning").done


def test_a_note_still_ticks_it_by_hand(tmp_path):
    book = Logbook(tmp_path / "lab.db")
    book.mark_done("p2-backend", note="read vllm/attention/backends")
    state = item(book, "p2-backend", "zh")
    assert state.done and "read vllm/attention/backends" in state.detail
