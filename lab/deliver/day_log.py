"""The execution log of a day (执行日志): `logbook/<day>.md`, rendered from the gathered
records only, so it can be rendered again at any time, from any past run.

`day_view` decides everything the template shows (which record each step is, its status,
its details, the acceptance boxes); the templates (templates/day3.md.j2, …) only loop and
format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.checklist import seeds
from lab.core.fmt import num
from lab.core.lang import pick
from lab.deliver.gather import LabData
from lab.deliver.jinja import fmt_ts, md_num, render_to, status_text
from lab.explain import metrics as meanings
from lab.explain import params as seed_params
from lab.explain.notes import note
from lab.record.logbook import FAIL, PASS, PENDING
from lab.record.queries import Records, Run, Step
from lab.record.runner import StepSpec
from lab.record.values import (
    ApiTestValues,
    BalanceValues,
    BenchValues,
    CompareNodesValues,
    CompareSide,
    CompareTpValues,
    CompareValues,
    CompareWorkload,
    DownloadValues,
    GpusValues,
    InstallValues,
    KvCacheValues,
    LatencyStats,
    LevelSummary,
    MemoryValues,
    MetricsValues,
    MonitorValues,
    NodeShareValues,
    NodesValues,
    NodeValues,
    OfflineValues,
    ParamsValues,
    ServeNodesValues,
    ServerMeans,
    ServeValues,
)


@dataclass
class CriterionRow:
    label: str
    expected: str  # ours: the operator, threshold and unit, or "yes"
    measured: Any
    result: str
    reason: str | None


@dataclass
class StepView:
    """One step of the day as the template shows it."""

    key: str
    number: int
    title: str
    icon: str
    command: str
    status_text: str
    recorded: bool
    reason: str | None = None  # shown when the step did not pass
    expected: str = ""
    actual: str = ""
    fix: str | None = None
    criteria: list[CriterionRow] = field(default_factory=list)
    started_at: float | None = None
    duration_s: float | None = None
    run_id: int | None = None
    evidence: str | None = None
    #: The details block to show ("gpus", "serve", …; None: none) and its data.
    kind: str | None = None
    details: Any = None
    #: Day 3's series table under the Day 4 metrics step.
    series: Any = None
    #: For a step of the day's steps that no run recorded: the command that runs it, and
    #: whether to show the seed's empty table in its place (compare).
    hint: str | None = None
    placeholder: bool = False


@dataclass
class AcceptanceRow:
    label: str
    done: bool
    status: str
    status_text: str
    reason: str | None
    run_id: int | None
    note: str = ""


def criterion_rows(step: Step, lang: str) -> list[CriterionRow]:
    return [
        CriterionRow(
            label=pick(lang, c.label_zh, c.label_en),
            expected=f"{c.op} {md_num(c.threshold)} {c.unit}" if c.op else pick(lang, "是", "yes"),
            measured=c.measured,
            result=status_text(c.status, lang),
            reason=c.reason,
        )
        for c in step.criteria
    ]


def step_view(
    spec: StepSpec, step: Step | None, lang: str, rec: Records, hint: str | None = None
) -> StepView:
    title = pick(lang, spec.title_zh, spec.title_en)
    if step is None:
        return StepView(
            spec.key,
            spec.number,
            title,
            "⬜",
            spec.command,
            status_text(PENDING, lang),
            recorded=False,
            expected=pick(lang, "见验收标准", "see the acceptance criteria"),
            actual=pick(lang, "待记录", "not recorded yet"),
            hint=hint,
            placeholder=spec.key == "compare",
        )
    kind, details = _details(spec.key, step, lang, rec)
    return StepView(
        spec.key,
        spec.number,
        title,
        icon={PASS: "✅", FAIL: "❌"}.get(step.status, "⬜"),
        command=step.command or spec.command,
        status_text=status_text(step.status, lang),
        recorded=True,
        reason=step.reason if step.reason and step.status != PASS else None,
        expected=step.expected or pick(lang, "见验收标准", "see the acceptance criteria"),
        actual=step.actual or pick(lang, "待记录", "not recorded yet"),
        fix=step.fix,
        criteria=criterion_rows(step, lang),
        started_at=step.started_at,
        duration_s=step.duration_s,
        run_id=step.run_id,
        evidence=step.evidence,
        kind=kind,
        details=details,
        series=_metrics_series(step.values, lang) if spec.key == "metrics" else None,
    )


def acceptance(day: str, steps: dict[str, Step], lang: str) -> list[AcceptanceRow]:
    """The 验收 checkboxes, each ticked only from a recorded pass."""
    out = []
    for item in seeds.DAYS[day].acceptance:
        step = steps.get(item.step)
        status, reason = PENDING, None
        if step:
            crit = step.criterion(item.criterion) if item.criterion else None
            if crit:
                status, reason = crit.status, crit.reason
            else:
                status, reason = step.status, step.reason
        row = AcceptanceRow(
            pick(lang, item.label_zh, item.label_en),
            status == PASS,
            status,
            status_text(status, lang),
            reason,
            step.run_id if step else None,
        )
        if step and isinstance(step.values, BalanceValues) and step.values.source == "process_rss":
            row.note = (
                pick(
                    lang,
                    "（CPU 配置：两个 TP worker 进程的 RSS 相差 ",
                    "（CPU profile: the two TP worker processes' RSS differ by ",
                )
                + f"{md_num(step.values.spread_pct)} %"
                + pick(lang, "，这不是显存）", "; that is not GPU memory）")
            )
        out.append(row)
    return out


def day_view(data: LabData, day: str, lang: str, run_id: int | None = None) -> dict[str, Any]:
    """What templates/<day>.md.j2 shows."""
    rec = data.records
    meta = seeds.DAYS[day]
    rows = rec.latest_by_key(day, run_id)
    runs_of_day = {i: r for i, r in rec.runs.items() if r.day == day}
    steps = [
        step_view(spec, rows.get(spec.key), lang, rec, meta.not_run_hint.get(spec.key))
        for spec in meta.steps
    ]
    used = sorted({s.run_id for s in rows.values() if s.key in meta.specs()})
    install = rows.get("install")
    versions = (
        install.values.versions
        if install is not None
        and isinstance(install.values, InstallValues)
        and install.values.versions
        and install.values.versions.vllm
        else None
    )
    by_key = {s.key: s for s in steps}
    return {
        "day": day,
        "lang": lang,
        "title": pick(lang, meta.title_zh, meta.title_en),
        "steps": steps,
        "runs": [runs_of_day[i] for i in used if i in runs_of_day],
        "versions": versions,
        "acceptance": acceptance(day, rows, lang),
        "generated_at": fmt_ts(data.now),
        "run_id": run_id,
        "sections": [
            (pick(lang, zh, en), [by_key[k] for k in keys]) for zh, en, keys in meta.sections
        ],
    }


def render_day(
    data: LabData, day: str, lang: str, out_dir: Path, run_id: int | None = None
) -> Path:
    """Render `logbook/<day>.md` (Command line equivalent: `invoke log --day day3`)."""
    return render_to(out_dir, f"{day}.md", f"{day}.md.j2", **day_view(data, day, lang, run_id))


# ------------------------------------------------------------------------------ details
def _details(key: str, step: Step, lang: str, rec: Records) -> tuple[str | None, Any]:
    """(kind, data) of the details block under a recorded step, or (None, None)."""
    v = step.values
    if isinstance(v, GpusValues) and v.gpus:
        return "gpus", v
    if isinstance(v, DownloadValues) and v.commit is not None:
        return "download", v
    if isinstance(v, ServeValues) and v.ready_s is not None:
        return "serve", ServeView.of(v, lang)
    if isinstance(v, ServeValues) and (v.failure is not None or v.stop is not None):
        return "serve-failed", ServeView.of(v, lang)
    if isinstance(v, MonitorValues) and v.summary:
        return "monitor", v
    if isinstance(v, ApiTestValues) and v.reply is not None:
        return "api-test", ApiTestView.of(v)
    if isinstance(v, MetricsValues) and v.bench_step_id is not None:
        return "metrics", _interpretation(v, lang)
    if isinstance(v, BalanceValues):
        return "balance", v
    if isinstance(v, BenchValues) and v.plan is not None:
        return "bench", BenchView.of(v, lang)
    if isinstance(v, CompareValues) and v.hf is not None and v.vllm is not None:
        return "compare", CompareView.of(v, lang)
    if isinstance(v, CompareTpValues) and len(v.sides) >= 2:
        return "compare-tp", TpView.of(v, lang)
    if isinstance(v, OfflineValues):
        return "offline", OfflineView.of(v, lang)
    if isinstance(v, KvCacheValues) and v.num_gpu_blocks is not None:
        return "kv-cache", v
    if isinstance(v, MemoryValues):
        return "memory", MemoryView.of(v, rec.runs.get(step.run_id))
    if isinstance(v, ParamsValues) and v.rows:
        return "params", _params(v, lang)
    # Day 6 (issue 12): the block of each multi-node step is its typed values as they are.
    day6 = {
        NodesValues: "nodes",
        NodeValues: "node",
        ServeNodesValues: "serve-nodes",
        NodeShareValues: "node-share",
        CompareNodesValues: "compare-nodes",
    }
    kind = day6.get(type(v))
    if kind == "compare-nodes" and not getattr(v, "sides", None):
        kind = None
    if kind == "node" and getattr(v, "node", None) is None:
        kind = None
    return (kind, v) if kind else (None, None)


@dataclass
class PhaseRow:
    label: str
    start_s: float
    duration_s: float | None
    detail: str | None


@dataclass
class ServeView:
    """A server start: its figures, its startup phases (labels in the render's language),
    and, when it failed or followed a failed attempt, the failure, the hand-back and the fix."""

    v: ServeValues
    phases: list[PhaseRow]

    @classmethod
    def of(cls, v: ServeValues, lang: str) -> ServeView:
        from lab.vllm.watch import phase_label

        return cls(
            v,
            [
                PhaseRow(phase_label(p.key, lang), p.start_s, p.duration_s, p.detail)
                for p in v.phases
            ],
        )


@dataclass
class ApiTestView:
    v: ApiTestValues
    stream_chunks: int | None
    stream_ttft_s: float | None

    @classmethod
    def of(cls, v: ApiTestValues) -> ApiTestView:
        s = v.stream
        return cls(v, s.chunks if s else None, s.ttft_s if s else None)


@dataclass
class SeriesRow:
    name: str
    present: bool
    value: float | None
    unit: str
    meaning: str
    old_name: str | None


@dataclass
class OldNameRow:
    old_name: str
    current: list[str]
    note: str


@dataclass
class SeriesView:
    series: list[SeriesRow]
    old_names: list[OldNameRow]


def _metrics_series(v: Any, lang: str) -> SeriesView | None:
    """The key series of a metrics step (Day 3's table), meanings from lab.explain."""
    if not isinstance(v, MetricsValues) or not v.series:
        return None
    rows = []
    for r in v.series:
        info = meanings.series_info(r.name)
        rows.append(
            SeriesRow(
                r.name,
                r.present,
                r.value,
                info.unit if info else "",
                info.meaning(lang) if info else "",
                info.old_name if info else None,
            )
        )
    old = []
    for o in v.old_names:
        known = meanings.OLD_NAMES.get(o.old_name)
        old.append(
            OldNameRow(
                o.old_name, list(known.current) if known else [], known.note(lang) if known else ""
            )
        )
    return SeriesView(rows, old)


def metrics_series(step: Step | None, lang: str) -> SeriesView | None:
    return _metrics_series(step.values if step else None, lang)


@dataclass
class InterpretationView:
    bench_step_id: int | None
    bench_run_id: int | None
    rows: list[meanings.Reading]


def _interpretation(v: MetricsValues, lang: str) -> InterpretationView:
    return InterpretationView(
        v.bench_step_id, v.bench_run_id, meanings.interpret(v.figures(), lang)
    )


@dataclass
class StatRow:
    concurrency: int | None
    label: str
    stats: LatencyStats


@dataclass
class BenchView:
    v: BenchValues
    levels: list[tuple[LevelSummary, ServerMeans]]
    stats: list[StatRow]

    @classmethod
    def of(cls, v: BenchValues, lang: str) -> BenchView:
        queue = pick(lang, "排队（等并发名额）", "queue (waiting for a slot)")
        stats = [
            StatRow(lv.concurrency, label, figures)
            for lv in v.levels
            for label, figures in (
                ("TTFT", lv.ttft_ms),
                ("TPOT", lv.tpot_ms),
                ("ITL", lv.itl_ms),
                ("E2EL", lv.e2el_ms),
                (queue, lv.queue_ms),
            )
        ]
        return cls(v, [(lv, lv.server or ServerMeans()) for lv in v.levels], stats)


@dataclass
class CompareView:
    v: CompareValues
    hf: CompareSide
    vllm: CompareSide
    workload: CompareWorkload
    cpu: bool
    tag: str
    side: str  # what the vLLM side was

    @classmethod
    def of(cls, v: CompareValues, lang: str) -> CompareView:
        assert v.hf is not None and v.vllm is not None
        side = (
            pick(
                lang,
                "运行中的服务（流式 /v1/completions，全部请求同时发出）",
                "the running server (streamed /v1/completions, all requests at once)",
            )
            if v.source == "server"
            else pick(
                lang,
                "离线 LLM.generate（全部 prompt 一次提交）",
                "offline LLM.generate (all prompts in one call)",
            )
        )
        return cls(
            v,
            v.hf,
            v.vllm,
            v.workload or CompareWorkload(),
            not v.on_gpu,
            "" if v.on_gpu else " (CPU)",
            side,
        )


@dataclass
class TpView:
    v: CompareTpValues
    a: Any
    b: Any
    a_server: ServerMeans
    b_server: ServerMeans
    r: Any
    measured: str
    cpu_note: str

    @classmethod
    def of(cls, v: CompareTpValues, lang: str) -> TpView:
        a, b, r = v.sides[0], v.sides[1], v.ratios
        if r is not None and r.server_tpot is not None:
            measured = (
                pick(
                    lang,
                    "本次实测：TP=2 的 TPOT（服务端均值）是 TP=1 的",
                    "Measured here: TP=2's TPOT (server mean) is",
                )
                + f" {num(r.server_tpot)}×"
            )
        else:
            measured = (
                pick(
                    lang,
                    "本次实测：TP=2 的 TPOT（客户端中位数）是 TP=1 的",
                    "Measured here: TP=2's TPOT (client median) is",
                )
                + f" {num(r.tpot_median if r else None)}×"
            )
        cpu = note("tp_cpu_profile", lang) if v.profile == "cpu" else ""
        return cls(
            v,
            a,
            b,
            a.summary.server or ServerMeans(),
            b.summary.server or ServerMeans(),
            r,
            measured,
            cpu,
        )


@dataclass
class OfflineView:
    v: OfflineValues
    cpu: bool
    observation: str | None

    @classmethod
    def of(cls, v: OfflineValues, lang: str) -> OfflineView:
        rises = v.throughput_rises
        seen = (
            None
            if rises is None
            else note("batches_rise" if rises else "batches_do_not_rise", lang)
        )
        return cls(v, v.profile == "cpu", seen)


@dataclass
class MemoryView:
    v: MemoryValues
    cpu: bool

    @classmethod
    def of(cls, v: MemoryValues, run: Run | None) -> MemoryView:
        return cls(v, run is not None and run.profile == "cpu")


@dataclass
class ParamRow:
    flag: str
    meaning: str
    seed_default: Any
    value: Any
    present: bool
    note: str


@dataclass
class ParamsView:
    v: ParamsValues
    rows: list[ParamRow]


def _params(v: ParamsValues, lang: str) -> ParamsView:
    rows = []
    for r in v.rows:
        seed = seed_params.BY_NAME.get(r.name)
        rows.append(
            ParamRow(
                seed.flag if seed else r.name,
                seed.meaning(lang) if seed else "",
                seed.seed_default if seed else "",
                r.value,
                r.present,
                seed_params.note(r.name, r.value, r.present, v.on_gpu, lang),
            )
        )
    return ParamsView(v, rows)
