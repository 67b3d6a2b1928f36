"""The whole roadmap as data: seed 000's Day 3-4 checklist and module acceptance, seed 002's
Day 5 self-check, seed 003's four phases. Each item names the recorded evidence that ticks it
(a step, or one of its criteria), or none: then only a manual note ticks it.

The states (ticked from the logbook) are computed in `lab.deliver.progress`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lab.checklist import seeds as checklist

#: The task that records each step key (what to run when it is missing).
TASK_OF = {
    "gpus": "invoke gpus",
    "install": "invoke install",
    "tools": "invoke tools",
    "serve": "invoke serve",
    "monitor": "invoke monitor",
    "api-test": "invoke api-test",
    "metrics": "invoke metrics",
    "bench": "invoke bench",
    "compare": "invoke compare",
    "balance": "invoke balance",
    "compare-tp": "invoke day4 --compare-tp",
    "offline": "invoke day5",
    # Day 6 (issue 12)
    "nodes": "invoke day6",
    "serve-nodes": "invoke cluster --nnodes 2",
    "node-share": "invoke day6",
    "compare-nodes": "invoke day6",
    "node": "invoke node",
}


def run_hint(command: str, lang: str) -> str:
    """The one phrase every missing piece renders as."""
    return (
        f"尚未测量 — 请运行 `{command}`" if lang == "zh" else f"not measured yet — run `{command}`"
    )


@dataclass(frozen=True)
class Evidence:
    """Which recorded step (and criterion) ticks an item. None means "any"."""

    key: str | None
    day: str | None = None
    criterion: str | None = None
    min_tp: int | None = None
    max_tp: int | None = None
    task: str | None = None  # what to run when it is missing (default: TASK_OF[key])
    gpu_only: bool = False  # the item names a GPU: a cpu-profile run cannot tick it

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
    evidence: tuple[Evidence, ...] = ()  # empty: a note item, ticked by `invoke done`
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
    source: str  # the seed it comes from
    items: tuple[Item, ...] = field(default_factory=tuple)

    def title(self, lang: str) -> str:
        return self.title_zh if lang == "zh" else self.title_en


def _note(id: str, zh: str, en: str, optional: bool = False) -> Item:
    return Item(id, zh, en, (), optional)


def _step(id: str, zh: str, en: str, *evidence: Evidence, optional: bool = False) -> Item:
    return Item(id, zh, en, tuple(evidence), optional)


SERVE_1 = Evidence("serve", max_tp=1, gpu_only=True)  # "7B on one GPU"


SERVE_TP2 = Evidence("serve", min_tp=2)


BALANCE = Evidence("balance", criterion="spread_pct", task="invoke balance")


BENCH = Evidence("bench", day="day4")


COMPARE = Evidence("compare", day="day4")


OFFLINE = Evidence("offline", day="day5")


# Note items used in more than one group are the same object (one id, one note).
D4_INTERPRET = _note(
    "d4-interpret",
    "关键指标解读（running / waiting / KV cache 使用率 / TTFT / TPOT）",
    "Interpret the key metrics (running / waiting / KV-cache usage / TTFT / TPOT)",
)


D4_DASHBOARD = _note(
    "d4-dashboard",
    "（可选）Prometheus + Grafana 监控 Dashboard",
    "(optional) Prometheus + Grafana monitoring dashboard",
    optional=True,
)


SERVE_ANY = Evidence("serve")


def _day_acceptance(
    day: str, fallback: tuple[Item, ...], task: str | None = None, optional: bool = False
) -> tuple[Item, ...]:
    """A day's 验收 items: the day module's ACCEPTANCE when the day is registered (the same
    items its execution log ticks, ids "<d3|d4|d5>-acc-N"), else the seed's list given.
    `task` is what to run for a missing one (default: the step's own task); `optional` keeps
    a lab-defined day out of the required count."""
    if day not in checklist.DAYS:
        return fallback
    return tuple(
        _step(
            f"{day[:1]}{day[3:]}-acc-{i}",
            a.label_zh,
            a.label_en,
            Evidence(a.step, day=day, criterion=a.criterion, task=task),
            optional=optional,
        )
        for i, a in enumerate(checklist.DAYS[day].acceptance, start=1)
    )


def roadmap() -> tuple[Group, ...]:
    """The whole checklist, in the seeds' order."""
    return (
        Group(
            "d3-theory",
            "Day 3 上午：理论学习",
            "Day 3 morning: theory",
            "seed 000",
            (
                _note(
                    "d3-read",
                    "阅读 modules/03_vllm/readme.md 第 1-3 章",
                    "Read chapters 1-3 of modules/03_vllm/readme.md",
                ),
                _note(
                    "d3-position",
                    "理解 vLLM 在工具链中的位置（推理 vs 训练）",
                    "Where vLLM sits in the toolchain (inference vs training)",
                ),
                _note(
                    "d3-paged",
                    "理解 PagedAttention 机制（分页式显存管理）",
                    "PagedAttention (paged KV-cache memory)",
                ),
                _note("d3-cb", "理解 Continuous Batching（连续批处理）", "Continuous batching"),
                _note(
                    "d3-metrics",
                    "理解核心指标（TTFT、TPOT、Throughput）",
                    "The core metrics (TTFT, TPOT, throughput)",
                ),
                _note(
                    "q1",
                    "自测 Q1：vLLM 为什么能比 HuggingFace 推理快 3-10 倍？",
                    "Self-test Q1: why can vLLM be 3-10x faster than HuggingFace inference?",
                ),
                _note(
                    "q2",
                    "自测 Q2：PagedAttention 和操作系统的虚拟内存有什么类比关系？",
                    "Self-test Q2: how is PagedAttention like an OS's virtual memory?",
                ),
                _note(
                    "q3",
                    "自测 Q3：Continuous Batching 解决了什么问题？",
                    "Self-test Q3: what problem does continuous batching solve?",
                ),
            ),
        ),
        Group(
            "d3-setup",
            "Day 3 下午：环境准备与安装",
            "Day 3 afternoon: set-up",
            "seed 000",
            (
                _step(
                    "d3-gpus",
                    "检查 GPU 资源（空闲显存 > 16GB）",
                    "Check GPU resources (> 16 GB free)",
                    Evidence("gpus"),
                ),
                _step(
                    "d3-install",
                    "安装 vLLM 并打印版本号",
                    "Install vLLM and print its version",
                    Evidence("install"),
                ),
                _step(
                    "d3-tools",
                    "（可选）安装监控工具 nvitop / gpustat",
                    "(optional) Install nvitop / gpustat",
                    Evidence("tools"),
                    optional=True,
                ),
            ),
        ),
        Group(
            "d3-smoke",
            "Day 3 晚上：单卡部署冒烟",
            "Day 3 evening: single-GPU smoke test",
            "seed 000",
            (
                _step(
                    "d3-serve",
                    "单卡部署 7B 模型（含模型就绪）",
                    "Serve the 7B model on one GPU (model ready)",
                    SERVE_1,
                ),
                _step(
                    "d3-api", "OpenAI API 测试", "OpenAI API test", Evidence("api-test", day="day3")
                ),
                _step(
                    "d3-monitor",
                    "GPU 监控验证（显存 > 90%，利用率 > 80%）",
                    "GPU monitoring check (memory > 90 %, utilisation > 80 %)",
                    Evidence("monitor"),
                ),
                _step(
                    "d3-metrics-read",
                    "查看性能指标（/metrics）",
                    "Read the metrics (/metrics)",
                    Evidence("metrics"),
                ),
            ),
        ),
        Group(
            "d3-acceptance",
            "Day 3 验收标准",
            "Day 3 acceptance",
            "seed 000",
            _day_acceptance("day3", ()),
        ),
        Group(
            "d4-tp",
            "Day 4 上午：双卡张量并行",
            "Day 4 morning: tensor parallelism on two GPUs",
            "seed 000",
            (
                _note(
                    "d4-tp-theory",
                    "理解张量并行原理（张量并行 vs 数据并行；单卡显存不足时用 TP）",
                    "Tensor parallelism (TP vs data parallelism; TP when one GPU is too small)",
                ),
                _step(
                    "d4-serve",
                    "双卡部署 14B 模型（TP=2，含模型就绪）",
                    "Serve the 14B model with TP=2 (model ready)",
                    SERVE_TP2,
                ),
                _step(
                    "d4-balance",
                    "验证双卡负载均衡（显存误差 < 10%）",
                    "Check the two GPUs are balanced (memory within 10 %)",
                    BALANCE,
                ),
                _step(
                    "d4-api",
                    "API 功能测试",
                    "API test",
                    Evidence("api-test", day="day4", task="invoke day4"),
                ),
            ),
        ),
        Group(
            "d4-perf",
            "Day 4 下午：性能对比测试",
            "Day 4 afternoon: performance comparison",
            "seed 000",
            (
                _step(
                    "d4-bench",
                    "运行基准测试（延迟循环 + 并发扫描）",
                    "Run the benchmark (latency loop + concurrency sweep)",
                    BENCH,
                ),
                _step(
                    "d4-compare",
                    "对比 vLLM vs HuggingFace",
                    "Compare vLLM with HuggingFace",
                    COMPARE,
                ),
            ),
        ),
        Group(
            "d4-monitor",
            "Day 4 晚上：监控与日志",
            "Day 4 evening: monitoring and logs",
            "seed 000",
            (
                _step(
                    "d4-metrics",
                    "查看 vLLM 内置 Metrics",
                    "Read vLLM's built-in metrics",
                    Evidence("metrics"),
                ),
                D4_INTERPRET,
                D4_DASHBOARD,
            ),
        ),
        Group(
            "d4-acceptance",
            "Day 4 验收标准",
            "Day 4 acceptance",
            "seed 000",
            _day_acceptance(
                "day4",
                (
                    _step(
                        "d4-acc-1",
                        "双卡 14B 模型成功部署",
                        "the 14B model served on two GPUs",
                        SERVE_TP2,
                    ),
                    _step(
                        "d4-acc-2",
                        "两张卡显存占用均衡（误差 < 10%）",
                        "the two GPUs' memory is balanced (within 10 %)",
                        BALANCE,
                    ),
                    _step("d4-acc-3", "完成性能基准测试", "the benchmark completed", BENCH),
                    D4_INTERPRET,
                    D4_DASHBOARD,
                ),
            ),
        ),
        Group(
            "d5",
            "Day 5 自检清单",
            "Day 5 self-check",
            "seed 002",
            (
                *_day_acceptance(
                    "day5",
                    (
                        _step(
                            "d5-offline",
                            "成功运行 vLLM 离线推理（batch size 1/4/8/16）",
                            "Run vLLM offline inference (batch sizes 1/4/8/16)",
                            OFFLINE,
                        ),
                        _step(
                            "d5-command",
                            "记录启动命令和关键参数（deploy-notes.md）",
                            "Record the launch command and key flags (deploy-notes.md)",
                            SERVE_ANY,
                        ),
                    ),
                ),
                _note(
                    "d5-screenshot",
                    "截图保存（显存占用、Block 分配信息）",
                    "Save screenshots (memory use, block allocation)",
                ),
                _note(
                    "d5-params",
                    "理解 vLLM 的关键启动参数含义",
                    "Understand vLLM's key launch flags",
                ),
            ),
        ),
        Group(
            "goals",
            "学习目标",
            "Learning goals",
            "seed 000",
            (
                _note(
                    "g-value",
                    "理解 vLLM 的核心价值（高性能推理引擎）",
                    "vLLM's core value (a high-performance inference engine)",
                ),
                _note(
                    "g-paged",
                    "掌握 PagedAttention 原理（显存管理）",
                    "PagedAttention (memory management)",
                ),
                _note(
                    "g-cb",
                    "掌握 Continuous Batching 原理（吞吐量优化）",
                    "Continuous batching (throughput)",
                ),
                _step(
                    "g-tp",
                    "双卡张量并行部署 14B 模型",
                    "Serve the 14B model with TP on two GPUs",
                    SERVE_TP2,
                ),
                _step(
                    "g-api",
                    "OpenAI 兼容 API 测试与性能对比",
                    "OpenAI-compatible API test and comparison",
                    Evidence("api-test"),
                    COMPARE,
                ),
            ),
        ),
        Group(
            "module",
            "模块验收标准（理论 · 实操 · 输出物）",
            "Module acceptance (theory · practice · deliverables)",
            "seed 000",
            (
                _note(
                    "m-paged",
                    "能用自己的话解释 PagedAttention 原理",
                    "Explain PagedAttention in your own words",
                ),
                _note(
                    "m-cb",
                    "能用自己的话解释 Continuous Batching 优势",
                    "Explain continuous batching's advantage in your own words",
                ),
                _note(
                    "m-tp-dp",
                    "能说明张量并行与数据并行的区别",
                    "Explain tensor vs data parallelism",
                ),
                _step(
                    "m-7b",
                    "单卡 7B 模型部署成功（API 可用）",
                    "7B on one GPU, API usable",
                    SERVE_1,
                    Evidence("api-test"),
                ),
                _step(
                    "m-14b",
                    "双卡 14B 模型部署成功（负载均衡）",
                    "14B on two GPUs, balanced",
                    SERVE_TP2,
                    BALANCE,
                ),
                _step(
                    "m-compare",
                    "完成性能对比测试（vLLM vs HF）",
                    "Comparison vLLM vs HF done",
                    COMPARE,
                ),
                _step(
                    "m-nvitop",
                    "能使用 nvitop/gpustat 监控 GPU",
                    "Monitor GPUs with nvitop/gpustat",
                    Evidence("tools"),
                    Evidence("monitor"),
                ),
                _step(
                    "m-report",
                    "输出物：性能对比报告（表格形式，report.md）",
                    "Deliverable: the comparison report (tables, report.md)",
                    BENCH,
                    COMPARE,
                ),
                _step(
                    "m-notes",
                    "输出物：部署命令笔记（含参数说明，deploy-notes.md）",
                    "Deliverable: deployment notes with flag explanations (deploy-notes.md)",
                    SERVE_ANY,
                ),
                _note(
                    "m-dashboard",
                    "输出物：（可选）监控 Dashboard 截图（dashboard.html）",
                    "Deliverable: (optional) monitoring dashboard screenshot (dashboard.html)",
                    optional=True,
                ),
            ),
        ),
        # Day 6 is lab-defined (seed 001's pipeline parallelism, seed 003 phase 3): issue 12.
        Group(
            "d6",
            "Day 6 验收（实验室自定：多节点部署）",
            "Day 6 acceptance (lab-defined: across nodes)",
            "lab (seeds 001, 003 P3)",
            _day_acceptance("day6", (), task="invoke day6", optional=True),
        ),
        Group(
            "p1",
            "第一阶段：基础认知 — 搭建与运行",
            "Phase 1: basics — set up and run",
            "seed 003",
            (
                _note(
                    "p1-concepts",
                    "vLLM 基本概念：定位、与 HF/DeepSpeed/Triton 的关系、Engine/Worker/Scheduler",
                    "Basic concepts: vLLM's place, vs HF/DeepSpeed/Triton, Engine/Worker/Scheduler",
                ),
                _step(
                    "p1-run",
                    "安装与运行：pip install vllm、vllm serve、常用参数",
                    "Install and run: pip install vllm, vllm serve, common flags",
                    Evidence("install"),
                    SERVE_ANY,
                ),
                _step(
                    "p1-debug",
                    "基本调试与部署：查看 GPU 占用、理解启动日志、Web API 调用",
                    "Debug and deploy: GPU usage, the startup log, the web API",
                    Evidence("gpus"),
                    SERVE_ANY,
                    Evidence("api-test"),
                ),
            ),
        ),
        Group(
            "p2",
            "第二阶段：核心机制与架构",
            "Phase 2: core mechanisms and architecture",
            "seed 003",
            (
                _note(
                    "p2-paged",
                    "PagedAttention：KV Cache、Block Table、显存池与连续批处理",
                    "PagedAttention: KV cache, block table, memory pool, continuous batching",
                ),
                _note(
                    "p2-scheduler",
                    "Scheduler：请求队列、Prefill/Decode 调度、抢占、流式输出",
                    "Scheduler: queues, prefill/decode scheduling, preemption, streaming",
                ),
                _note(
                    "p2-backend",
                    "Attention Backend：FlashAttention / Triton / FlexAttention / Torch 与选择策略",
                    "Attention backends: FlashAttention / Triton / FlexAttention / Torch and selection",
                ),
            ),
        ),
        Group(
            "p3",
            "第三阶段：性能优化与部署技巧",
            "Phase 3: performance tuning and deployment",
            "seed 003",
            (
                _note(
                    "p3-tuning",
                    "性能调优：gpu-memory-utilization、批量与上下文长度、TP、混合精度（见 report.md）",
                    "Tuning: gpu-memory-utilization, batch vs context, TP, precision (see report.md)",
                ),
                _note(
                    "p3-quant",
                    "模型兼容性与量化：AWQ / GPTQ / FP8、LoRA",
                    "Model support and quantization: AWQ / GPTQ / FP8, LoRA",
                ),
                _note(
                    "p3-serving",
                    "服务化与集群：OpenAI API、FastAPI/Gradio、Ray/Kubernetes、多租户",
                    "Serving and clusters: OpenAI API, FastAPI/Gradio, Ray/Kubernetes, multi-tenancy",
                ),
            ),
        ),
        Group(
            "p4",
            "第四阶段：深入理解与扩展",
            "Phase 4: internals and extension",
            "seed 003",
            (
                _note(
                    "p4-code",
                    "代码架构阅读：engine → scheduler → attention → model_executor → worker",
                    "Read the code: engine → scheduler → attention → model_executor → worker",
                ),
                _note(
                    "p4-plugins",
                    "插件与自定义：logits processor、模型加载、Attention backend、KV 管理",
                    "Plugins: logits processors, model loading, attention backends, KV management",
                ),
                _note(
                    "p4-papers",
                    "深入阅读：vLLM（PagedAttention）论文、FlashAttention、Issues 与 PR",
                    "Reading: the vLLM (PagedAttention) paper, FlashAttention, issues and PRs",
                ),
            ),
        ),
    )


def items_by_id() -> dict[str, Item]:
    out: dict[str, Item] = {}
    for group in roadmap():
        for item in group.items:
            out.setdefault(item.id, item)
    return out


def unique_ids(groups: Iterable[Group]) -> bool:
    """True when no two different items share an id (a test guards the roadmap data)."""
    seen: dict[str, Item] = {}
    for g in groups:
        for item in g.items:
            if item.id in seen and seen[item.id] is not item:
                return False
            seen[item.id] = item
    return True


def experiments_for(item_id: str) -> list[str]:
    """The experiments (lab.checklist.experiments) whose measured verdict ticks `item_id`
    (their `ticks`): a phase-2/3 item is then done from a measurement, not only by hand."""
    from lab.checklist.experiments import all_experiments

    return [e.name for e in all_experiments() if item_id in e.ticks]
