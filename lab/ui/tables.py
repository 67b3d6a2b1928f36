"""Rich tables for the terminal: a day's summary, the progress checklist, a run comparison."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from lab.core.lang import pick
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED
from lab.record.runner import StepResult, StepSpec

GLYPH = {PASS: "✅", FAIL: "❌", SKIPPED: "⏭️", PENDING: "⬜", INTERRUPTED: "⚠️", RUNNING: "⏳"}


STYLE = {PASS: "green", FAIL: "red", SKIPPED: "yellow", PENDING: "dim", INTERRUPTED: "magenta"}


def styled(text: str, status: str) -> str:
    """`text` (escaped) in the colour of a step status, as rich markup."""
    style = STYLE.get(status)
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def status_table(groups: list[dict], lang: str) -> Table:
    """The checklist as a rich table for the terminal."""
    table = Table(title=pick(lang, "vLLM 学习进度", "vLLM learning progress"), show_lines=False)
    for col in (
        "ID",
        pick(lang, "项目", "item"),
        pick(lang, "状态", "state"),
        pick(lang, "依据", "evidence"),
    ):
        table.add_column(col, overflow="fold")
    for group in groups:
        table.add_row(
            "",
            f"[bold]{escape(group['title'])}[/] ({group['done']}/{group['total']})",
            "",
            f"[dim]{group['source']}[/]",
        )
        for item in group["entries"]:
            status = item["status"]
            glyph = GLYPH.get(status, "")
            state = pick(lang, "已完成", "done") if item["done"] else status
            if item["manual"] and not item["done"]:
                state = pick(lang, "待完成", "to do")
            table.add_row(
                item["id"],
                escape(item["label"]),
                styled(f"{glyph} {state}", status),
                escape(item["detail"] or ""),
            )
        table.add_section()
    return table


def compare_table(data: dict, lang: str) -> Table:
    """Two runs of one day side by side (`invoke compare-runs A B`)."""
    a, b = data["a"], data["b"]
    table = Table(title=(f"{a['day']}: run #{a['id']} → run #{b['id']}"))
    for col in (
        pick(lang, "步骤", "step"),
        pick(lang, "项目", "item"),
        f"#{a['id']}",
        f"#{b['id']}",
        pick(lang, "变化", "change"),
    ):
        table.add_column(col, overflow="fold")
    last = None
    for row in data["rows"]:
        if last is not None and row["section"] != last:
            table.add_section()
        change = row["change"]
        style = (
            "green"
            if "better" in change
            else "red"
            if "worse" in change
            else ("yellow" if change == "changed" else "")
        )
        table.add_row(
            escape(row["section"]) if row["section"] != last else "",
            escape(row["item"]),
            escape(row["a"]),
            escape(row["b"]),
            f"[{style}]{escape(change)}[/]" if style else escape(change),
        )
        last = row["section"]
    return table


def print_result(console: Any, res: StepResult) -> None:
    # Measured text can hold brackets (log lines, model output): never rich markup.
    line = f"{styled(res.status, res.status)}  {escape(res.actual or '')}"
    if res.status != PASS and res.reason:
        line += f"\n  reason: {escape(res.reason)}"
    if res.fix:
        line += f"\n  [bold]fix:[/] {escape(res.fix)}"
    console.print(line)


def print_retry(console: Any, fix: Any, lang: str) -> None:
    """The line before a retry with a known fix (`--fix auto`): what failed, how fast it was
    caught and handed back, the flag added, why, and what it costs."""
    seen = []
    if fix.failed is not None and fix.failed.detect_s is not None:
        seen.append(
            pick(
                lang,
                f"崩溃日志行 → 检测 {fix.failed.detect_s:.1f} s",
                f"crash line → detected in {fix.failed.detect_s:.1f} s",
            )
        )
    if fix.failed_stop is not None and fix.failed_stop.release_s is not None:
        seen.append(
            pick(
                lang,
                f"显存释放 {fix.failed_stop.release_s:.1f} s",
                f"GPU memory released in {fix.failed_stop.release_s:.1f} s",
            )
        )
    head = pick(lang, "用已知修复重试一次", "retrying once with the known fix")
    line = f"[bold yellow]{head}:[/] {escape(fix.added)} — {escape(fix.why(lang))}"
    if seen:
        line += f"\n  {escape('; '.join(seen))}"
    line += f"\n  {pick(lang, '代价', 'cost')}: {escape(fix.cost(lang))}"
    console.print(line)


def print_fixes(console: Any, results: list[StepResult], lang: str) -> None:
    """Under the summary table: each known fix a retry added, why, and what it costs."""
    for res in results:
        fix = getattr(res.values, "fix", None)
        if fix is None or not hasattr(fix, "added"):
            continue
        failed = fix.failed.title if fix.failed is not None and fix.failed.title else fix.key
        console.print(
            f"[bold yellow]{pick(lang, '已知修复', 'known fix')}[/] ({res.key}): "
            f"{escape(fix.added)} — {escape(pick(lang, '第一次失败：', 'the first attempt failed: '))}"
            f"{escape(failed)}; {escape(fix.why(lang))}\n  {pick(lang, '代价', 'cost')}: "
            f"{escape(fix.cost(lang))}"
        )


def print_stop(console: Any, report: Any, lang: str) -> None:
    """How the server was handed back: processes ended, seconds, GPU memory released."""
    line = pick(
        lang,
        f"服务已停止：{len(report.pids)} 个进程，用时 {report.stop_s or 0:.1f} s",
        f"server stopped: {len(report.pids)} process(es) ended in {report.stop_s or 0:.1f} s",
    )
    if report.release_s is not None:
        line += pick(
            lang,
            f"；GPU 显存释放用时 {report.release_s:.1f} s",
            f"; GPU memory released in {report.release_s:.1f} s",
        )
    console.print(escape(line))


def summary_table(
    day: str, profile: str, lang: str, results: list[StepResult], specs: dict[str, StepSpec]
) -> Table:
    """The end-of-day table: each step's number, key, status, seconds and measured values."""
    table = Table(title=f"{day} — {profile} profile")
    for col in (
        "#",
        pick(lang, "步骤", "step"),
        pick(lang, "状态", "status"),
        pick(lang, "耗时 s", "time s"),
        pick(lang, "实际结果", "actual"),
    ):
        table.add_column(col, overflow="fold")
    for res in results:
        spec = specs[res.key]
        text = (
            res.actual if res.status in (PASS, FAIL) and res.actual else (res.reason or res.actual)
        )
        table.add_row(
            str(spec.number),
            spec.key,
            styled(res.status, res.status),
            f"{res.duration_s:.1f}",
            escape((text or "")[:160]),
        )
    return table


