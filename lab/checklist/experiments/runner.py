"""Run an experiment as one recorded run: for each round, each arm in turn (A B A B …), start
its server (lab.checklist.steps.serve, the same start as `invoke serve`), run the load (or
the experiment's own `measure`), record every request, stop the server; then judge the
verdict from the arms (lab.checklist.experiments.verdict) as the run's last step.

In the logbook: a run with day "experiment" and task "experiment NAME"; a step
`experiment-arm` per arm and round (ArmValues; its server in `servers`, its requests in
`requests` with phase "experiment"); a step `experiment` with the verdict (ExperimentValues).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import Callable

from lab.checklist.experiments import measures
from lab.checklist.experiments import verdict as verdict_mod
from lab.checklist.experiments.model import Arm, Experiment
from lab.core.errors import ConfigError, LabError
from lab.core.lang import pick
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, SKIPPED
from lab.record.runner import (
    Criterion,
    Outcome,
    StepContext,
    StepResult,
    StepSpec,
    require,
    run_step,
    skip,
)
from lab.record.session import Lab
from lab.record.values import (
    ArmInfo,
    ArmValues,
    ExperimentValues,
    ServeValues,
)
from lab.vllm import process as server

#: The day of an experiment's runs in the logbook.
DAY = "experiment"
#: The `requests.phase` of an experiment's requests.
PHASE = measures.PHASE


def arm_spec(exp: Experiment, arm: Arm, rnd: int, number: int) -> StepSpec:
    return StepSpec(
        "experiment-arm",
        number,
        f"{exp.name}：{arm.label('zh')}（第 {rnd} 轮）",
        f"{exp.name}: {arm.label('en')} (round {rnd})",
        f"invoke experiment {exp.name}",
    )


def verdict_spec(exp: Experiment, number: int) -> StepSpec:
    return StepSpec(
        "experiment",
        number,
        f"{exp.name}：结论",
        f"{exp.name}: verdict",
        f"invoke experiment {exp.name}",
    )


def arm_lab(lab: Lab, arm: Arm, api_key: str | None) -> Lab:
    """The session with the arm's options (and its API key, if it has one)."""
    cfg = {**lab.cfg, **dict(arm.cfg)}
    if arm.api_key:
        cfg["api_key"] = api_key
    return dataclasses.replace(lab, cfg=cfg)


def run_arm(lab: Lab, ctx: StepContext, exp: Experiment, arm: Arm, rnd: int) -> Outcome:
    """Start the arm's server, measure, stop it; the arm's values and criteria."""
    from lab.checklist.steps.serve import start_and_wait

    key = secrets.token_urlsafe(24) if arm.api_key else None  # never stored or shown
    alab = arm_lab(lab, arm, key)
    values = ArmValues(experiment=exp.name, arm=arm.name, round=rnd, env=dict(arm.env))
    if arm.prepare is not None:  # build what the arm serves; its real flags come back
        arm = arm.prepare(alab, values)
        values.env = dict(arm.env)
    try:
        started = start_and_wait(
            alab, ctx, exp.model_of, 1, extra=list(arm.flags), env_extra=dict(arm.env)
        )
    except LabError as err:
        server.stop(alab.state_path)
        if arm.optional:  # the platform does not offer it: skipped with vLLM's reason
            why = _first_error_line(err)
            return Outcome(
                [
                    skip(
                        "available",
                        "此平台提供该配置",
                        "the platform offers it",
                        f"not available here: {why}",
                    )
                ],
                f"{arm.name}: not available ({why})",
                values,
                evidence=err.evidence,
            )
        err.values = values
        raise
    values.serve = started.values if isinstance(started.values, ServeValues) else None
    values.command = started.command
    _startup_extras(values)
    try:
        state = server.require_running(alab.state_path)
        model = state.served_model_name or state.model
        run = measures.ArmRun(
            alab, exp, arm, rnd, ctx, model, alab.api_key, values, seed=ctx.step_id * 7 + rnd
        )
        measures.MEASURES[exp.measure or "load"](run)
        alive = server.is_alive(state)
    finally:
        # The next arm needs the GPU memory back: wait for NVML to show it released.
        stopped = alab.stop_server(loud=False, why=f"experiment {exp.name}: arm {arm.name}")
    if not stopped.clean:
        from lab.core.errors import GpuMemoryHeld
        from lab.record.session import held_message

        held = GpuMemoryHeld(held_message(stopped))
        held.values = values
        raise held
    values.figures = {m.key: _safe(m.read, values) for m in exp.metrics}
    criteria = arm_criteria(values, alive)
    return Outcome(criteria, arm_line(exp, values), values, command=values.command)


def _startup_extras(values: ArmValues) -> None:
    """CUDA-graph capture and torch.compile figures from the arm's server log."""
    from pathlib import Path

    from lab.vllm import logparse

    log = values.serve.log_path if values.serve else None
    if not log or not Path(log).exists():
        return
    facts = logparse.parse_startup(Path(log).read_text(errors="replace"))
    values.graph_capture_gib, values.graph_capture_s = (
        facts.graph_capture_gib,
        facts.graph_capture_s,
    )
    values.compile_s = facts.compile_s


