"""Numbers from a vLLM server log: KV-cache capacity, model load, engine init, version.

Only lines that vLLM really prints are parsed; each pattern names the vLLM source it follows.
A fact whose line is absent stays None: nothing is defaulted or estimated. Prefer
`lab.vllm.metrics` (`vllm:cache_config_info`) for KV capacity when the server is up; the log is
what is left when it is not, and the only place for load and init timings.

Command line equivalent:
    grep -E 'KV cache size|Maximum concurrency|Model loading took|init engine|startup complete' server.log
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.core.text import clean_lines

# vLLM prints counts with thousands separators (f"{num_tokens:,}"), so "1,041,472".
_NUM = r"[0-9][0-9,]*(?:\.[0-9]+)?"
# Colour codes appear in the banner when vLLM logs to a terminal (VLLM_LOGGING_COLOR).

# vllm/v1/core/kv_cache_utils.py (0.32): "%s KV cache size: %s tokens, Maximum concurrency
# for %s tokens per request: %.2fx", where %s is "GPU" on CUDA, else the device type in upper
# case ("CPU", "XPU"), plus " + host" with hisparse. 0.26 prints the two halves on two lines.
_KV_TOKENS_RE = re.compile(
    rf"\b(?P<device>[A-Z]{{2,5}}(?: \+ host)?) KV cache size: (?P<tokens>{_NUM}) tokens"
)
_MAX_CONCURRENCY_RE = re.compile(
    rf"Maximum concurrency for (?P<tokens>{_NUM}) tokens per request: (?P<x>{_NUM})x"
)
# vllm/v1/worker/gpu_model_runner.py: 0.32 "Model loading took %s GiB memory and %.6f seconds";
# older "Model loading took %.4f GiB and %.6f seconds". The CPU model runner prints neither.
_MODEL_LOAD_RE = re.compile(
    rf"Model loading took (?P<gib>{_NUM}) ?GiB(?: memory)? and (?P<s>{_NUM}) ?s(?:ec(?:ond)?s?)?\b"
)
# V0 engines (before 0.8) said GB but divided by 2**30, so the number is GiB.
_MODEL_LOAD_V0_RE = re.compile(rf"Loading model weights took (?P<gib>{_NUM}) ?GB")
# model_executor/model_loader/default_loader.py: "Loading weights took %.2f seconds".
_WEIGHTS_LOAD_RE = re.compile(rf"Loading weights took (?P<s>{_NUM}) ?s(?:ec(?:ond)?s?)?\b")
# vllm/v1/engine/core.py: "init engine (profile, create kv cache, warmup model) took %.2f s",
# optionally followed by " (compilation: %.2f s" (0.32, when torch.compile ran).
_ENGINE_INIT_RE = re.compile(
    rf"init engine \(profile, create kv cache, warmup model\) took (?P<s>{_NUM}) ?s(?:econds)?"
    rf"(?: \(compilation: (?P<compile_s>{_NUM}) ?s)?"
)
# vllm/compilation/monitor.py + decorators.py: "torch.compile took %.2f s in total" (0.32),
# "torch.compile takes %.2f s in total" (older), "torch.compile and initial profiling/warmup
# run together took %.2f s in total" (0.32). A tag such as "[encoder] " may precede them.
_COMPILE_RE = re.compile(
    rf"torch\.compile (?:takes|took|and initial profiling/warmup run together took) "
    rf"(?P<s>{_NUM}) ?s in total"
)
# vllm/v1/worker/gpu_model_runner.py: "Graph capturing finished in %.0f secs, took %.2f GiB".
_GRAPH_CAPTURE_RE = re.compile(
    rf"Graph capturing finished in (?P<s>{_NUM}) ?secs?, took (?P<gib>{_NUM}) ?GiB"
)
# V0 / early V1: "# GPU blocks: %d" (V0 adds ", # CPU blocks: %d"); 0.32 only at DEBUG level:
# "Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: %d".
_GPU_BLOCKS_RE = re.compile(rf"(?:# GPU blocks: |num_gpu_blocks is: )(?P<n>{_NUM})")
# vllm/v1/worker/cpu_worker.py: "Auto set (X/Y) GiB for KV cache on node N, ..." or
# "Explicitly set (X/Y) GiB for KV cache on node N." (VLLM_CPU_KVCACHE_SPACE).
_CPU_KV_GIB_RE = re.compile(
    rf"(?:Auto|Explicitly) set \((?P<gib>{_NUM})/(?P<total_gib>{_NUM})\) GiB for KV cache"
)
# uvicorn, printed once the API server is serving.
_STARTUP_COMPLETE_RE = re.compile(r"Application startup complete")
# vllm/entrypoints/serve/utils/api_utils.py: "vLLM server version %s, serving model %s" when the
# logo is off; older servers: "vLLM API server version %s". The logo form is handled below.
_VERSION_PLAIN_RE = re.compile(
    r"vLLM (?:API )?server version v?(?P<v>\d+\.\d+[\w.+-]*)(?:, serving model (?P<model>\S+))?"
)
# The 0.32 logo: block characters, then "version 0.32.0" on one line and "model   NAME" on the next.
_LOGO_VERSION_RE = re.compile(r"\u2588.*\bversion\s+v?(?P<v>\d+\.\d+[\w.+-]*)")
_LOGO_MODEL_RE = re.compile(r"\u2588.*\bmodel\s+(?P<model>\S+)")


@dataclass
class StartupFacts:
    """What one server start printed. Every number is None unless its line was found."""

    kv_cache_tokens: int | None = None
    #: "GPU", "CPU", "XPU"… as the KV-capacity line names the device.
    kv_cache_device: str | None = None
    max_concurrency_x: float | None = None
    max_concurrency_for_tokens: int | None = None
    model_load_gib: float | None = None
    model_load_s: float | None = None
    weights_load_s: float | None = None
    engine_init_s: float | None = None
    compile_s: float | None = None
    graph_capture_s: float | None = None
    graph_capture_gib: float | None = None
    gpu_blocks: int | None = None
    #: CPU backend only: the GiB the worker set aside for the KV cache.
    cpu_kv_cache_gib: float | None = None
    app_startup_complete: bool = False
    vllm_version: str | None = None
    served_model: str | None = None
    #: field name -> the log line it was read from (evidence for the logbook).
    evidence: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready), evidence included."""
        return asdict(self)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _integer(text: str) -> int:
    return int(_number(text))


