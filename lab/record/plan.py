"""Run steps as recorded runs: one step (`invoke serve`) or a whole day (`invoke day3`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, SKIPPED
from lab.record.runner import Outcome, StepContext, StepResult, StepSpec, run_step
from lab.record.session import Lab
from lab.vllm import process as server

StepFn = Callable[[Lab, StepContext], Outcome]

@dataclass
class Planned:
    spec: StepSpec
    fn: StepFn
    #: Keys of steps that must have passed (or been skipped) first, when they ran in this plan.
    needs: tuple[str, ...] = ()


def _run_one(lab: Lab, run_id: int, item: Planned) -> StepResult:
    return run_step(lab.book, run_id, item.spec, lab.lang, lambda ctx: item.fn(lab, ctx),
                    diagnose=lambda text: _diagnose_lang(text, lab.lang))


def _diagnose_lang(text: str, lang: str) -> str | None:
    from lab.vllm import diagnose
    return diagnose.first_fix(text, lang)


def run_plan(lab: Lab, day: str, plan: list[Planned], *, task: str,
             stop_after: bool, options: dict | None = None,
             on_start: Callable[[StepSpec], None] | None = None,
             on_result: Callable[[StepResult], None] | None = None) -> tuple[int, list[StepResult]]:
    """Run `plan` as one recorded run of `day`. Ctrl-C/SIGTERM stops the server, marks the
    step interrupted and re-raises; `stop_after` stops the server when the plan ends.
    `on_start` and `on_result` let the terminal show each step (lab.ui); this layer prints
    nothing."""
    book = lab.book
    run_id = book.start_run(day, task=task, profile=lab.profile_name, lang=lab.lang,
                            options=_public(options or {}))
    results: list[StepResult] = []
    passed: dict[str, str] = {}
    try:
        with server.stop_on_interrupt(lab.state_path):
            for item in plan:
                blocker = next((n for n in item.needs
                                if n in passed and passed[n] not in (PASS, SKIPPED)), None)
                if blocker is not None:
                    res = _not_run(lab, run_id, item, blocker)
                else:
                    if on_start is not None:
                        on_start(item.spec)
                    res = _run_one(lab, run_id, item)
                if on_result is not None:
                    on_result(res)
                passed[item.spec.key] = res.status
                results.append(res)
    except KeyboardInterrupt:
        book.end_run(run_id, INTERRUPTED)
        raise
    finally:
        if stop_after:
            server.stop(lab.state_path)
    book.end_run(run_id, FAIL if any(r.status == FAIL for r in results) else PASS)
    return run_id, results


def _not_run(lab: Lab, run_id: int, item: Planned, needs: str) -> StepResult:
    step_id = lab.book.start_step(run_id, item.spec.key, title=item.spec.title_en,
                                  command=item.spec.command, expected="")
    reason = f"not run: step `{needs}` did not pass"
    lab.book.end_step(step_id, status=PENDING, reason=reason)
    return StepResult(item.spec.key, PENDING, "", reason, None, 0.0, None)


def exit_code(results: list[StepResult]) -> int:
    """0 when every step passed or was honestly skipped; 1 otherwise."""
    return 0 if all(r.status in (PASS, SKIPPED) for r in results) else 1


def _public(options: dict) -> dict:
    # API keys are never stored.
    return {k: ("***" if "key" in k and v else v) for k, v in options.items()}
