"""Learning progress: the whole roadmap (seed 000's Day 3–4 checklist and module
acceptance, seed 002's Day 5 self-check, seed 003's four phases) as one checklist.

Each item is ticked from the logbook and nothing else:
- a *step* item from recorded results (a step's status, or one of its criteria): ticked only
  when it was recorded as pass; skipped, failed or missing says so, with the command to run;
- a *note* item (theory, the self-test Q1–Q3, things only the learner can judge) from a
  manual note: `invoke done ITEM --note "..."`.

Also here: the history of runs, and `compare_runs` (what changed between two runs of a day).

Command line equivalent: `sqlite3 logbook/lab.db 'select run_id, key, status from steps'`.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from lab.checklist import seeds as checklist
from lab.core.errors import ConfigError, LabError
from lab.record.logbook import FAIL, INTERRUPTED, PASS, PENDING, RUNNING, SKIPPED, Logbook

if TYPE_CHECKING:
    from lab.record.session import Lab

# ------------------------------------------------------------------------------------ records


class Records:
    """Every run and step of the logbook, read once (rendering reads only from the DB)."""

    def __init__(self, book: Logbook):
        book.recover()
        self.book = book
        self.runs = {r["id"]: r for r in book.runs()}
        self.steps = [s for run_id in self.runs for s in book.steps(run_id)]
        self.steps.sort(key=lambda s: s["id"])

    def run(self, run_id: int) -> dict:
        if run_id not in self.runs:
            raise LabError(f"no run #{run_id} in {self.book.path}",
                           fix="`invoke status` lists the recorded runs")
        return self.runs[run_id]

    def latest(self, key: str | None = None, *, day: str | None = None,
               run_id: int | None = None, min_tp: int | None = None,
               max_tp: int | None = None, criterion: str | None = None,
               before: float | None = None,
               where: Callable[[dict], bool] | None = None) -> dict | None:
        """The newest finished step matching every filter given. `criterion` is a glob on
        criterion keys (e.g. "*balance*"); `min_tp`/`max_tp` look at the step's values.tp;
        `before` is a time the step started before; `where` any other test."""
        for step in reversed(self.steps):
            if step["status"] == RUNNING:
                continue
            if key is not None and step["key"] != key:
                continue
            if run_id is not None and step["run_id"] != run_id:
                continue
            if day is not None and self.runs.get(step["run_id"], {}).get("day") != day:
                continue
            tp = int((step.get("values") or {}).get("tp") or 1)
            if min_tp is not None and tp < min_tp or max_tp is not None and tp > max_tp:
                continue
            if criterion is not None and find_criterion(step, criterion) is None:
                continue
            if before is not None and (step.get("started_at") or 0) > before:
                continue
            if where is not None and not where(step):
                continue
            return step
        return None


def find_criterion(step: dict, pattern: str) -> dict | None:
    return next((c for c in step.get("criteria") or []
                 if fnmatch.fnmatchcase(c.get("key") or "", pattern)), None)


# ------------------------------------------------------------------------------------ hints

#: The task that records each step key (what to run when it is missing).
TASK_OF = {"gpus": "invoke gpus", "install": "invoke install", "tools": "invoke tools",
           "serve": "invoke serve", "monitor": "invoke monitor", "api-test": "invoke api-test",
           "metrics": "invoke metrics", "bench": "invoke bench", "compare": "invoke compare",
           "balance": "invoke balance", "compare-tp": "invoke day4 --compare-tp",
           "offline": "invoke day5"}


def run_hint(command: str, lang: str) -> str:
    """The one phrase every missing piece renders as."""
    return (f"尚未测量 — 请运行 `{command}`" if lang == "zh"
            else f"not measured yet — run `{command}`")


# ------------------------------------------------------------------------------------ roadmap


@dataclass(frozen=True)
class Evidence:
    """Which recorded step (and criterion) ticks an item. None means "any"."""
    key: str | None
    day: str | None = None
    criterion: str | None = None
    min_tp: int | None = None
    max_tp: int | None = None
    task: str | None = None     # what to run when it is missing (default: TASK_OF[key])
    gpu_only: bool = False      # the item names a GPU: a cpu-profile run cannot tick it

    def command(self) -> str:
        if self.task:
            return self.task
        if self.min_tp and self.min_tp > 1:
            return f"invoke serve --tp {self.min_tp}"
        return TASK_OF.get(self.key or "", f"invoke {self.day or 'day3'}")


@dataclass(frozen=True)
class Item:
    id: str
    label_zh: str
    label_en: str
    evidence: tuple[Evidence, ...] = ()     # empty: a note item, ticked by `invoke done`
    optional: bool = False

    @property
    def manual(self) -> bool:
        return not self.evidence

    def label(self, lang: str) -> str:
        return self.label_zh if lang == "zh" else self.label_en


@dataclass(frozen=True)
class Group:
    id: str
    title_zh: str
    title_en: str
    source: str                              # the seed it comes from
    items: tuple[Item, ...] = field(default_factory=tuple)

    def title(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title_en


def _note(id: str, zh: str, en: str, optional: bool = False) -> Item:
    return Item(id, zh, en, (), optional)


def _step(id: str, zh: str, en: str, *evidence: Evidence, optional: bool = False) -> Item:
    return Item(id, zh, en, tuple(evidence), optional)


SERVE_1 = Evidence("serve", max_tp=1, gpu_only=True)   # "7B on one GPU"
SERVE_TP2 = Evidence("serve", min_tp=2)
BALANCE = Evidence("balance", criterion="spread_pct", task="invoke balance")
BENCH = Evidence("bench", day="day4")
COMPARE = Evidence("compare", day="day4")
OFFLINE = Evidence("offline", day="day5")

# Note items used in more than one group are the same object (one id, one note).
D4_INTERPRET = _note("d4-interpret", "关键指标解读（running / waiting / KV cache 使用率 / TTFT / TPOT）",
                     "Interpret the key metrics (running / waiting / KV-cache usage / TTFT / TPOT)")
D4_DASHBOARD = _note("d4-dashboard", "（可选）Prometheus + Grafana 监控 Dashboard",
                     "(optional) Prometheus + Grafana monitoring dashboard", optional=True)
SERVE_ANY = Evidence("serve")


def _day_acceptance(day: str, fallback: tuple[Item, ...]) -> tuple[Item, ...]:
    """A day's 验收 items: the day module's ACCEPTANCE when the day is registered (the same
    items its execution log ticks, ids "<d3|d4|d5>-acc-N"), else the seed's list given."""
    if day not in checklist.DAY_MODULES:
        return fallback
    return tuple(_step(f"{day[:1]}{day[3:]}-acc-{i}", a.label_zh, a.label_en,
                       Evidence(a.step, day=day, criterion=a.criterion))
                 for i, a in enumerate(checklist.DAYS[day]["acceptance"], start=1))


