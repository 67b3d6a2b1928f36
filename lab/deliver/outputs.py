"""Everything `invoke report` writes, from one reading of the logbook: report.md and its PNG
plots, deploy-notes.md, dashboard.html and prometheus.yml."""
from __future__ import annotations

from pathlib import Path

from lab.deliver import dashboard, deploy_notes, prometheus, report
from lab.record.logbook import Logbook


def render_all(book: Logbook, lang: str, out_dir: Path, run_id: int | None = None,
               default_target: str = "127.0.0.1:8000") -> list[Path]:
    """Render every deliverable; the logbook is read and the plots drawn once.

    Command line equivalent: `invoke report`
    """
    data = report.gather(book, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = report.make_plots(data, out_dir, lang)
    paths = [report.render_report(book, lang, out_dir, run_id, data, plots), *plots.values(),
             deploy_notes.render_deploy_notes(book, lang, out_dir),
             dashboard.render_dashboard(book, lang, out_dir, run_id, data, plots),
             prometheus.write_prometheus(book, out_dir, default_target)]
    return paths
