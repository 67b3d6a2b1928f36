"""The verdict of an experiment, from its measured arms only: per metric and arm the median
and min–max over rounds; per expectation the change in each round, its median and range, and
whether the expected direction was seen. Pure arithmetic, no I/O (unit-tested)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

from lab.checklist.experiments.model import Arm, Change, Equals, Expectation, Metric
from lab.core.fmt import num
from lab.core.lang import pick
from lab.record.values import ArmStat, ExperimentValues, Finding


def schedule(arms: Sequence[Arm], rounds: int) -> list[tuple[int, Arm]]:
    """(round, arm) in the order they run: every arm once per round, A B A B …, so a slow
    drift of a noisy machine hits every arm alike."""
    return [(r, arm) for r in range(1, rounds + 1) for arm in arms]


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def arm_stats(
    figures: Mapping[tuple[int, str], Mapping[str, float | None]],
    arms: Sequence[str],
    metrics: Sequence[Metric],
    rounds: int,
) -> list[ArmStat]:
    """Per arm and metric: the value of each round, the median and the min–max.
    `figures[(round, arm)][metric]` is what that arm measured in that round."""
    out = []
    for arm in arms:
        for m in metrics:
            values = [figures.get((r, arm), {}).get(m.key) for r in range(1, rounds + 1)]
            seen = [v for v in values if v is not None]
            out.append(
                ArmStat(
                    arm=arm,
                    metric=m.key,
                    values=values,
                    median=_median(values),
                    min=min(seen) if seen else None,
                    max=max(seen) if seen else None,
                )
            )
    return out


def change_pct(baseline: float | None, treatment: float | None) -> float | None:
    """(treatment − baseline) / baseline in %; None when either is missing or baseline is 0."""
    if baseline is None or treatment is None or baseline == 0:
        return None
    return (treatment - baseline) / abs(baseline) * 100.0


def difference(baseline: float | None, treatment: float | None) -> float | None:
    """treatment − baseline; None when either is missing."""
    if baseline is None or treatment is None:
        return None
    return treatment - baseline


def judge(
    expect: Expectation, figures: Mapping[tuple[int, str], Mapping[str, float | None]], rounds: int
) -> Finding:
    """One expectation against the rounds.

    Change: seen when the median change goes the expected way by more than
    `min_change_pct` %. Equals: seen when every measured round equals the target (and at
    least one round was measured). Not measured (None) when no round has both figures.
    """
    if isinstance(expect, Equals):
        values = [figures.get((r, expect.arm), {}).get(expect.metric) for r in range(1, rounds + 1)]
        measured = [v for v in values if v is not None]
        agree = sum(1 for v in measured if v == expect.target)
        return Finding(
            kind="equals",
            metric=expect.metric,
            treatment=expect.arm,
            target=expect.target,
            rounds_agreeing=agree,
            rounds_measured=len(measured),
            required=expect.required,
            seen=(agree == len(measured)) if measured else None,
        )
    assert isinstance(expect, Change)
    sign = -1.0 if expect.direction == "lower" else 1.0

    def agrees(c: float) -> bool:
        if expect.direction == "same":
            return abs(c) <= expect.min_change_pct
        return sign * c > expect.min_change_pct

    how = change_pct if expect.relative else difference
    changes = [
        how(
            figures.get((r, expect.baseline), {}).get(expect.metric),
            figures.get((r, expect.treatment), {}).get(expect.metric),
        )
        for r in range(1, rounds + 1)
    ]
    measured = [c for c in changes if c is not None]
    med = _median(measured)
    agree = sum(1 for c in measured if agrees(c))
    return Finding(
        kind="change",
        metric=expect.metric,
        treatment=expect.treatment,
        baseline=expect.baseline,
        direction=expect.direction,
        min_change_pct=expect.min_change_pct,
        relative=expect.relative,
        change_pct=changes,
        change_pct_median=med,
        change_pct_min=min(measured) if measured else None,
        change_pct_max=max(measured) if measured else None,
        rounds_agreeing=agree,
        rounds_measured=len(measured),
        seen=None if med is None else agrees(med),
    )


def failed_required(values: ExperimentValues) -> list[Finding]:
    """Required findings that were not seen (or not measured)."""
    return [f for f in values.findings if f.required and f.seen is not True]


def _word(seen: bool | None, lang: str) -> str:
    if seen is None:
        return pick(lang, "未测得", "not measured")
    return pick(lang, "已看到", "seen") if seen else pick(lang, "未看到", "not seen")


def _arm_value(values: ExperimentValues, arm: str, metric: Metric) -> str:
    stat = values.stat(arm, metric.key)
    if stat is None or stat.median is None:
        return "—"
    rng = "" if values.rounds < 2 or stat.min == stat.max else f" ({num(stat.min)}–{num(stat.max)})"
    return f"{num(stat.median)}{(' ' + metric.unit) if metric.unit else ''}{rng}"


def finding_line(f: Finding, metrics: Sequence[Metric], values: ExperimentValues, lang: str) -> str:
    """One finding as a sentence with its numbers."""
    m = next((x for x in metrics if x.key == f.metric), None)
    label = m.label(lang) if m else f.metric
    if f.kind == "equals":
        return pick(
            lang,
            f"{f.treatment}：{label} 应为 {num(f.target)}，{f.rounds_agreeing}/{f.rounds_measured} 轮符合（{_word(f.seen, lang)}）",
            f"{f.treatment}: {label} expected {num(f.target)}, {f.rounds_agreeing}/{f.rounds_measured} rounds agree ({_word(f.seen, lang)})",
        )
    b = _arm_value(values, f.baseline or "", m) if m else "—"
    t = _arm_value(values, f.treatment, m) if m else "—"
    unit = " %" if f.relative else (f" {m.unit}" if m and m.unit else "")
    same = f.direction == "same"
    if same:  # judged within ±min_change_pct: say so, "the same" alone would overclaim
        tol = f"±{num(f.min_change_pct)}{unit}"
        way = pick(lang, f"大致相同（{tol} 以内）", f"about the same (within {tol})")
    else:
        way = pick(
            lang, {"lower": "更低", "higher": "更高"}.get(f.direction or "", ""), f.direction or ""
        )

    def fmt(x: float | None) -> str:
        if x is None:
            return "—"
        return f"{x:+.1f}" if f.relative else ("+" if x > 0 else "") + num(x)

    if f.change_pct_median is None:
        change = pick(lang, "变化未测得", "change not measured")
    elif f.rounds_measured > 1:
        change = pick(
            lang,
            f"变化中位数 {fmt(f.change_pct_median)}{unit}（各轮 {fmt(f.change_pct_min)} … {fmt(f.change_pct_max)}{unit}）",
            f"median change {fmt(f.change_pct_median)}{unit} (rounds {fmt(f.change_pct_min)} … {fmt(f.change_pct_max)}{unit})",
        )
    else:
        change = pick(
            lang,
            f"变化 {fmt(f.change_pct_median)}{unit}",
            f"change {fmt(f.change_pct_median)}{unit}",
        )
    return pick(
        lang,
        f"预期 {f.treatment} 的{label}{'与' if same else '比'} {f.baseline} {way}：{f.baseline} {b}，{f.treatment} {t}，{change}；{_word(f.seen, lang)}",
        f"expected {label} {way} with {f.treatment} {'as' if same else 'than'} {f.baseline}: "
        f"{f.baseline} {b}, {f.treatment} {t}, {change}; {_word(f.seen, lang)}",
    )


def verdict_line(values: ExperimentValues, metrics: Sequence[Metric], lang: str) -> str:
    """The verdict in one line: each finding's sentence, joined."""
    if values.skipped:
        return pick(lang, f"跳过：{values.skipped}", f"skipped: {values.skipped}")
    return "; ".join(finding_line(f, metrics, values, lang) for f in values.findings)
