"""Entry points behind the Invoke tasks: each takes a Lab and returns an exit code.
tasks.py only parses options and calls these."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from lab.checklist import seeds as checklist
from lab.deliver import jinja as render
from lab.vllm import process as server
from lab.record.plan import Planned, exit_code, run_plan, summary_table
from lab.core.errors import LabError
from lab.record.session import Lab


def to_dict(proxy: Any) -> Any:
    """Invoke's nested DataProxy config as plain dicts."""
    if hasattr(proxy, "keys"):
        return {k: to_dict(proxy[k]) for k in proxy.keys()}
    return proxy


def step_fn(day: str, key: str, **kwargs: Any) -> Callable:
    fn = checklist.day_module(day).FUNCS[key]
    return functools.partial(fn, **kwargs) if kwargs else fn


def run_step_task(lab: Lab, day: str, key: str, **kwargs: Any) -> int:
    """One checklist step as its own recorded run, then re-render that day's log."""
    plan = [Planned(checklist.spec(day, key), step_fn(day, key, **kwargs))]
    _, results = run_plan(lab, day, plan, task=key, stop_after=False, options=kwargs)
    path = render.render_day(lab.book, day, lab.lang, lab.logbook_dir)
    lab.console.print(f"log: {path}")
    return exit_code(results)


def run_day(lab: Lab, day: str, *, keep_server: bool = False,
            kwargs: dict[str, dict] | None = None, options: dict | None = None,
            keys: list[str] | None = None) -> int:
    """A whole day in order; stop the server; render <day>.md; print the summary table.
    `kwargs[key]` are extra arguments for that step's function. The steps run are `keys`,
    else the day module's optional PLAN, else all its STEPS; a step left out is not
    recorded (it renders as pending)."""
    mod = checklist.day_module(day)
    kwargs = kwargs or {}
    keys = keys if keys is not None else getattr(mod, "PLAN", None)
    specs = mod.STEPS if keys is None else [checklist.spec(day, key) for key in keys]
    plan = [Planned(spec, step_fn(day, spec.key, **kwargs.get(spec.key, {})),
                    mod.NEEDS.get(spec.key)) for spec in specs]
    run_id, results = run_plan(lab, day, plan, task=day, stop_after=not keep_server,
                               options={"keep_server": keep_server, **(options or {})})
    path = render.render_day(lab.book, day, lab.lang, lab.logbook_dir, run_id=run_id)
    lab.console.print(summary_table(lab, day, results, checklist.specs(day)))
    lab.console.print(f"execution log: {path}")
    return exit_code(results)


def render_log(lab: Lab, day: str, run_id: int | None) -> Path:
    if day not in checklist.DAYS:
        raise LabError(f"unknown day {day!r}; choose one of {', '.join(checklist.DAYS)}")
    if run_id is not None and not lab.book.db["runs"].count_where("id = ?", [run_id]):
        raise LabError(f"no run #{run_id} in {lab.book.path}")
    return render.render_day(lab.book, day, lab.lang, lab.logbook_dir, run_id=run_id)


def stop(lab: Lab, all_orphans: bool = False) -> list[int]:
    """End the tracked server tree (and, with all_orphans, any untracked vLLM server)."""
    ended = server.stop(lab.state_path)
    if all_orphans:
        ended += server.stop_orphans(server.find_orphans(lab.state_path))
    return ended


def save_traceback(c: Any) -> str:
    """Write the current exception's traceback under the logbook; return its path."""
    import traceback
    from lab.core import config as cfgmod
    path = cfgmod.logbook_dir(to_dict(c.config.lab)) / "logs" / "last-error.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(traceback.format_exc())
    return str(path)