def _first_error_line(err: LabError) -> str:
    """The most telling line of a failed start: the last error line of the log, or the
    error's own line."""
    lines = [
        ln.strip()
        for ln in (err.evidence or "").splitlines()
        if "Error" in ln or "error" in ln or "not supported" in ln
    ]
    return (lines[-1] if lines else str(err))[:200]


def _safe(read: Callable[[ArmValues], float | None], values: ArmValues) -> float | None:
    try:
        return read(values)
    except (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError):
        return None


def arm_criteria(values: ArmValues, alive: bool) -> list[Criterion]:
    """An arm passes when its server stayed up and its load (if any) lost no request."""
    out = [
        require(
            "alive",
            "服务在测量期间一直运行",
            "the server stayed up while measured",
            alive,
            reason="the server died during the measurement",
        )
    ]
    if values.load is not None:
        failed = values.load.failed or 0
        out.append(
            require(
                "no_errors",
                "负载无失败请求",
                "no request of the load failed",
                failed == 0 and bool(values.load.completed),
                f"{values.load.completed}/{values.load.requests}",
                reason=f"{failed} request(s) failed",
            )
        )
    return out


def arm_line(exp: Experiment, values: ArmValues) -> str:
    """One line of what the arm measured (its metrics)."""
    from lab.core.fmt import num

    parts = [
        f"{m.label('en')} {num(values.figures.get(m.key))}{(' ' + m.unit) if m.unit else ''}"
        for m in exp.metrics
        if values.figures.get(m.key) is not None
    ]
    return f"{values.arm}, round {values.round}: " + ("; ".join(parts) or "nothing measured")


# -- the whole experiment ---------------------------------------------------------------------
def run_experiment(
    lab: Lab,
    exp: Experiment,
    rounds: int | None = None,
    *,
    on_start: Callable[[StepSpec], None] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
) -> tuple[int, ExperimentValues, list[StepResult]]:
    """Run `exp` on the session's profile as one recorded run; returns (run id, verdict,
    step results). Skipped (recorded, with the reason) on a profile it does not run on."""
    profile = lab.profile_name
    rounds = rounds if rounds is not None else exp.rounds_for(profile)
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    book = lab.book
    run_id = book.start_run(
        DAY,
        task=f"experiment {exp.name}",
        profile=profile,
        lang=lab.lang,
        options={"experiment": exp.name, "rounds": rounds},
    )
    results: list[StepResult] = []
    load = exp.load_for(profile)
    values = ExperimentValues(
        name=exp.name,
        profile=profile,
        rounds=rounds,
        workload=load.describe("en") if (exp.measure or "load") in measures.USES_LOAD else "",
        workload_zh=load.describe("zh") if (exp.measure or "load") in measures.USES_LOAD else "",
    )
    try:
        if profile in exp.skip:
            values.skipped = exp.skip[profile]
            results.append(_verdict_step(lab, run_id, exp, values, 1, on_start, on_result))
            book.end_run(run_id, SKIPPED)
            return run_id, values, results
        arms = exp.arms_for(profile)
        figures: dict[tuple[int, str], dict[str, float | None]] = {}
        with server.stop_on_interrupt(lab.state_path):
            stopped: str | None = None  # why the remaining arms are not run
            for n, (rnd, arm) in enumerate(verdict_mod.schedule(arms, rounds), start=1):
                spec = arm_spec(exp, arm, rnd, n)
                if stopped is not None:  # a server that cannot start: do not try the rest
                    res = _not_run(lab, run_id, spec, stopped)
                    results.append(res)
                    values.order.append(arm.name)
                    if on_result:
                        on_result(res)
                    continue
                if on_start:
                    on_start(spec)
                res = run_step(
                    book,
                    run_id,
                    spec,
                    lab.lang,
                    functools.partial(_arm_fn, lab, exp, arm, rnd),
                    diagnose=functools.partial(_diagnose, lang=lab.lang),
                )
                if on_result:
                    on_result(res)
                if res.status == FAIL and not (
                    isinstance(res.values, ArmValues) and res.values.serve is not None
                ):
                    stopped = f"not run: the server of arm `{arm.name}` did not start"
                results.append(res)
                values.order.append(arm.name)
                step = book.steps(run_id)[-1]
                values.arm_steps.append(step["id"])
                arm_values = res.values if isinstance(res.values, ArmValues) else None
                if res.status == SKIPPED:
                    values.skipped_arms[arm.name] = res.reason or "not available"
                    arm_values = None
                if arm_values is not None:
                    figures[(rnd, arm.name)] = dict(arm_values.figures)
                    if arm_values.cache_config and arm.name not in values.cache_config:
                        values.cache_config[arm.name] = dict(arm_values.cache_config)
                    if rnd == 1 or not _info(values, arm.name).command:
                        _set_info(values, arm, arm_values.command)
                elif not any(a.name == arm.name for a in values.arms):
                    _set_info(values, arm, None)
        values.stats = verdict_mod.arm_stats(figures, [a.name for a in arms], exp.metrics, rounds)
        values.findings = [verdict_mod.judge(e, figures, rounds) for e in exp.expect_for(profile)]
        values.lesson_zh, values.lesson_en = (lesson(exp, values, "zh"), lesson(exp, values, "en"))
        results.append(
            _verdict_step(lab, run_id, exp, values, len(results) + 1, on_start, on_result)
        )
    except KeyboardInterrupt:
        book.end_run(run_id, INTERRUPTED)
        raise
    finally:
        lab.stop_server(loud=False, why=f"experiment {exp.name}: end")
    book.end_run(run_id, FAIL if any(r.status == FAIL for r in results) else PASS)
    return run_id, values, results


