"""Rich tables for the terminal: a day's summary, the progress checklist, a run comparison."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from lab.record.runner import StepResult, StepSpec
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED


GLYPH = {PASS: "✅", FAIL: "❌", SKIPPED: "⏭️", PENDING: "⬜", INTERRUPTED: "⚠️", RUNNING: "⏳"}


STYLE = {PASS: "green", FAIL: "red", SKIPPED: "yellow", PENDING: "dim", INTERRUPTED: "magenta"}


def status_table(groups: list[dict], lang: str):
    """The checklist as a rich table for the terminal."""
    from rich.markup import escape
    from rich.table import Table
    zh = lang == "zh"
    table = Table(title="vLLM 学习进度" if zh else "vLLM learning progress", show_lines=False)
    for col in ("ID", "项目" if zh else "item", "状态" if zh else "state",
                "依据" if zh else "evidence"):
        table.add_column(col, overflow="fold")
    for group in groups:
        table.add_row("", f"[bold]{escape(group['title'])}[/] ({group['done']}/{group['total']})",
                      "", f"[dim]{group['source']}[/]")
        for item in group["entries"]:
            status = item["status"]
            glyph = GLYPH.get(status, "")
            state = ("已完成" if zh else "done") if item["done"] else status
            if item["manual"] and not item["done"]:
                state = "待完成" if zh else "to do"
            table.add_row(item["id"], escape(item["label"]),
                          f"[{STYLE.get(status, '')}]{glyph} {escape(state)}[/]",
                          escape(item["detail"] or ""))
        table.add_section()
    return table


def compare_table(data: dict, lang: str):
    from rich.markup import escape
    from rich.table import Table
    zh = lang == "zh"
    a, b = data["a"], data["b"]
    table = Table(title=(f"{a['day']}: run #{a['id']} → run #{b['id']}"))
    for col in ("步骤" if zh else "step", "项目" if zh else "item", f"#{a['id']}", f"#{b['id']}",
                "变化" if zh else "change"):
        table.add_column(col, overflow="fold")
    last = None
    for row in data["rows"]:
        if last is not None and row["section"] != last:
            table.add_section()
        change = row["change"]
        style = "green" if "better" in change else "red" if "worse" in change else (
            "yellow" if change == "changed" else "")
        table.add_row(escape(row["section"]) if row["section"] != last else "", escape(row["item"]),
                      escape(row["a"]), escape(row["b"]),
                      f"[{style}]{escape(change)}[/]" if style else escape(change))
        last = row["section"]
    return table


def print_result(console: Any, res: StepResult) -> None:
    style = STYLE.get(res.status, "")
    line = f"[{style}]{res.status}[/]  {res.actual or ''}"
    if res.status != PASS and res.reason:
        line += f"\n  reason: {res.reason}"
    if res.fix:
        line += f"\n  [bold]fix:[/] {res.fix}"
    console.print(line)


def summary_table(day: str, profile: str, lang: str, results: list[StepResult],
                  specs: dict[str, StepSpec]) -> Table:
    """The end-of-day table: each step's number, key, status, seconds and measured values."""
    zh = lang == "zh"
    table = Table(title=f"{day} — {profile} profile")
    for col in ("#", "步骤" if zh else "step", "状态" if zh else "status",
                "耗时 s" if zh else "time s", "实际结果" if zh else "actual"):
        table.add_column(col, overflow="fold")
    for res in results:
        spec = specs[res.key]
        text = res.actual if res.status in (PASS, FAIL) and res.actual else (res.reason or res.actual)
        table.add_row(str(spec.number), spec.key,
                      f"[{STYLE.get(res.status, '')}]{res.status}[/]",
                      f"{res.duration_s:.1f}", (text or "")[:160])
    return table




def print_step_start(console: Any, spec: StepSpec, lang: str) -> None:
    """The rule above a step: "4. 单卡部署 7B 模型"."""
    console.rule(f"[bold]{spec.number}. {spec.title_zh if lang == 'zh' else spec.title_en}")
