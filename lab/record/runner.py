"""The step runner: record a step when it starts, judge it from measured criteria, and
record it again when it ends — pass, fail, skipped (with a reason) or interrupted.

A step is `pass` only when every one of its criteria was measured and met. A criterion
that cannot be measured here (a GPU-only check on the CPU profile) is `skipped` with its
reason, and makes the step `skipped`, never `pass`.
"""

from __future__ import annotations

import operator
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lab.core.errors import LabError
from lab.core.fmt import num
from lab.record.logbook import FAIL, INTERRUPTED, PASS, SKIPPED, Logbook
from lab.record.values import StepValues

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass
class Criterion:
    """One acceptance criterion: what was expected, what was measured, and the verdict."""

    key: str
    label_zh: str
    label_en: str
    op: str | None = None  # ">", "<", ... ; None for yes/no checks
    threshold: Any = None
    unit: str = ""
    measured: Any = None
    status: str = SKIPPED
    reason: str | None = None

    def expected(self, lang: str = "zh") -> str:
        label = self.label_zh if lang == "zh" else self.label_en
        if self.op is None:
            return label
        return f"{label} {self.op} {num(self.threshold)}{(' ' + self.unit) if self.unit else ''}"


def check(
    key: str, label_zh: str, label_en: str, measured: Any, op: str, threshold: Any, unit: str = ""
) -> Criterion:
    """Compare a measured value with its threshold. `measured=None` fails: not measured."""
    c = Criterion(key, label_zh, label_en, op, threshold, unit, measured)
    if measured is None:
        c.status, c.reason = FAIL, "not measured"
    else:
        c.status = PASS if _OPS[op](measured, threshold) else FAIL
    return c


def require(
    key: str,
    label_zh: str,
    label_en: str,
    ok: bool,
    measured: Any = None,
    reason: str | None = None,
) -> Criterion:
    """A yes/no criterion (e.g. "HTTP 200 with non-empty content")."""
    return Criterion(
        key,
        label_zh,
        label_en,
        measured=measured,
        status=PASS if ok else FAIL,
        reason=None if ok else reason,
    )


def skip(
    key: str,
    label_zh: str,
    label_en: str,
    reason: str,
    op: str | None = None,
    threshold: Any = None,
    unit: str = "",
    measured: Any = None,
) -> Criterion:
    """A criterion that cannot be judged here; `measured` may still hold what was seen."""
    return Criterion(key, label_zh, label_en, op, threshold, unit, measured, SKIPPED, reason)


def verdict(criteria: list[Criterion]) -> tuple[str, str | None]:
    """Step status from its criteria: any fail -> fail; all pass -> pass; else skipped."""
    if not criteria:
        return FAIL, "no criterion was checked"
    failed = [c for c in criteria if c.status == FAIL]
    if failed:
        return FAIL, "; ".join(
            f"{c.label_en}: {c.reason or 'not met'}"
            f"{'' if c.measured is None else f' (measured {num(c.measured)})'}"
            for c in failed
        )
    skipped = [c for c in criteria if c.status == SKIPPED]
    if skipped:
        return SKIPPED, skipped[0].reason
    return PASS, None


@dataclass
class Outcome:
    """What a step function returns: its criteria and the measured values behind them."""

    criteria: list[Criterion]
    actual: str  # one line of the measured values, for 实际结果
    values: StepValues | None = None  # lab.record.values: the step's type
    evidence: str | None = None
    command: str | None = None  # the exact command, when known only at run time
    fix: str | None = None  # a remedy to record even without an error (e.g. imbalance)


@dataclass
class StepSpec:
    key: str  # task name, e.g. "serve"
    number: int  # seed 000 step number
    title_zh: str
    title_en: str
    command: str  # the checklist command this step stands for


@dataclass
class StepContext:
    book: Logbook
    run_id: int
    step_id: int
    spec: StepSpec


@dataclass
class StepResult:
    key: str
    status: str
    actual: str
    reason: str | None
    fix: str | None
    duration_s: float
    values: StepValues | None
    step_id: int | None = None


def run_step(
    book: Logbook,
    run_id: int,
    spec: StepSpec,
    lang: str,
    fn: Callable[[StepContext], Outcome],
    diagnose: Callable[[str], str | None] | None = None,
) -> StepResult:
    """Run `fn` as one recorded step. LabErrors become a failed step with their one line and
    what the step measured before it failed (`err.values`, typed like the step's Outcome);
    KeyboardInterrupt marks the step interrupted and propagates."""
    title = spec.title_zh if lang == "zh" else spec.title_en
    step_id = book.start_step(run_id, spec.key, title=title, command=spec.command, expected="")
    ctx = StepContext(book, run_id, step_id, spec)
    try:
        out = fn(ctx)
    except KeyboardInterrupt:
        book.end_step(step_id, status=INTERRUPTED, reason="interrupted (Ctrl-C or SIGTERM)")
        raise
    except LabError as err:
        fix = err.fix or (diagnose(err.evidence) if diagnose and err.evidence else None)
        measured = getattr(err, "values", None)
        book.end_step(
            step_id,
            status=FAIL,
            reason=str(err),
            evidence=err.evidence,
            fix=fix,
            values=measured if isinstance(measured, StepValues) else None,
        )
        return _result(book, step_id)
    except Exception as err:  # a bug of ours: record it, never show a traceback
        book.end_step(
            step_id,
            status=FAIL,
            reason=f"internal error: {type(err).__name__}: {err}",
            evidence=traceback.format_exc(limit=6),
        )
        return _result(book, step_id)
    status, reason = verdict(out.criteria)
    expected = "; ".join(c.expected(lang) for c in out.criteria)
    book.end_step(
        step_id,
        status=status,
        actual=out.actual,
        reason=reason,
        expected=expected,
        criteria=[asdict(c) for c in out.criteria],
        values=out.values,
        evidence=out.evidence,
        command=out.command,
        fix=out.fix,
    )
    return _result(book, step_id)


def _result(book: Logbook, step_id: int) -> StepResult:
    row = book.step(step_id)
    return StepResult(
        row["key"],
        row["status"],
        row["actual"] or "",
        row["reason"],
        row["fix"],
        row["duration_s"] or 0.0,
        row["values"],
        step_id,
    )
