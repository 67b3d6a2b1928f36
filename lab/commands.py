"""The verbs behind the Invoke tasks: each takes a Lab and returns an exit code or the paths it
wrote. tasks.py only parses options and calls these; they wire the checklist (what to run),
the record (running and recording it), the terminal (lab.ui) and the deliverables."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.checklist import roadmap, seeds
from lab.core.config import number
from lab.core.errors import ConfigError, LabError
from lab.deliver import compare_runs as compare_runs_mod
from lab.deliver import day_log, outputs, progress
from lab.deliver.gather import LabData, gather
from lab.record.logbook import Logbook
from lab.record.session import Lab
from lab.ui import tables


def to_dict(proxy: Any) -> Any:
    """Invoke's nested DataProxy config as plain dicts."""
    if hasattr(proxy, "keys"):
        return {k: to_dict(proxy[k]) for k in proxy.keys()}  # noqa: SIM118 (a DataProxy)
    return proxy


def records(lab: Lab) -> LabData:
    """The logbook's records, read once for a render (no measurements: day logs, progress)."""
    return gather(lab.book, now=time.time(), measurements=False)


def terminal(lab: Lab, retries: bool = True) -> dict:
    """The terminal callbacks of a runner: each step's start and result, and, for run_plan
    (`retries`), the retry of a failed start with its known fix (an experiment retries
    nothing)."""
    shown: dict[str, Callable[..., None]] = {
        "on_start": lambda spec: tables.print_step_start(lab.console, spec, lab.lang),
        "on_result": lambda res: tables.print_result(lab.console, res),
    }
    if retries:
        shown["on_retry"] = lambda res, fix: tables.print_retry(lab.console, fix, lab.lang)
    return shown


def run_step_task(lab: Lab, day: str, key: str, **kwargs: Any) -> int:
    """One checklist step as its own recorded run, then re-render that day's log."""
    # The step functions and the runner (and what they import) only where steps run.
    from lab.checklist import days
    from lab.record.plan import Planned, exit_code, run_plan

    plan = [Planned(seeds.day(day).spec(key), days.step_fn(day, key, **kwargs))]
    _, results = run_plan(
        lab, day, plan, task=key, stop_after=False, options=kwargs, **terminal(lab)
    )
    path = day_log.render_day(records(lab), day, lab.lang, lab.logbook_dir)
    lab.console.print(f"log: {path}")
    return exit_code(results)


def run_day(
    lab: Lab,
    day: str,
    *,
    keep_server: bool = False,
    kwargs: dict[str, dict] | None = None,
    options: dict | None = None,
    keys: list[str] | None = None,
    task: str | None = None,
) -> int:
    """A whole day in order; stop the server; render <day>.md; print the summary table.
    `kwargs[key]` are extra arguments for that step's function. The steps run are `keys`,
    else the day's plan, else all its steps; a step left out is not recorded (it renders
    as pending)."""
    from lab.checklist import days
    from lab.record.plan import Planned, exit_code, run_plan

    the_day = seeds.day(day)
    kwargs = kwargs or {}
    keys = keys if keys is not None else the_day.plan
    specs = the_day.steps if keys is None else [the_day.spec(key) for key in keys]
    plan = [
        Planned(
            spec,
            days.step_fn(day, spec.key, **kwargs.get(spec.key, {})),
            the_day.needs.get(spec.key, ()),
        )
        for spec in specs
    ]
    run_id, results = run_plan(
        lab,
        day,
        plan,
        task=task or day,
        stop_after=not keep_server,
        options={"keep_server": keep_server, **(options or {})},
        **terminal(lab),
    )
    path = day_log.render_day(records(lab), day, lab.lang, lab.logbook_dir, run_id=run_id)
    lab.console.print(
        tables.summary_table(day, lab.profile_name, lab.lang, results, the_day.specs())
    )
    tables.print_fixes(lab.console, results, lab.lang)
    if lab.last_stop is not None and lab.last_stop.pids:
        tables.print_stop(lab.console, lab.last_stop, lab.lang)
        if not lab.last_stop.clean:  # not handed back: fail loudly, naming what holds on
            from lab.core.errors import GpuMemoryHeld
            from lab.record.session import held_message

            raise GpuMemoryHeld(held_message(lab.last_stop))
    lab.console.print(f"execution log: {path}")
    return exit_code(results)


def render_log(lab: Lab, day: str, run_id: int | None) -> Path:
    seeds.day(day)
    data = records(lab)
    if run_id is not None and run_id not in data.records.runs:
        raise LabError(f"no run #{run_id} in {lab.book.path}")
    return day_log.render_day(data, day, lab.lang, lab.logbook_dir, run_id=run_id)


def stop(lab: Lab, all_orphans: bool = False) -> list[int]:
    """End the tracked server tree (and, with all_orphans, any untracked vLLM server)."""
    return stop_report(lab, all_orphans)[0]