def roadmap() -> tuple[Group, ...]:
    """The whole checklist, in the seeds' order."""
    return (
        Group("d3-theory", "Day 3 上午：理论学习", "Day 3 morning: theory", "seed 000", (
            _note("d3-read", "阅读 modules/03_vllm/readme.md 第 1-3 章",
                  "Read chapters 1-3 of modules/03_vllm/readme.md"),
            _note("d3-position", "理解 vLLM 在工具链中的位置（推理 vs 训练）",
                  "Where vLLM sits in the toolchain (inference vs training)"),
            _note("d3-paged", "理解 PagedAttention 机制（分页式显存管理）",
                  "PagedAttention (paged KV-cache memory)"),
            _note("d3-cb", "理解 Continuous Batching（连续批处理）", "Continuous batching"),
            _note("d3-metrics", "理解核心指标（TTFT、TPOT、Throughput）",
                  "The core metrics (TTFT, TPOT, throughput)"),
            _note("q1", "自测 Q1：vLLM 为什么能比 HuggingFace 推理快 3-10 倍？",
                  "Self-test Q1: why can vLLM be 3-10x faster than HuggingFace inference?"),
            _note("q2", "自测 Q2：PagedAttention 和操作系统的虚拟内存有什么类比关系？",
                  "Self-test Q2: how is PagedAttention like an OS's virtual memory?"),
            _note("q3", "自测 Q3：Continuous Batching 解决了什么问题？",
                  "Self-test Q3: what problem does continuous batching solve?"),
        )),
        Group("d3-setup", "Day 3 下午：环境准备与安装", "Day 3 afternoon: set-up", "seed 000", (
            _step("d3-gpus", "检查 GPU 资源（空闲显存 > 16GB）", "Check GPU resources (> 16 GB free)",
                  Evidence("gpus")),
            _step("d3-install", "安装 vLLM 并打印版本号", "Install vLLM and print its version",
                  Evidence("install")),
            _step("d3-tools", "（可选）安装监控工具 nvitop / gpustat",
                  "(optional) Install nvitop / gpustat", Evidence("tools"), optional=True),
        )),
        Group("d3-smoke", "Day 3 晚上：单卡部署冒烟", "Day 3 evening: single-GPU smoke test", "seed 000", (
            _step("d3-serve", "单卡部署 7B 模型（含模型就绪）", "Serve the 7B model on one GPU (model ready)",
                  SERVE_1),
            _step("d3-api", "OpenAI API 测试", "OpenAI API test", Evidence("api-test", day="day3")),
            _step("d3-monitor", "GPU 监控验证（显存 > 90%，利用率 > 80%）",
                  "GPU monitoring check (memory > 90 %, utilisation > 80 %)", Evidence("monitor")),
            _step("d3-metrics-read", "查看性能指标（/metrics）", "Read the metrics (/metrics)",
                  Evidence("metrics")),
        )),
        Group("d3-acceptance", "Day 3 验收标准", "Day 3 acceptance", "seed 000",
              _day_acceptance("day3", ())),
        Group("d4-tp", "Day 4 上午：双卡张量并行", "Day 4 morning: tensor parallelism on two GPUs",
              "seed 000", (
                  _note("d4-tp-theory", "理解张量并行原理（张量并行 vs 数据并行；单卡显存不足时用 TP）",
                        "Tensor parallelism (TP vs data parallelism; TP when one GPU is too small)"),
                  _step("d4-serve", "双卡部署 14B 模型（TP=2，含模型就绪）",
                        "Serve the 14B model with TP=2 (model ready)", SERVE_TP2),
                  _step("d4-balance", "验证双卡负载均衡（显存误差 < 10%）",
                        "Check the two GPUs are balanced (memory within 10 %)", BALANCE),
                  _step("d4-api", "API 功能测试", "API test", Evidence("api-test", day="day4",
                                                                   task="invoke day4")),
              )),
        Group("d4-perf", "Day 4 下午：性能对比测试", "Day 4 afternoon: performance comparison", "seed 000", (
            _step("d4-bench", "运行基准测试（延迟循环 + 并发扫描）",
                  "Run the benchmark (latency loop + concurrency sweep)", BENCH),
            _step("d4-compare", "对比 vLLM vs HuggingFace", "Compare vLLM with HuggingFace", COMPARE),
        )),
        Group("d4-monitor", "Day 4 晚上：监控与日志", "Day 4 evening: monitoring and logs", "seed 000", (
            _step("d4-metrics", "查看 vLLM 内置 Metrics", "Read vLLM's built-in metrics",
                  Evidence("metrics")),
            D4_INTERPRET,
            D4_DASHBOARD,
        )),
        Group("d4-acceptance", "Day 4 验收标准", "Day 4 acceptance", "seed 000",
              _day_acceptance("day4", (
                  _step("d4-acc-1", "双卡 14B 模型成功部署", "the 14B model served on two GPUs", SERVE_TP2),
                  _step("d4-acc-2", "两张卡显存占用均衡（误差 < 10%）",
                        "the two GPUs' memory is balanced (within 10 %)", BALANCE),
                  _step("d4-acc-3", "完成性能基准测试", "the benchmark completed", BENCH),
                  D4_INTERPRET, D4_DASHBOARD))),
        Group("d5", "Day 5 自检清单", "Day 5 self-check", "seed 002", _day_acceptance("day5", (
            _step("d5-offline", "成功运行 vLLM 离线推理（batch size 1/4/8/16）",
                  "Run vLLM offline inference (batch sizes 1/4/8/16)", OFFLINE),
            _step("d5-command", "记录启动命令和关键参数（deploy-notes.md）",
                  "Record the launch command and key flags (deploy-notes.md)", SERVE_ANY),
        )) + (
            _note("d5-screenshot", "截图保存（显存占用、Block 分配信息）",
                  "Save screenshots (memory use, block allocation)"),
            _note("d5-params", "理解 vLLM 的关键启动参数含义", "Understand vLLM's key launch flags"),
        )),
        Group("goals", "学习目标", "Learning goals", "seed 000", (
            _note("g-value", "理解 vLLM 的核心价值（高性能推理引擎）",
                  "vLLM's core value (a high-performance inference engine)"),
            _note("g-paged", "掌握 PagedAttention 原理（显存管理）", "PagedAttention (memory management)"),
            _note("g-cb", "掌握 Continuous Batching 原理（吞吐量优化）",
                  "Continuous batching (throughput)"),
            _step("g-tp", "双卡张量并行部署 14B 模型", "Serve the 14B model with TP on two GPUs", SERVE_TP2),
            _step("g-api", "OpenAI 兼容 API 测试与性能对比", "OpenAI-compatible API test and comparison",
                  Evidence("api-test"), COMPARE),
        )),
        Group("module", "模块验收标准（理论 · 实操 · 输出物）",
              "Module acceptance (theory · practice · deliverables)", "seed 000", (
                  _note("m-paged", "能用自己的话解释 PagedAttention 原理",
                        "Explain PagedAttention in your own words"),
                  _note("m-cb", "能用自己的话解释 Continuous Batching 优势",
                        "Explain continuous batching's advantage in your own words"),
                  _note("m-tp-dp", "能说明张量并行与数据并行的区别",
                        "Explain tensor vs data parallelism"),
                  _step("m-7b", "单卡 7B 模型部署成功（API 可用）", "7B on one GPU, API usable",
                        SERVE_1, Evidence("api-test")),
                  _step("m-14b", "双卡 14B 模型部署成功（负载均衡）", "14B on two GPUs, balanced",
                        SERVE_TP2, BALANCE),
                  _step("m-compare", "完成性能对比测试（vLLM vs HF）", "Comparison vLLM vs HF done",
                        COMPARE),
                  _step("m-nvitop", "能使用 nvitop/gpustat 监控 GPU", "Monitor GPUs with nvitop/gpustat",
                        Evidence("tools"), Evidence("monitor")),
                  _step("m-report", "输出物：性能对比报告（表格形式，report.md）",
                        "Deliverable: the comparison report (tables, report.md)", BENCH, COMPARE),
                  _step("m-notes", "输出物：部署命令笔记（含参数说明，deploy-notes.md）",
                        "Deliverable: deployment notes with flag explanations (deploy-notes.md)",
                        SERVE_ANY),
                  _note("m-dashboard", "输出物：（可选）监控 Dashboard 截图（dashboard.html）",
                        "Deliverable: (optional) monitoring dashboard screenshot (dashboard.html)",
                        optional=True),
              )),
        Group("p1", "第一阶段：基础认知 — 搭建与运行", "Phase 1: basics — set up and run", "seed 003", (
            _note("p1-concepts", "vLLM 基本概念：定位、与 HF/DeepSpeed/Triton 的关系、Engine/Worker/Scheduler",
                  "Basic concepts: vLLM's place, vs HF/DeepSpeed/Triton, Engine/Worker/Scheduler"),
            _step("p1-run", "安装与运行：pip install vllm、vllm serve、常用参数",
                  "Install and run: pip install vllm, vllm serve, common flags",
                  Evidence("install"), SERVE_ANY),
            _step("p1-debug", "基本调试与部署：查看 GPU 占用、理解启动日志、Web API 调用",
                  "Debug and deploy: GPU usage, the startup log, the web API",
                  Evidence("gpus"), SERVE_ANY, Evidence("api-test")),
        )),
        Group("p2", "第二阶段：核心机制与架构", "Phase 2: core mechanisms and architecture", "seed 003", (
            _note("p2-paged", "PagedAttention：KV Cache、Block Table、显存池与连续批处理",
                  "PagedAttention: KV cache, block table, memory pool, continuous batching"),
            _note("p2-scheduler", "Scheduler：请求队列、Prefill/Decode 调度、抢占、流式输出",
                  "Scheduler: queues, prefill/decode scheduling, preemption, streaming"),
            _note("p2-backend", "Attention Backend：FlashAttention / Triton / FlexAttention / Torch 与选择策略",
                  "Attention backends: FlashAttention / Triton / FlexAttention / Torch and selection"),
        )),
        Group("p3", "第三阶段：性能优化与部署技巧", "Phase 3: performance tuning and deployment", "seed 003", (
            _note("p3-tuning", "性能调优：gpu-memory-utilization、批量与上下文长度、TP、混合精度（见 report.md）",
                  "Tuning: gpu-memory-utilization, batch vs context, TP, precision (see report.md)"),
            _note("p3-quant", "模型兼容性与量化：AWQ / GPTQ / FP8、LoRA",
                  "Model support and quantization: AWQ / GPTQ / FP8, LoRA"),
            _note("p3-serving", "服务化与集群：OpenAI API、FastAPI/Gradio、Ray/Kubernetes、多租户",
                  "Serving and clusters: OpenAI API, FastAPI/Gradio, Ray/Kubernetes, multi-tenancy"),
        )),
        Group("p4", "第四阶段：深入理解与扩展", "Phase 4: internals and extension", "seed 003", (
            _note("p4-code", "代码架构阅读：engine → scheduler → attention → model_executor → worker",
                  "Read the code: engine → scheduler → attention → model_executor → worker"),
            _note("p4-plugins", "插件与自定义：logits processor、模型加载、Attention backend、KV 管理",
                  "Plugins: logits processors, model loading, attention backends, KV management"),
            _note("p4-papers", "深入阅读：vLLM（PagedAttention）论文、FlashAttention、Issues 与 PR",
                  "Reading: the vLLM (PagedAttention) paper, FlashAttention, issues and PRs"),
        )),
    )


