"""Run steps as recorded runs: one step (`invoke serve`) or a whole day (`invoke day3`).

While a step uses a running server, a watcher (lab.vllm.watch) follows the server's log and
process tree: a fatal line or a process exit ends the server at once, and the step fails with
the diagnosis, keeping what it measured. A failed server start whose failure has a known safe
fix is retried once with it (`--fix auto`); both attempts are recorded."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lab.core.errors import LabError, ServerDied
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, SKIPPED
from lab.record.runner import Outcome, StepContext, StepResult, StepSpec, run_step
from lab.record.session import Lab
from lab.record.values import FixApplied, ServeValues
from lab.vllm import process as server
from lab.vllm import watch

StepFn = Callable[[Lab, StepContext], Outcome]
#: on_retry(failed result, the fix about to be tried): the terminal says what happens.
OnRetry = Callable[[StepResult, FixApplied], None]


@dataclass
class Planned:
    spec: StepSpec
    fn: StepFn
    #: Keys of steps that must have passed (or been skipped) first, when they ran in this plan.
    needs: tuple[str, ...] = ()


def _run_one(lab: Lab, run_id: int, item: Planned) -> StepResult:
    return run_step(
        lab.book,
        run_id,
        item.spec,
        lab.lang,
        lambda ctx: _watched(lab, item.spec.key, lambda: item.fn(lab, ctx)),
        diagnose=lambda text: _diagnose_lang(text, lab.lang),
    )


def _diagnose_lang(text: str, lang: str) -> str | None:
    from lab.vllm import diagnose

    return diagnose.first_fix(text, lang)


@contextlib.contextmanager
def _watch_running(lab: Lab) -> Iterator[watch.Watcher | None]:
    """Watch the tracked server while the block runs, when one is up. On a failure the
    server tree is ended at once (short grace), so the step's requests fail fast instead of
    hanging on a server that will never answer."""
    state = server.load(lab.state_path)
    if state is None or not server.is_alive(state):
        yield None
        return
    watcher = server.make_watcher(state, from_start=False, lang=lab.lang)
    stops: list[server.StopReport] = []
    watcher.stop_reports = stops  # type: ignore[attr-defined]

    def on_failure(_failure: watch.Failure) -> None:
        stops.append(
            server.stop_tree(
                lab.state_path, server.FAILED_GRACE_S, wait_released=lab.release_wait()
            )
        )

    with watch.watching(watcher, on_failure=on_failure):
        yield watcher


def _watched(lab: Lab, key: str, run: Callable[[], Outcome]) -> Outcome:
    """Run a step under the server watcher: if the server failed meanwhile, the step fails
    with the diagnosis (not only a connection error) and keeps what it measured."""
    with _watch_running(lab) as watcher:
        try:
            out = run()
        except LabError as err:
            if watcher is not None and watcher.failure is not None:
                raise _step_failure(lab, watcher, key, err.values, err) from None
            raise
    if watcher is not None and watcher.failure is not None:
        raise _step_failure(lab, watcher, key, out.values)
    return out


def _step_failure(
    lab: Lab, watcher: watch.Watcher, key: str, values: object, cause: LabError | None = None
) -> LabError:
    failure = watcher.failure
    assert failure is not None
    reports = getattr(watcher, "stop_reports", [])
    state = server.load(lab.state_path)
    if state is not None:  # not ended by the watcher (e.g. it raced the step's own stop)
        reports.append(
            server.stop_tree(
                lab.state_path, server.FAILED_GRACE_S, wait_released=lab.release_wait()
            )
        )
    detect = (
        f"; detected {failure.detect_s:.1f} s after the crash line"
        if failure.detect_s is not None
        else ""
    )
    released = next((r for r in reports if r.pids), None)
    handed = ""
    if released is not None:
        handed = f"; {len(released.pids)} process(es) ended in {released.stop_s or 0:.1f} s"
        if released.release_s is not None:
            handed += f", GPU memory released in {released.release_s:.1f} s"
        if released.held or released.survivors:
            from lab.record.session import held_message

            handed += f"; {held_message(released)}"
    # The step's own account (where it stopped, what it kept), after the diagnosis.
    told = f"; {str(cause).removesuffix('; last log lines below')}" if cause is not None else ""
    err = ServerDied(
        f"vLLM server failed during `{key}`: {failure.summary(lab.lang)}"
        f"{detect}{handed}{told}; what the step measured is kept; last log lines below",
        fix=failure.fix(),
        evidence=failure.evidence,
    )
    err.values = values
    err.failure = failure  # type: ignore[attr-defined]
    return err


def _remedy(lab: Lab, res: StepResult) -> FixApplied | None:
    """The known fix of a failed server start, when `--fix auto` should retry with it."""
    if res.status != FAIL or lab.cfg.get("fix", "auto") != "auto":
        return None
    v = res.values
    if not isinstance(v, ServeValues) or v.remedy is None or v.fix is not None:
        return None  # no known fix, or this already was the retry
    if v.stop is not None and (v.stop.held or v.stop.survivors):
        return None  # the failed server was not handed back: a retry would not fit
    return dataclasses.replace(
        v.remedy, failed_step_id=res.step_id, failed=v.failure, failed_stop=v.stop
    )


def run_plan(
    lab: Lab,
    day: str,
    plan: list[Planned],
    *,
    task: str,
    stop_after: bool,
    options: dict | None = None,
    on_start: Callable[[StepSpec], None] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    on_retry: OnRetry | None = None,
) -> tuple[int, list[StepResult]]:
    """Run `plan` as one recorded run of `day`. Ctrl-C/SIGTERM stops the server, marks the
    step interrupted and re-raises; `stop_after` stops the server when the plan ends (and
    waits for its GPU memory; `lab.last_stop` says how it went).
    A failed start with a known safe fix is run once more with it (`--fix auto`); the
    failed attempt stays in the logbook, and the returned results hold the retry in its
    place. `on_start`, `on_result` and `on_retry` let the terminal show each step (lab.ui);
    this layer prints nothing."""
    book = lab.book
    run_id = book.start_run(
        day, task=task, profile=lab.profile_name, lang=lab.lang, options=_public(options or {})
    )
    results: list[StepResult] = []
    passed: dict[str, str] = {}
    try:
        with server.stop_on_interrupt(lab.state_path, wait_released=lab.release_wait()):
            for item in plan:
                blocker = next(
                    (n for n in item.needs if n in passed and passed[n] not in (PASS, SKIPPED)),
                    None,
                )
                if blocker is not None:
                    res = _not_run(lab, run_id, item, blocker)
                else:
                    if on_start is not None:
                        on_start(item.spec)
                    res = _run_one(lab, run_id, item)
                    fix = _remedy(lab, res)
                    if fix is not None:
                        if on_result is not None:
                            on_result(res)
                        if on_retry is not None:
                            on_retry(res, fix)
                        lab.apply_fix(fix)
                        lab.pending_fix = fix
                        res = _run_one(lab, run_id, item)
                        lab.pending_fix = None
                if on_result is not None:
                    on_result(res)
                passed[item.spec.key] = res.status
                results.append(res)
    except KeyboardInterrupt:
        book.end_run(run_id, INTERRUPTED)
        raise
    except BaseException:
        if stop_after:
            lab.stop_server(loud=False, why="failed")
        raise
    book.end_run(run_id, FAIL if any(r.status == FAIL for r in results) else PASS)
    if stop_after:
        # Not loud here: the caller renders the day first, then fails on `lab.last_stop`.
        lab.stop_server(why="end of day", loud=False)
    return run_id, results


def _not_run(lab: Lab, run_id: int, item: Planned, needs: str) -> StepResult:
    step_id = lab.book.start_step(
        run_id, item.spec.key, title=item.spec.title_en, command=item.spec.command, expected=""
    )
    reason = f"not run: step `{needs}` did not pass"
    lab.book.end_step(step_id, status=PENDING, reason=reason)
    return StepResult(item.spec.key, PENDING, "", reason, None, 0.0, None, step_id)


def exit_code(results: list[StepResult]) -> int:
    """0 when every step passed or was honestly skipped; 1 otherwise."""
    return 0 if all(r.status in (PASS, SKIPPED) for r in results) else 1


def _public(options: dict) -> dict:
    # API keys are never stored.
    return {k: ("***" if "key" in k and v else v) for k, v in options.items()}