def stop_report(lab: Lab, all_orphans: bool = False) -> tuple[list[int], str]:
    """`invoke stop`: end the tracked server tree (and, with all_orphans, any untracked vLLM
    server), wait until its processes are gone and, for a server started on a GPU profile,
    until NVML shows its memory released. Returns (pids ended, one line saying how long it
    took). GpuMemoryHeld (naming what still holds memory) when it was not handed back."""
    import dataclasses

    from lab.core.errors import GpuMemoryHeld
    from lab.record.session import held_message
    from lab.vllm import process as server

    state = server.load(lab.state_path)
    if state is not None and state.profile in ("gpu", "rehearsal") and not lab.has_gpu:
        lab = dataclasses.replace(lab, profile_name=state.profile)  # the server's own profile
    report = lab.stop_server(loud=False)
    ended = list(report.pids)
    from lab.vllm import nodes  # every local node rank too (Day 6's cluster; issue 12)

    ended += nodes.stop_local(lab.state_path)
    if all_orphans:
        ended += server.stop_orphans(server.find_orphans(lab.state_path))
    line = f"stopped {len(ended)} process(es)" + (
        f": {', '.join(map(str, ended))}" if ended else ""
    )
    if report.stop_s is not None and report.pids:
        line += f" in {report.stop_s:.1f} s"
    if report.release_s is not None:
        line += f"; GPU memory released in {report.release_s:.1f} s"
    if not report.clean:
        raise GpuMemoryHeld(f"{line}; {held_message(report)}")
    return ended, line


def run_report(lab: Lab, run: Any = None) -> list[Path]:
    """`invoke report [--run N] [--lang en]`: render every deliverable; returns the paths."""
    run_id = int(number(run, "--run", low=1, integer=True)) if run not in (None, "") else None
    from lab.core.net import host_port

    return outputs.render_all(
        lab.book,
        lab.lang,
        lab.logbook_dir,
        run_id,
        default_target=host_port(lab.cfg["host"], lab.cfg["port"]),
    )


def run_status(lab: Lab) -> Path:
    """`invoke status`: print the checklist as a table and render progress.md."""
    data = records(lab)
    groups = progress.checklist_state(data.records, lab.lang)
    lab.console.print(tables.status_table([asdict(g) for g in groups], lab.lang))
    return progress.render_progress(data, lab.lang, lab.logbook_dir)


def mark_done(book: Logbook, item_id: str, note: str = "", undo: bool = False) -> roadmap.Item:
    """`invoke done ITEM --note "..."`: tick (or, with undo, untick) a note item."""
    items = roadmap.items_by_id()
    item = items.get(item_id)
    if item is None:
        manual = ", ".join(i.id for i in items.values() if i.manual)
        raise ConfigError(f"unknown item {item_id!r}; items ticked by hand: {manual}")
    if not item.manual:
        commands = sorted({ev.command() for ev in item.evidence})
        raise ConfigError(
            f"{item_id} is ticked only from recorded results; run "
            f"{' and '.join(f'`{c}`' for c in commands)}"
        )
    book.mark_done(item_id, note=note, done=not undo)
    return item


def run_done(lab: Lab, item: str, note: str = "", undo: bool = False) -> Path:
    """`invoke done ITEM --note "..."`: tick a note item, then re-render progress.md."""
    from rich.markup import escape

    picked = mark_done(lab.book, item, note=note, undo=undo)
    verb = (
        ("取消勾选" if undo else "已勾选")
        if lab.lang == "zh"
        else ("unticked" if undo else "ticked")
    )
    lab.console.print(f"{verb}: {picked.id} — {escape(picked.label(lab.lang))}")
    return progress.render_progress(records(lab), lab.lang, lab.logbook_dir)


def run_compare_runs(lab: Lab, a: Any, b: Any) -> None:
    """`invoke compare-runs A B`: what changed between two runs of the same day."""
    found = compare_runs_mod.compare_runs(
        records(lab),
        int(number(a, "run A", low=1, integer=True)),
        int(number(b, "run B", low=1, integer=True)),
    )
    lab.console.print(tables.compare_table(asdict(found), lab.lang))


def save_traceback(c: Any) -> str:
    """Write the current exception's traceback under the logbook; return its path."""
    import traceback

    from lab.core import config as cfgmod

    path = cfgmod.logbook_dir(to_dict(c.config.lab)) / "logs" / "last-error.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(traceback.format_exc())
    return str(path)


# -- experiments (lab.checklist.experiments) -------------------------------------------------
def list_experiments(lab: Lab) -> None:
    """`invoke experiment --list`: name, question, arms and profiles of every experiment."""
    from lab.checklist import experiments

    lab.console.print(tables.experiments_table(experiments.all_experiments(), lab.lang))