def items_by_id() -> dict[str, Item]:
    out: dict[str, Item] = {}
    for group in roadmap():
        for item in group.items:
            out.setdefault(item.id, item)
    return out


# ------------------------------------------------------------------------------------ states

_WORST = (FAIL, INTERRUPTED, RUNNING, PENDING, SKIPPED)


def evidence_state(ev: Evidence, rec: Records, lang: str) -> dict:
    """{status, text, hint, run_id} of one piece of evidence, from the newest matching step.
    `text` comes from the logbook (escape it when rendering); `hint` is ours (trusted)."""
    step = rec.latest(ev.key, day=ev.day, min_tp=ev.min_tp, max_tp=ev.max_tp,
                      criterion=ev.criterion)
    if step is None:
        return {"status": PENDING, "text": "", "hint": run_hint(ev.command(), lang), "run_id": None}
    text = f"run #{step['run_id']} {step['key']}"
    if ev.gpu_only and rec.runs.get(step["run_id"], {}).get("profile") == "cpu":
        reason = "no NVIDIA GPU: CPU profile"
        return {"status": SKIPPED, "text": f"{text}: {SKIPPED} ({reason})", "hint": None,
                "run_id": step["run_id"]}
    if ev.criterion:
        crit = find_criterion(step, ev.criterion)
        status, reason = crit["status"], crit.get("reason")
        label = crit.get("label_zh") if lang == "zh" else crit.get("label_en")
        measured = crit.get("measured")
        text += f" · {label}" + ("" if measured is None else f" = {measured} {crit.get('unit') or ''}".rstrip())
    else:
        status, reason = step["status"], step.get("reason")
    text += f": {status}" + (f" ({reason})" if reason and status != PASS else "")
    return {"status": status, "text": text, "hint": None, "run_id": step["run_id"]}