def _last_run(lines: list[str]) -> list[str]:
    """Lines of the last server start, when several starts were appended to one log.

    A start is recognised by its version banner; a log without one is taken whole.
    """
    starts = [
        i
        for i, line in enumerate(lines)
        if _VERSION_PLAIN_RE.search(line) or _LOGO_VERSION_RE.search(line)
    ]
    if not starts:
        return lines
    first = starts[-1]
    # The logo's "version" is on its second line: step back over the logo's first lines.
    while first > 0 and "\u2588" in lines[first - 1]:
        first -= 1
    return lines[first:]


def parse_startup(text: str) -> StartupFacts:
    """Read the facts of the last server start in `text` (a whole server log).

    With tensor parallelism each worker prints its own model-load line; the first one
    (usually rank 0) is kept, since every rank loads an equal shard.

    Command line equivalent:
        grep -E 'KV cache size|Maximum concurrency|Model loading took|init engine' server.log
    """
    facts = StartupFacts()
    compile_lines: list[tuple[float, str]] = []

    def keep(name: str, value, line: str) -> None:
        # First occurrence wins: later TP ranks repeat the same line.
        if getattr(facts, name) is None:
            setattr(facts, name, value)
            facts.evidence[name] = line.strip()

    for line in _last_run(clean_lines(text)):
        if m := _KV_TOKENS_RE.search(line):
            keep("kv_cache_tokens", _integer(m["tokens"]), line)
            keep("kv_cache_device", m["device"], line)
        if m := _MAX_CONCURRENCY_RE.search(line):
            keep("max_concurrency_x", _number(m["x"]), line)
            keep("max_concurrency_for_tokens", _integer(m["tokens"]), line)
        if m := _MODEL_LOAD_RE.search(line):
            keep("model_load_gib", _number(m["gib"]), line)
            keep("model_load_s", _number(m["s"]), line)
        elif m := _MODEL_LOAD_V0_RE.search(line):
            keep("model_load_gib", _number(m["gib"]), line)
        if m := _WEIGHTS_LOAD_RE.search(line):
            keep("weights_load_s", _number(m["s"]), line)
        if m := _ENGINE_INIT_RE.search(line):
            keep("engine_init_s", _number(m["s"]), line)
            if m["compile_s"] is not None:
                keep("compile_s", _number(m["compile_s"]), line)
        if m := _COMPILE_RE.search(line):
            compile_lines.append((_number(m["s"]), line))
        if m := _GRAPH_CAPTURE_RE.search(line):
            keep("graph_capture_s", _number(m["s"]), line)
            keep("graph_capture_gib", _number(m["gib"]), line)
        if m := _GPU_BLOCKS_RE.search(line):
            keep("gpu_blocks", _integer(m["n"]), line)
        if m := _CPU_KV_GIB_RE.search(line):
            keep("cpu_kv_cache_gib", _number(m["gib"]), line)
        if _STARTUP_COMPLETE_RE.search(line) and not facts.app_startup_complete:
            facts.app_startup_complete = True
            facts.evidence["app_startup_complete"] = line.strip()
        if m := _VERSION_PLAIN_RE.search(line):
            keep("vllm_version", m["v"], line)
            if m["model"]:
                keep("served_model", m["model"], line)
        elif m := _LOGO_VERSION_RE.search(line):
            keep("vllm_version", m["v"], line)
        if m := _LOGO_MODEL_RE.search(line):
            keep("served_model", m["model"], line)

    # The init-engine line's "(compilation: …)" is the engine's own total; without it, take
    # the largest torch.compile line (TP ranks each print theirs, and they overlap in time).
    if facts.compile_s is None and compile_lines:
        seconds, line = max(compile_lines)
        facts.compile_s = seconds
        facts.evidence["compile_s"] = line.strip()
    return facts


def parse_startup_file(path: str | Path, max_bytes: int = 20_000_000) -> StartupFacts:
    """`parse_startup` on a log file; reads at most the last `max_bytes` of it."""
    path = Path(path)
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - max_bytes))
        data = f.read()
    return parse_startup(data.decode("utf-8", errors="replace"))