def run_experiment(
    lab: Lab, name: str, rounds: Any = None, arms: str | None = None, num_requests: Any = None
) -> int:
    """`invoke experiment NAME`: run it on the session's profile, record it, render
    experiments.md; 0 when every arm and the verdict passed (or were honestly skipped)."""
    from lab.checklist import experiments
    from lab.checklist.experiments.runner import run_experiment as run
    from lab.deliver import experiments as experiments_doc
    from lab.record.plan import exit_code

    exp = experiments.get(name)
    n = int(number(rounds, "--rounds", low=1, integer=True)) if rounds not in (None, "") else None
    if arms:
        exp = experiments.only_arms(
            exp, [a.strip() for a in arms.split(",") if a.strip()], lab.profile_name
        )
    if num_requests not in (None, ""):
        exp = experiments.with_requests(
            exp, int(number(num_requests, "--num-requests", low=1, integer=True)), lab.profile_name
        )
    lab.console.rule(f"[bold]experiment {exp.name}[/] — {exp.question(lab.lang)}")
    _, values, results = run(lab, exp, n, **terminal(lab, retries=False))
    from lab.checklist.experiments.verdict import verdict_line

    lab.console.print(f"verdict: {verdict_line(values, exp.metrics, lab.lang)}", markup=False)
    lesson = values.lesson_zh if lab.lang == "zh" else values.lesson_en
    if lesson:
        lab.console.print(f"lesson: {lesson}", markup=False)
    paths = experiments_doc.render_experiments(
        records_with_measurements(lab), lab.lang, lab.logbook_dir
    )
    lab.console.print(f"experiments: {paths[0]}")
    return exit_code(results)


def records_with_measurements(lab: Lab) -> LabData:
    """The logbook's records with measurements (what experiments.md reads)."""
    return gather(lab.book, now=time.time(), measurements=True)


# ------------------------------------------------------------------------------------------
# Day 6: one model across several nodes (issue 12)
# ------------------------------------------------------------------------------------------
def layout_from(
    lab: Lab,
    *,
    nnodes: int | None = None,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    dp: int | None = None,
    executor: str | None = None,
    running: bool = True,
) -> Any:
    """The node layout from the flags; flags left out come from the running local cluster
    (`running`), else the defaults: 2 nodes, PP = nnodes, TP = 1, master 127.0.0.1:29555."""
    from lab.vllm.nodes import Layout

    saved = lab_cluster(lab) if running else None
    base = saved if saved is not None else Layout(nnodes=2, pp=2)
    n = nnodes if nnodes is not None else base.nnodes
    layout = Layout(
        nnodes=n,
        node_rank=node_rank,
        master_addr=master_addr or base.master_addr,
        master_port=master_port if master_port is not None else base.master_port,
        tp=tp if tp is not None else (base.tp if nnodes is None else 1),
        pp=pp if pp is not None else (base.pp if nnodes is None else n),
        dp=dp if dp is not None else base.dp,
        executor=executor or base.executor,
    )
    return layout.validate()


def lab_cluster(lab: Lab) -> Any:
    """The layout of the running local cluster, or None."""
    from lab.vllm import nodes

    saved = nodes.load_cluster(lab.state_path)
    return saved[0] if saved is not None else None


def run_cluster(lab: Lab, layout: Any, model: str | None = None) -> int:
    """`invoke cluster --nnodes N`: every node rank on this host, each on its own devices
    (recorded as Day 6's `nodes` and `serve-nodes`); left running for `invoke day6`."""
    from lab.vllm import nodes

    if not layout.local:
        raise ConfigError(
            f"`invoke cluster` runs every node rank on this host: --master-addr "
            f"must be a loopback address (got {layout.master_addr}); on real hosts "
            "run `invoke node` on each and `invoke serve --nnodes …` on the head"
        )
    code = run_day(
        lab,
        "day6",
        keep_server=True,
        keys=["nodes", "serve-nodes"],
        task="cluster",
        kwargs={
            "nodes": {"layout": layout},
            "serve-nodes": {"layout": layout, "model": model, "adopt": False},
        },
        options={"layout": layout.public(), "model": model},
    )
    if code:  # nothing half-started is left behind
        from lab.vllm import process as server

        server.stop(lab.state_path)
        nodes.stop_local(lab.state_path)
    return code


def run_day6(lab: Lab, layout: Any, *, keep_server: bool = False, model: str | None = None) -> int:
    """`invoke day6`: the steps on the head; a running local cluster with this layout is used,
    else it is started (loopback master: every rank here; else the head, waiting for the
    other hosts' `invoke node`). Every local node rank is stopped at the end."""
    from lab.vllm import nodes

    try:
        return run_day(
            lab,
            "day6",
            keep_server=keep_server,
            kwargs={"nodes": {"layout": layout}, "serve-nodes": {"layout": layout, "model": model}},
            options={"layout": layout.public(), "model": model, "keep_server": keep_server},
        )
    finally:
        if not keep_server:
            nodes.stop_local(lab.state_path)