def item_state(item: Item, rec: Records, notes: dict[str, dict], lang: str) -> dict:
    """An item's state: done only from a recorded pass (step items) or a note (note items).
    `evidence`: [{status, text, hint}]; `detail`: the same as one plain line (terminal)."""
    base = {"id": item.id, "label": item.label(lang), "optional": item.optional,
            "manual": item.manual}
    if item.manual:
        note = notes.get(item.id)
        done = bool(note and note["done"])
        hint = None if done else (
            f"手动勾选：`invoke done {item.id} --note \"...\"`" if lang == "zh"
            else f"tick it by hand: `invoke done {item.id} --note \"...\"`")
        evidence = [{"status": PASS if done else PENDING, "text": (note or {}).get("note") or "",
                     "hint": hint, "run_id": None}]
        states = {"done": done, "status": PASS if done else PENDING, "at": (note or {}).get("at"),
                  "run_ids": []}
    else:
        evidence = [evidence_state(ev, rec, lang) for ev in item.evidence]
        bad = [s for s in evidence if s["status"] != PASS]
        states = {"done": not bad, "at": None,
                  "status": min((s["status"] for s in bad), key=_WORST.index) if bad else PASS,
                  "run_ids": sorted({s["run_id"] for s in evidence if s["run_id"]})}
    detail = "; ".join(s["hint"] or s["text"] for s in evidence if s["hint"] or s["text"])
    return {**base, **states, "evidence": evidence, "detail": detail}