def print_step_start(console: Any, spec: StepSpec, lang: str) -> None:
    """The rule above a step: "4. 单卡部署 7B 模型"."""
    console.rule(f"[bold]{spec.number}. {escape(pick(lang, spec.title_zh, spec.title_en))}")


def experiments_table(experiments: list[Any], lang: str) -> Table:
    """`invoke experiment --list`: name, question, arms (per profile kind) and profiles."""
    table = Table(title=pick(lang, "实验", "Experiments"), show_lines=True)
    for col in (
        pick(lang, "名称", "name"),
        pick(lang, "问题", "question"),
        pick(lang, "组（arm）", "arms"),
        pick(lang, "配置", "profiles"),
    ):
        table.add_column(col, overflow="fold")
    for exp in experiments:
        arms = []
        for kind, profile in (("cpu", "cpu"), ("gpu", "rehearsal")):
            if profile in exp.skip and (kind == "cpu" or "gpu" in exp.skip):
                continue
            shown = "; ".join(f"{a.name}: {arm_flags(a)}" for a in exp.arms_for(profile))
            arms.append(f"{kind}: {shown}")
        profiles = ", ".join(exp.runs_on())
        skipped = "; ".join(f"{p}: {why}" for p, why in exp.skip.items())
        table.add_row(
            exp.name,
            escape(exp.question(lang)),
            escape("\n".join(arms)),
            escape(
                profiles + (f"\n({pick(lang, '跳过', 'skipped')} {skipped})" if skipped else "")
            ),
        )
    return table


def arm_flags(arm: Any) -> str:
    """An arm's serve flags as a learner would type them: its lab options as flags
    (gpu_memory_utilization 0.5 → --gpu-memory-utilization 0.5), its flags, its variables."""
    parts = [f"--{k.replace('_', '-')} {v}" for k, v in arm.cfg.items()]
    parts += list(arm.flags)
    if arm.api_key:
        parts.append("--api-key ***")
    parts += [f"{k}={v}" for k, v in arm.env.items()]
    return " ".join(parts) or "—"
