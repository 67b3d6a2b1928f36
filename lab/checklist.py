"""The checklist from the seeds, as data: each day's steps in order, and the 验收
(acceptance) items with the recorded criterion that ticks each one."""
from __future__ import annotations

from dataclasses import dataclass

from lab.runner import StepSpec


@dataclass(frozen=True)
class Acceptance:
    """One 验收 checkbox. Ticked only when `step`'s criterion `criterion` (or, with
    criterion None, the whole step) is recorded as pass."""
    label_zh: str
    label_en: str
    step: str
    criterion: str | None = None


DAY3_STEPS = [
    StepSpec("gpus", 1, "检查 GPU 资源", "Check GPU resources", "nvidia-smi"),
    StepSpec("install", 2, "安装 vLLM", "Install vLLM",
             'pip install vllm\npython -c "import vllm; print(vllm.__version__)"'),
    StepSpec("tools", 3, "安装监控工具", "Install monitoring tools", "pip install nvitop gpustat"),
    StepSpec("serve", 4, "单卡部署 7B 模型", "Serve the 7B model on one GPU",
             "CUDA_VISIBLE_DEVICES=0 vllm serve Qwen/Qwen2.5-7B-Instruct --host 0.0.0.0 "
             "--port 8000 --gpu-memory-utilization 0.9 --max-model-len 2048"),
    StepSpec("monitor", 5, "GPU 监控（负载下）", "Monitor the GPU under load", "nvitop"),
    StepSpec("api-test", 6, "API 测试", "API test",
             "curl http://localhost:8000/v1/chat/completions -H \"Content-Type: application/json\" -d '{...}'"),
    StepSpec("metrics", 7, "查看性能指标", "Read the performance metrics",
             "curl http://localhost:8000/metrics"),
]

DAY3_ACCEPTANCE = [
    Acceptance("vLLM 服务成功启动", "the vLLM server started", "serve"),
    Acceptance("API 请求返回正常响应", "the API request returned a normal reply", "api-test"),
    Acceptance("nvitop 显示显存利用率 > 90%", "memory used > 90 % (nvitop)", "monitor", "mem_used_pct"),
    Acceptance("GPU 利用率 > 80%", "GPU utilisation > 80 %", "monitor", "gpu_util_pct"),
    Acceptance("能用 nvitop 监控 GPU 状态", "nvitop can monitor the GPUs", "tools"),
]

DAYS: dict[str, dict] = {
    "day3": {"title_zh": "Day 3：基础理论与单卡部署", "title_en": "Day 3: single-GPU deployment",
             "steps": DAY3_STEPS, "acceptance": DAY3_ACCEPTANCE},
}


def spec(day: str, key: str) -> StepSpec:
    for s in DAYS[day]["steps"]:
        if s.key == key:
            return s
    raise KeyError(f"{day} has no step {key}")


def specs(day: str) -> dict[str, StepSpec]:
    return {s.key: s for s in DAYS[day]["steps"]}