def checklist_state(book: Logbook, lang: str) -> list[dict]:
    """[{group fields..., entries: [item_state...], done, total}] for every roadmap group."""
    rec, notes = Records(book), book.notes()
    out = []
    for group in roadmap():
        items = [item_state(i, rec, notes, lang) for i in group.items]
        required = [i for i in items if not i["optional"]]
        out.append({"id": group.id, "title": group.title(lang), "source": group.source,
                    "entries": items, "done": sum(i["done"] for i in required),
                    "total": len(required)})
    return out


# ------------------------------------------------------------------------------------ notes


def mark_done(book: Logbook, item_id: str, note: str = "", undo: bool = False) -> Item:
    """`invoke done ITEM --note "..."`: tick (or, with undo, untick) a note item."""
    items = items_by_id()
    item = items.get(item_id)
    if item is None:
        manual = ", ".join(i.id for i in items.values() if i.manual)
        raise ConfigError(f"unknown item {item_id!r}; items ticked by hand: {manual}")
    if not item.manual:
        commands = sorted({ev.command() for ev in item.evidence})
        raise ConfigError(f"{item_id} is ticked only from recorded results; run "
                          f"{' and '.join(f'`{c}`' for c in commands)}")
    book.mark_done(item_id, note=note, done=not undo)
    return item


