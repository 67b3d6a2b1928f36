"""Everything `invoke report` writes, from one reading of the logbook (lab.deliver.gather):
report.md and its PNG plots, deploy-notes.md, dashboard.html, prometheus.yml and
experiments.md. Each output
is a peer that takes the gathered data, the language and the output folder."""

from __future__ import annotations

import time
from pathlib import Path

from lab.deliver import dashboard, deploy_notes, experiments, prometheus, report
from lab.deliver.gather import gather
from lab.record.logbook import Logbook


def render_all(
    book: Logbook,
    lang: str,
    out_dir: Path,
    run_id: int | None = None,
    default_target: str = "127.0.0.1:8000",
    now: float | None = None,
) -> list[Path]:
    """Render every deliverable; the logbook is read and the plots drawn once. `now` is the
    render's clock (default: the current time).

    Command line equivalent: `invoke report`
    """
    data = gather(book, run_id, now=time.time() if now is None else now)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = report.make_plots(data, lang, out_dir)
    return [
        report.render_report(data, lang, out_dir, plots),
        *plots.values(),
        deploy_notes.render_deploy_notes(data, lang, out_dir),
        dashboard.render_dashboard(data, lang, out_dir, plots),
        prometheus.write_prometheus(data, out_dir, default_target),
        *experiments.render_experiments(data, lang, out_dir),
    ]
