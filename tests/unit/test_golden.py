"""Every deliverable rendered from the golden logbooks equals tests/golden/expected/.

The expected files were rendered by the code before the restructure (tests/golden/README.md);
a deliberate change re-renders them: `python tests/unit/test_golden.py --update`.
"""
from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
FROZEN = 1_764_400_000.0  # 2025-11-29 07:06:40 UTC
FIXTURES = {"cpu": True, "gpu": False}  # fixture -> render the day logs too


def load_fixture(sql: Path, db: Path) -> Path:
    conn = sqlite3.connect(db)
    conn.executescript(sql.read_text(encoding="utf-8"))
    conn.commit()
    conn.close()
    return db


def render_everything(db: Path, out: Path, days: bool) -> None:
    """Each deliverable in zh and en, as `invoke log/report/status/compare-runs` render them."""
    from dataclasses import asdict

    from lab.deliver import compare_runs, day_log, outputs, progress
    from lab.deliver.gather import gather
    from lab.record.logbook import Logbook

    book = Logbook(db)
    data = gather(book, now=time.time(), measurements=False)
    runs = list(data.records.runs.values())
    for lang in ("zh", "en"):
        d = out / lang
        d.mkdir(parents=True, exist_ok=True)
        if days:
            for day in sorted({r.day for r in runs}):
                day_log.render_day(data, day, lang, d)
            for r in runs:
                day_log.render_day(data, r.day, lang, d / f"run{r.id}", run_id=r.id)
        outputs.render_all(book, lang, d)
        progress.render_progress(data, lang, d)
        by_day: dict[str, list[int]] = {}
        for r in runs:
            by_day.setdefault(r.day, []).append(r.id)
        cmp = {f"{day}:{ids[0]}-{ids[-1]}":
               [asdict(row) for row in compare_runs.compare_runs(data, ids[0], ids[-1]).rows]
               for day, ids in sorted(by_day.items()) if len(ids) >= 2}
        (d / "compare-runs.json").write_text(
            json.dumps(cmp, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
        normalize(d)
    book.close()


def normalize(folder: Path) -> None:
    """PNG plots listed by name; their data URIs in the dashboard replaced by `(plot)`."""
    pngs = sorted(p.name for p in folder.glob("*.png"))
    (folder / "plots.txt").write_text("".join(f"{name}\n" for name in pngs), encoding="utf-8")
    for png in folder.glob("*.png"):
        png.unlink()
    board = folder / "dashboard.html"
    if board.exists():
        board.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+",
                                "data:image/png;base64,(plot)", board.read_text(encoding="utf-8")),
                         encoding="utf-8")


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8")
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(time, "time", lambda: FROZEN)
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_deliverables_equal_the_golden_files(fixture, tmp_path, frozen_clock):
    db = load_fixture(GOLDEN / f"logbook-{fixture}.sql", tmp_path / "lab.db")
    render_everything(db, tmp_path / "out", FIXTURES[fixture])
    got, want = files(tmp_path / "out"), files(GOLDEN / "expected" / fixture)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{fixture}/{name} differs from the golden file"


def update() -> None:
    """Re-render tests/golden/expected/ with today's code (after a deliberate change)."""
    import os
    import shutil
    import tempfile
    os.environ["TZ"] = "UTC"
    time.tzset()
    time.time = lambda: FROZEN  # type: ignore[assignment]
    for fixture, days in FIXTURES.items():
        tmp = Path(tempfile.mkdtemp())
        db = load_fixture(GOLDEN / f"logbook-{fixture}.sql", tmp / "lab.db")
        target = GOLDEN / "expected" / fixture
        shutil.rmtree(target, ignore_errors=True)
        render_everything(db, target, days)
        print("rendered", target)


if __name__ == "__main__" and "--update" in sys.argv:
    sys.path.insert(0, str(ROOT))
    update()