# ------------------------------------------------------------------------------------ runs


def run_history(book: Logbook) -> list[dict]:
    """Every run, oldest first, with its step counts and duration."""
    rec = Records(book)
    out = []
    for run in rec.runs.values():
        steps = [s for s in rec.steps if s["run_id"] == run["id"]]
        counts: dict[str, int] = {}
        for s in steps:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        duration = (run["ended_at"] - run["started_at"]) if run.get("ended_at") else None
        out.append({**run, "steps": [s["key"] for s in steps], "counts": counts,
                    "duration_s": duration})
    return out


def progress_context(book: Logbook, lang: str) -> dict:
    from lab.deliver.jinja import STATUS_TEXT, fmt_ts
    groups = checklist_state(book, lang)
    return {"lang": lang, "groups": groups, "runs": run_history(book),
            "status_text": STATUS_TEXT[lang], "generated_at": fmt_ts(time.time()),
            "done": sum(g["done"] for g in groups), "total": sum(g["total"] for g in groups)}


def render_progress(book: Logbook, lang: str, out_dir: Path) -> Path:
    """Render `logbook/progress.md` (Command line equivalent: `invoke status`)."""
    from lab.deliver.jinja import render_to
    return render_to(out_dir, "progress.md", "progress.md.j2", **progress_context(book, lang))


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


# ------------------------------------------------------------------------------------ compare


def _get(values: dict, path: str) -> Any:
    """values at a dotted path; "a|b" tries each path in turn."""
    for one in path.split("|"):
        node: Any = values
        for part in one.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