def _not_run(lab: Lab, run_id: int, spec: StepSpec, reason: str) -> StepResult:
    step_id = lab.book.start_step(
        run_id,
        spec.key,
        title=pick(lab.lang, spec.title_zh, spec.title_en),
        command=spec.command,
        expected="",
    )
    lab.book.end_step(step_id, status=PENDING, reason=reason)
    return StepResult(spec.key, PENDING, "", reason, None, 0.0, None)


def _arm_fn(lab: Lab, exp: Experiment, arm: Arm, rnd: int, ctx: StepContext) -> Outcome:
    return run_arm(lab, ctx, exp, arm, rnd)


def _info(values: ExperimentValues, name: str) -> ArmInfo:
    return next((a for a in values.arms if a.name == name), ArmInfo(name=name))


def _set_info(values: ExperimentValues, arm: Arm, command: str | None) -> None:
    from lab.vllm.launch import redact_env

    info = ArmInfo(
        name=arm.name,
        flags=list(arm.flags),
        env=redact_env(arm.env),
        command=command,
        label_zh=arm.label("zh"),
        label_en=arm.label("en"),
    )
    values.arms = [a for a in values.arms if a.name != arm.name] + [info]
    order = [a.name for a in values.arms]
    values.arms.sort(key=lambda a: order.index(a.name))


def lesson(exp: Experiment, values: ExperimentValues, lang: str) -> str:
    """The lesson in one sentence, with its numbers."""
    if exp.lesson is not None:
        try:
            return exp.lesson(values, lang)
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError):
            pass  # a figure is missing: fall back to the generic sentence
    if not values.findings:
        return ""
    return verdict_mod.finding_line(values.findings[0], exp.metrics, values, lang)


def _verdict_step(
    lab: Lab,
    run_id: int,
    exp: Experiment,
    values: ExperimentValues,
    number: int,
    on_start,
    on_result,
) -> StepResult:
    spec = verdict_spec(exp, number)
    if on_start:
        on_start(spec)

    def fn(ctx: StepContext) -> Outcome:
        line = verdict_mod.verdict_line(values, exp.metrics, lab.lang)
        if values.skipped:
            return Outcome(
                [skip("runs_here", "在此配置上运行", "runs on this profile", values.skipped)],
                line,
                values,
            )
        # A finding about an arm the platform does not offer cannot be judged: left out.
        judged = [
            f
            for f in values.findings
            if f.treatment not in values.skipped_arms
            and (f.baseline or "") not in values.skipped_arms
        ]
        if not judged and values.skipped_arms:
            return Outcome(
                [
                    skip(
                        "measured",
                        "每个预期都由测得的数据判断",
                        "every expectation judged from measured arms",
                        "the arms it compares are not offered here: "
                        + ", ".join(values.skipped_arms),
                    )
                ],
                line,
                values,
            )
        criteria = [
            require(
                "measured",
                "每个预期都由测得的数据判断",
                "every expectation judged from measured arms",
                bool(judged) and all(f.seen is not None for f in judged),
                f"{sum(f.seen is not None for f in judged)}/{len(judged)}",
                reason="an arm measured nothing for a metric",
            )
        ]
        for f in values.findings:
            if f.required:
                criteria.append(
                    require(
                        f"required:{f.metric}:{f.treatment}",
                        f"{f.treatment} 的 {f.metric} = {f.target}",
                        f"{f.metric} of {f.treatment} = {f.target}",
                        f.seen is True,
                        f"{f.rounds_agreeing}/{f.rounds_measured}",
                        reason="not what it must be",
                    )
                )
        return Outcome(criteria, line, values)

    res = run_step(lab.book, run_id, spec, lab.lang, fn)
    if on_result:
        on_result(res)
    return res


def _diagnose(text: str, lang: str) -> str | None:
    from lab.vllm import diagnose

    return diagnose.first_fix(text, lang)
