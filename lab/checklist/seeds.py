"""The checklist from the seeds, as data: each day's title, its steps in order (seed 000's
numbering), the 验收 (acceptance) items with the recorded criterion that ticks each one,
what `invoke dayN` runs, and which step must pass before another. No step code here: the
step functions are in `lab.checklist.steps`, wired to these keys in `lab.checklist.days`."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.errors import ConfigError
from lab.record.runner import StepSpec


@dataclass(frozen=True)
class Acceptance:
    """One 验收 checkbox. Ticked only when `step`'s criterion `criterion` (or, with
    criterion None, the whole step) is recorded as pass."""

    label_zh: str
    label_en: str
    step: str
    criterion: str | None = None


@dataclass(frozen=True)
class Day:
    """One day of the plan."""

    key: str
    title_zh: str
    title_en: str
    steps: list[StepSpec]
    acceptance: list[Acceptance]
    #: Within `invoke dayN`, a step runs only if the step it needs passed (or was skipped).
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: What `invoke dayN` runs, in order (None: every step).
    plan: list[str] | None = None
    #: For a step this run did not run: the command that runs it.
    not_run_hint: dict[str, str] = field(default_factory=dict)
    #: The seed's parts of the day, in order: (heading zh, heading en, step keys).
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def spec(self, key: str) -> StepSpec:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(f"{self.key} has no step {key}")

    def specs(self) -> dict[str, StepSpec]:
        return {s.key: s for s in self.steps}


# ------------------------------------------------------------------------------------------ Day 3 (seed 000, steps 1-7)
DAY3_TITLE_ZH = "Day 3：基础理论与单卡部署"


DAY3_TITLE_EN = "Day 3: single-GPU deployment"


DAY3_STEPS = [
    StepSpec("gpus", 1, "检查 GPU 资源", "Check GPU resources", "nvidia-smi"),
    StepSpec(
        "install",
        2,
        "安装 vLLM",
        "Install vLLM",
        'pip install vllm\npython -c "import vllm; print(vllm.__version__)"',
    ),
    StepSpec("tools", 3, "安装监控工具", "Install monitoring tools", "pip install nvitop gpustat"),
    StepSpec(
        "download",
        4,
        "下载模型（如果本地没有）",
        "Download the model (if not on disk)",
        "HF_ENDPOINT=https://hf-mirror.com huggingface-cli download Qwen/Qwen2.5-7B-Instruct "
        "--local-dir /path/to/models/Qwen2.5-7B-Instruct",
    ),
    StepSpec(
        "serve",
        5,
        "单卡部署 7B 模型",
        "Serve the 7B model on one GPU",
        "CUDA_VISIBLE_DEVICES=0 vllm serve Qwen/Qwen2.5-7B-Instruct --host 0.0.0.0 "
        "--port 8000 --gpu-memory-utilization 0.9 --max-model-len 2048",
    ),
    StepSpec("monitor", 6, "GPU 监控（负载下）", "Monitor the GPU under load", "nvitop"),
    StepSpec(
        "api-test",
        7,
        "API 测试",
        "API test",
        "curl http://localhost:8000/v1/chat/completions -H \"Content-Type: application/json\" -d '{...}'",
    ),
    StepSpec(
        "metrics",
        8,
        "查看性能指标",
        "Read the performance metrics",
        "curl http://localhost:8000/metrics",
    ),
]


# The seed's "Day 3 验收进度" and "Day 3 验收标准", each ticked from one recorded criterion.
DAY3_ACCEPTANCE = [
    Acceptance("vLLM 服务成功启动", "the vLLM server started", "serve"),
    Acceptance("API 请求返回正常响应", "the API request returned a normal reply", "api-test"),
    Acceptance(
        "nvitop 显示显存利用率 > 90%", "memory used > 90 % (nvitop)", "monitor", "mem_used_pct"
    ),
    Acceptance("GPU 利用率 > 80%", "GPU utilisation > 80 %", "monitor", "gpu_util_pct"),
    Acceptance("能用 nvitop 监控 GPU 状态", "nvitop can monitor the GPUs", "tools"),
]


# Within `invoke day3`: a step runs only if the step it needs passed (or was skipped).
DAY3_NEEDS = {
    "tools": ("install",),
    "serve": ("install", "download"),
    "monitor": ("serve",),
    "api-test": ("serve",),
    "metrics": ("serve",),
}


DAY4_TITLE_ZH = "Day 4：双卡部署与性能测试"


DAY4_TITLE_EN = "Day 4: two-GPU deployment and performance testing"


DAY4_STEPS = [
    StepSpec(
        "gpus", 1, "检查 GPU 资源（至少两张）", "Check GPU resources (at least two)", "nvidia-smi"
    ),
    StepSpec(
        "download",
        2,
        "下载 14B 模型（如果本地没有）",
        "Download the 14B model (if not on disk)",
        "HF_ENDPOINT=https://hf-mirror.com huggingface-cli download Qwen/Qwen2.5-14B-Instruct "
        "--local-dir /path/to/models/Qwen2.5-14B-Instruct",
    ),
    StepSpec(
        "serve",
        3,
        "双卡部署 14B 模型",
        "Serve the 14B model on two GPUs",
        "CUDA_VISIBLE_DEVICES=0,1 vllm serve Qwen/Qwen2.5-14B-Instruct "
        "--tensor-parallel-size 2 --gpu-memory-utilization 0.9 --max-model-len 2048 --port 8000",
    ),
    StepSpec(
        "balance",
        4,
        "验证双卡负载均衡",
        "Check the two GPUs are balanced",
        "nvitop  # 两张卡的显存占用是否均衡",
    ),
    StepSpec(
        "api-test",
        5,
        "API 功能测试",
        "API test",
        'curl http://localhost:8000/v1/chat/completions -H "Content-Type: application/json" '
        '-d \'{"messages": [{"role": "user", "content": "写一首关于春天的诗"}], '
        '"max_tokens": 512}\'',
    ),
    StepSpec(
        "bench",
        6,
        "性能基准测试",
        "Performance benchmark",
        "python benchmark_vllm.py  # 10 次顺序请求；然后按并发档位压测（vllm bench serve 定义）",
    ),
    StepSpec(
        "compare", 7, "对比 vLLM vs HuggingFace", "Compare vLLM with HuggingFace", "invoke compare"
    ),
    StepSpec("compare-tp", 8, "TP=1 与 TP=2 对比", "TP=1 versus TP=2", "invoke day4 --compare-tp"),
    StepSpec(
        "metrics", 9, "关键指标解读", "Read the key metrics", "curl http://localhost:8000/metrics"
    ),
]


# What `invoke day4` runs, in order (compare and compare-tp are run on request).
DAY4_PLAN = ["gpus", "download", "serve", "balance", "api-test", "bench", "metrics"]


# The seed's morning, afternoon and evening of Day 4.
DAY4_SECTIONS = [
    (
        "上午：双卡张量并行",
        "Morning: tensor parallelism on two GPUs",
        ["gpus", "download", "serve", "balance", "api-test"],
    ),
    ("下午：性能对比测试", "Afternoon: performance tests", ["bench", "compare", "compare-tp"]),
    ("晚上：监控与日志", "Evening: monitoring and logs", ["metrics"]),
]


# Shown for a step of STEPS that this run did not run.
DAY4_NOT_RUN_HINT = {"compare": "invoke compare", "compare-tp": "invoke day4 --compare-tp"}


# The seed's "Day 4 验收标准", each ticked from one recorded criterion (or step).
DAY4_ACCEPTANCE = [
    Acceptance("双卡 14B 模型成功部署", "the 14B model is served on two GPUs", "serve", "tp_gpus"),
    Acceptance(
        "两张卡显存占用均衡（误差 < 10%）",
        "the two GPUs' memory is balanced (within 10 %)",
        "balance",
        "spread_pct",
    ),
    Acceptance("完成性能基准测试", "the performance benchmark completed", "bench"),
    Acceptance(
        "能解读关键性能指标", "the key performance metrics are read and explained", "metrics"
    ),
]


DAY4_NEEDS = {
    "download": ("gpus",),
    "serve": ("gpus", "download"),
    "balance": ("serve",),
    "api-test": ("serve",),
    "bench": ("serve",),
    "metrics": ("bench",),
    "compare-tp": ("serve",),
}


DAY5_TITLE_ZH = "Day 5：vLLM 实践体验（离线推理与关键参数）"


DAY5_TITLE_EN = "Day 5: hands-on vLLM (offline inference and key parameters)"


DAY5_STEPS = [
    StepSpec(
        "install",
        1,
        "安装并确认 vLLM",
        "Install vLLM and check it",
        'pip install vllm\npython -c "import vllm; print(vllm.__version__)"',
    ),
    StepSpec(
        "offline",
        2,
        "离线推理示例与 batch size 测试",
        "Offline inference and batch sizes",
        "python test_vllm_offline.py\npython benchmark_vllm.py  # batch_size in [1, 4, 8, 16]",
    ),
    StepSpec(
        "kv-cache",
        3,
        "启动日志：Block 分配",
        "Startup log: KV-cache blocks",
        "grep -E 'KV cache size|GPU blocks' vllm-startup.log",
    ),
    StepSpec("memory", 4, "显存占用", "GPU memory in use", "nvidia-smi"),
    StepSpec(
        "params",
        5,
        "关键参数（引擎实际取值）",
        "Key parameters (the engine's values)",
        "python -m vllm.entrypoints.openai.api_server --model Qwen/Qwen2.5-7B-Instruct "
        "--tensor-parallel-size 1 --gpu-memory-utilization 0.9 --max-model-len 2048",
    ),
]


# The seed's "今日自检清单", each ticked from one recorded criterion.
DAY5_ACCEPTANCE = [
    Acceptance(
        "成功运行vLLM离线推理示例", "ran vLLM's offline inference example", "offline", "example"
    ),
    Acceptance("不同 batch size 都跑完", "every batch size ran", "offline", "all_batches"),
    Acceptance(
        "每个 batch size 记录了 tok/s", "tok/s recorded for every batch size", "offline", "tok_s"
    ),
    Acceptance(
        "记录启动命令和关键参数",
        "the startup command and key parameters are recorded",
        "params",
        "params_read",
    ),
    Acceptance(
        "记录 Block 分配信息", "the KV-cache block allocation is recorded", "kv-cache", "num_blocks"
    ),
    Acceptance(
        "记录显存占用（nvidia-smi）",
        "GPU memory use is recorded (nvidia-smi)",
        "memory",
        "gpu_mem_used",
    ),
]


DAY5_NEEDS: dict[str, tuple[str, ...]] = {
    "offline": ("install",),
    "kv-cache": ("offline",),
    "memory": ("offline",),
    "params": ("offline",),
}


DAY3 = Day("day3", DAY3_TITLE_ZH, DAY3_TITLE_EN, DAY3_STEPS, DAY3_ACCEPTANCE, DAY3_NEEDS)
DAY4 = Day(
    "day4",
    DAY4_TITLE_ZH,
    DAY4_TITLE_EN,
    DAY4_STEPS,
    DAY4_ACCEPTANCE,
    DAY4_NEEDS,
    plan=DAY4_PLAN,
    not_run_hint=DAY4_NOT_RUN_HINT,
    sections=DAY4_SECTIONS,
)
DAY5 = Day("day5", DAY5_TITLE_ZH, DAY5_TITLE_EN, DAY5_STEPS, DAY5_ACCEPTANCE, DAY5_NEEDS)

# ------------------------------------------------------------------------------------------ Day 6 (lab-defined)
# Not a day of seed 000: the lab's own next step after Day 4, from seed 001 ("多 GPU 部署":
# 流水线并行（大模型） `--pipeline-parallel-size 2`) and seed 003 phase 3 ("服务化与集群":
# 分布式部署 Ray / Kubernetes). One model across several nodes with vLLM's own multi-node
# launcher (or an existing Ray cluster); issue 12.
DAY6_TITLE_ZH = (
    "Day 6：多节点部署（实验室自定；依据种子 001 流水线并行、种子 003 第三阶段分布式部署）"
)


DAY6_TITLE_EN = (
    "Day 6: one model across several nodes (lab-defined; from seed 001's pipeline "
    "parallelism and seed 003 phase 3, distributed deployment)"
)


DAY6_STEPS = [
    StepSpec(
        "nodes",
        1,
        "检查各节点资源",
        "Check every node's resources",
        "nvidia-smi  # 在每个节点上 / on every node",
    ),
    StepSpec(
        "node",
        2,
        "启动其他节点（headless）",
        "Start the other nodes (headless)",
        "vllm serve MODEL --pipeline-parallel-size 2 --nnodes 2 --node-rank 1 "
        "--master-addr HEAD_IP --master-port 29555 --headless",
    ),
    StepSpec(
        "serve-nodes",
        3,
        "跨节点部署（vLLM 多节点启动器）",
        "Serve across nodes (vLLM's multi-node launcher)",
        "vllm serve MODEL --pipeline-parallel-size 2 --nnodes 2 --node-rank 0 "
        "--master-addr HEAD_IP --master-port 29555",
    ),
    StepSpec(
        "node-share",
        4,
        "验证每个节点持有自己的一份",
        "Check every node holds its share",
        "nvidia-smi  # 每个节点的显存占用是否均衡 / is memory balanced over the nodes",
    ),
    StepSpec(
        "api-test",
        5,
        "API 测试",
        "API test",
        "curl http://HEAD_IP:8000/v1/chat/completions -H \"Content-Type: application/json\" -d '{...}'",
    ),
    StepSpec(
        "bench",
        6,
        "性能基准测试（跨节点）",
        "Performance benchmark (across nodes)",
        "vllm bench serve  # 延迟循环 + 并发扫描 / latency loop + concurrency sweep",
    ),
    StepSpec(
        "compare-nodes",
        7,
        "单节点 TP 对比跨节点 PP",
        "One node (TP) versus across nodes (PP)",
        "invoke day6  # TP=2 一台机器 vs PP=2 两个节点 / TP=2 on one host vs PP=2 across two nodes",
    ),
]


#: What `invoke day6` runs on the head (the `node` step runs on the other hosts: `invoke node`).
DAY6_PLAN = ["nodes", "serve-nodes", "node-share", "api-test", "bench", "compare-nodes"]


DAY6_SECTIONS = [
    (
        "上午：跨节点部署",
        "Morning: serving across nodes",
        ["nodes", "node", "serve-nodes", "node-share", "api-test"],
    ),
    ("下午：性能与对比", "Afternoon: performance and comparison", ["bench", "compare-nodes"]),
]


DAY6_ACCEPTANCE = [
    Acceptance(
        "模型跨多个节点部署成功（引擎在所有节点上就绪）",
        "the model is served across nodes (the engine up on every node)",
        "serve-nodes",
        "engine_across_nodes",
    ),
    Acceptance(
        "每个节点显存占用均衡（误差 < 10%）",
        "every node's memory is balanced (within 10 %)",
        "node-share",
        "spread_pct",
    ),
    Acceptance("跨节点 API 正常响应", "the API answers across nodes", "api-test"),
    Acceptance("完成跨节点性能基准测试", "the benchmark across nodes completed", "bench"),
    Acceptance("完成单节点 vs 跨节点对比", "one node compared with several", "compare-nodes"),
]


DAY6_NEEDS = {
    "serve-nodes": ("nodes",),
    "node-share": ("serve-nodes",),
    "api-test": ("serve-nodes",),
    "bench": ("serve-nodes",),
    "compare-nodes": ("serve-nodes", "bench"),
}


DAY6_NOT_RUN_HINT = {"node": "invoke node --node-rank 1 --nnodes 2 --master-addr HEAD_IP"}


DAY6 = Day(
    "day6",
    DAY6_TITLE_ZH,
    DAY6_TITLE_EN,
    DAY6_STEPS,
    DAY6_ACCEPTANCE,
    DAY6_NEEDS,
    plan=DAY6_PLAN,
    not_run_hint=DAY6_NOT_RUN_HINT,
    sections=DAY6_SECTIONS,
)

#: Every day of the plan, by key, in order.
DAYS: dict[str, Day] = {d.key: d for d in (DAY3, DAY4, DAY5, DAY6)}


def day(key: str) -> Day:
    """The day `key`, or ConfigError listing the days."""
    if key not in DAYS:
        raise ConfigError(f"unknown day {key!r}; choose one of {', '.join(DAYS)}")
    return DAYS[key]


def day4_plan(compare_tp: bool = False) -> list[str]:
    """The keys `invoke day4` runs; `--compare-tp` adds the TP=1 vs TP=2 step."""
    return DAY4_PLAN + (["compare-tp"] if compare_tp else [])
