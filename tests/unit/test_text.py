"""lab.core.text: log lines as the terminal showed them, and the tail a failed step keeps."""

from __future__ import annotations

from lab.core.text import clean_lines, shown_lines, tail_file, tail_text


def test_tail_returns_last_lines_without_colour_or_progress_redraws(tmp_path):
    log = tmp_path / "x.log"
    lines = [f"line {i}" for i in range(100)] + ["\x1b[32mINFO\x1b[0m done",
                                                  "bar 10%\rbar 50%\rbar 100%", ""]
    log.write_text("\n".join(lines))
    assert tail_file(log, 3).splitlines() == ["line 99", "INFO done", "bar 100%"]
    assert tail_file(tmp_path / "missing.log") == ""
    assert tail_file(None) == "" and tail_file(log, 0) == ""


def test_tail_of_a_large_file_reads_only_its_end(tmp_path):
    log = tmp_path / "big.log"
    with open(log, "w") as fh:
        for i in range(200_000):
            fh.write(f"INFO {i} loading weights ...\n")
        fh.write("ERROR CUDA out of memory\n")
    assert tail_file(log, 2).splitlines() == ["INFO 199999 loading weights ...",
                                              "ERROR CUDA out of memory"]


def test_tail_skips_blank_lines_and_keeps_bad_bytes(tmp_path):
    log = tmp_path / "b.log"
    log.write_bytes(b"a\n\n\nb \xff\n\n")
    assert tail_file(log, 5) == "a\nb \ufffd"


def test_clean_lines_splits_redraws_for_parsing_while_shown_lines_keeps_the_last():
    text = "\x1b[1mKV cache\x1b[0m size\nstep 1\rstep 2"
    assert clean_lines(text) == ["KV cache size", "step 1", "step 2"]
    assert shown_lines(text) == ["KV cache size", "step 2"]
    assert tail_text(text, 1) == "step 2" and tail_text(text, 0) == ""