#: Key figures per step: (label, path in values, unit, scale, better).
FIGURES: dict[str, tuple[tuple[str, str, str, float, str | None], ...]] = {
    "gpus": (("GPUs with enough free memory", "free_gpus", "", 1, "higher"),),
    "install": (("vLLM", "vllm", "", 1, None), ("torch", "torch", "", 1, None),
                ("install time", "install_s", "s", 1, "lower")),
    "tools": (("nvitop", "versions.nvitop", "", 1, None),),
    "serve": (("startup (until /health = 200)", "ready_s", "s", 1, "lower"),
              ("KV-cache capacity", "kv_cache_tokens", "tokens", 1, "higher"),
              ("max concurrency", "max_concurrency_x", "x", 1, "higher"),
              ("model load", "model_load_gib", "GiB", 1, None),
              ("model load time", "model_load_s", "s", 1, "lower"),
              ("engine init", "engine_init_s", "s", 1, "lower")),
    "monitor": (("peak GPU memory used", "peak_mem_used_pct", "%", 1, None),
                ("peak GPU utilisation", "peak_util_pct", "%", 1, None),
                ("peak process-tree RSS", "peak_rss_mib", "MiB", 1, None),
                ("peak process-tree CPU", "peak_cpu_pct", "%", 1, None),
                ("load output throughput", "load.output_throughput", "tok/s", 1, "higher")),
    "api-test": (("chat latency", "latency_s", "ms", 1000, "lower"),
                 ("chat tokens/s", "tokens_per_s", "tok/s", 1, "higher"),
                 ("stream TTFT", "stream.ttft_s", "ms", 1000, "lower")),
    "metrics": (("vllm: series exported", "vllm_series", "", 1, None),),
    "balance": (("memory spread between GPUs", "spread_pct", "%", 1, "lower"),),
    "bench": (("latency loop mean", "latency.avg_latency_ms|latency.avg_ms", "ms", 1, "lower"),
              ("peak KV-cache usage", "metrics.kv.peak_kv_cache_usage_perc", "%", 100, None),
              ("preemptions", "metrics.delta.preemptions", "", 1, "lower")),
    "compare-tp": (("TP=2 ÷ TP=1 output throughput", "ratios.output_throughput", "x", 1, "higher"),
                   ("TP=2 ÷ TP=1 TPOT median", "ratios.tpot_median", "x", 1, "lower")),
    "compare": (("vLLM output throughput", "vllm.output_tok_s", "tok/s", 1, "higher"),
                ("HF output throughput", "hf.output_tok_s", "tok/s", 1, "higher"),
                ("vLLM mean latency", "vllm.latency_s", "ms", 1000, "lower"),
                ("HF mean latency", "hf.latency_s", "ms", 1000, "lower")),
}


def key_figures(step: dict) -> list[dict]:
    """[{label, value, unit, better}] of a step's key figures (only those recorded)."""
    values = step.get("values") or {}
    out = []
    for label, path, unit, scale, better in FIGURES.get(step["key"], ()):
        value = _get(values, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and scale != 1:
            value = value * scale
        out.append({"label": label, "value": value, "unit": unit, "better": better})
    if step["key"] == "bench":
        for level in values.get("levels") or []:
            s, c = level.get("summary") or level, level.get("concurrency")
            out += [{"label": f"c{c} output throughput", "value": s.get("output_throughput"),
                     "unit": "tok/s", "better": "higher"},
                    {"label": f"c{c} TTFT median", "value": _get(s, "ttft_ms.median"),
                     "unit": "ms", "better": "lower"},
                    {"label": f"c{c} TPOT median", "value": _get(s, "tpot_ms.median"),
                     "unit": "ms", "better": "lower"}]
    if step["key"] == "compare":
        for name, value in sorted((values.get("speedup") or {}).items()):
            out.append({"label": f"speedup {name}", "value": value, "unit": "x", "better": "higher"})
    if step["key"] == "offline":
        for b in values.get("batches") or []:
            out.append({"label": f"batch {b.get('batch_size')} throughput", "value": b.get("tok_s"),
                        "unit": "tok/s", "better": "higher"})
    if step["key"] not in FIGURES and step["key"] not in ("offline",):
        for name, value in sorted(values.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and len(out) < 8:
                out.append({"label": name, "value": value, "unit": "", "better": None})
    return [f for f in out if f["value"] is not None]


def _change(a: Any, b: Any, better: str | None) -> str:
    if a is None or b is None:
        return "—"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if a == b:
            return "="
        delta = b - a
        pct = f" ({delta / a * 100:+.1f} %)" if a else ""
        mark = ""
        if better:
            improved = delta > 0 if better == "higher" else delta < 0
            mark = " ▲ better" if improved else " ▼ worse"
        return f"{_fmt(delta, signed=True)}{pct}{mark}"
    return "=" if a == b else "changed"


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed else ""
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{value:{sign},.0f}"
    return f"{value:{sign},.2f}"


def _run_versions(rec: Records, run_id: int) -> str | None:
    step = rec.latest("install", run_id=run_id) or rec.latest("serve", run_id=run_id)
    values = (step or {}).get("values") or {}
    return values.get("vllm") or values.get("vllm_version")


def compare_runs(book: Logbook, a: int, b: int) -> dict:
    """What changed between runs `a` and `b` of the same day: run facts, each step's
    status and duration, and each step's key figures. Rows: {section, item, a, b, change}."""
    rec = Records(book)
    ra, rb = rec.run(a), rec.run(b)
    if ra["day"] != rb["day"]:
        raise LabError(f"run #{a} is {ra['day']} and run #{b} is {rb['day']}: "
                       "compare two runs of the same day")
    rows = []

    def add(section: str, item: str, va: Any, vb: Any, unit: str = "", better: str | None = None):
        rows.append({"section": section, "item": item + (f" ({unit})" if unit else ""),
                     "a": _fmt(va), "b": _fmt(vb), "change": _change(va, vb, better)})

    for label, key in (("task", "task"), ("profile", "profile"), ("host", "host"),
                       ("status", "status")):
        add("run", label, ra.get(key), rb.get(key))
    add("run", "vLLM", _run_versions(rec, a), _run_versions(rec, b))
    dur = [(r["ended_at"] - r["started_at"]) if r.get("ended_at") else None for r in (ra, rb)]
    add("run", "duration", dur[0], dur[1], "s", "lower")
    steps_a = {s["key"]: s for s in rec.steps if s["run_id"] == a}
    steps_b = {s["key"]: s for s in rec.steps if s["run_id"] == b}
    order = list(steps_a) + [k for k in steps_b if k not in steps_a]
    for key in order:
        sa, sb = steps_a.get(key), steps_b.get(key)
        add(key, "status", (sa or {}).get("status", "not run"), (sb or {}).get("status", "not run"))
        add(key, "duration", (sa or {}).get("duration_s"), (sb or {}).get("duration_s"), "s", "lower")
        figs_a = {f["label"]: f for f in key_figures(sa)} if sa else {}
        figs_b = {f["label"]: f for f in key_figures(sb)} if sb else {}
        for label in list(figs_a) + [k for k in figs_b if k not in figs_a]:
            fa, fb = figs_a.get(label), figs_b.get(label)
            f = fa or fb
            add(key, label, (fa or {}).get("value"), (fb or {}).get("value"), f["unit"], f["better"])
    return {"a": ra, "b": rb, "rows": rows}


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


def unique_ids(groups: Iterable[Group]) -> bool:
    """True when no two different items share an id (a test guards the roadmap data)."""
    seen: dict[str, Item] = {}
    for g in groups:
        for item in g.items:
            if item.id in seen and seen[item.id] is not item:
                return False
            seen[item.id] = item
    return True


# ------------------------------------------------------------------------------------ tasks


def run_status(lab: "Lab") -> Path:
    """`invoke status`: print the checklist as a table and render progress.md."""
    lab.console.print(status_table(checklist_state(lab.book, lab.lang), lab.lang))
    return render_progress(lab.book, lab.lang, lab.logbook_dir)


def run_done(lab: "Lab", item: str, note: str = "", undo: bool = False) -> Path:
    """`invoke done ITEM --note "..."`: tick a note item, then re-render progress.md."""
    picked = mark_done(lab.book, item, note=note, undo=undo)
    verb = ("取消勾选" if undo else "已勾选") if lab.lang == "zh" else ("unticked" if undo else "ticked")
    from rich.markup import escape
    lab.console.print(f"{verb}: {picked.id} — {escape(picked.label(lab.lang))}")
    return render_progress(lab.book, lab.lang, lab.logbook_dir)


def run_compare_runs(lab: "Lab", a: Any, b: Any) -> None:
    """`invoke compare-runs A B`: what changed between two runs of the same day."""
    from lab.core.config import number
    data = compare_runs(lab.book, number(a, "run A", low=1, integer=True),
                        number(b, "run B", low=1, integer=True))
    lab.console.print(compare_table(data, lab.lang))
