"""Recognise known vLLM failures in a server log and give the one-line fix.

`SIGNATURES` is the "Known failures and their fixes" table of docs/facts.md as data, plus a few
memory errors whose exact text was read in the vLLM 0.32 source. The order is most specific
first, and `diagnose` keeps that order. `diagnose_balance` is the memory check for TP=2
(seed 000 Q2), which needs GPU numbers rather than a log.

Command line equivalent: `grep -nE 'out of memory|CUBLAS_STATUS|NUMA nodes|Address already in use' server.log`
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lab.core.lang import check_lang, pick
from lab.core.text import clean_lines
from lab.core.units import imbalance_pct

#: A matched line longer than this is cut (tracebacks can carry huge reprs).
MAX_LINE_CHARS = 300


@dataclass(frozen=True)
class Signature:
    """One known failure: how to spot it in the log and how to fix it."""

    key: str
    pattern: re.Pattern
    title_zh: str
    title_en: str
    fix_zh: str
    fix_en: str
    #: Where the failure and its fix come from (seed question, docs/facts.md, vLLM source).
    source: str

    def title(self, lang: str) -> str:
        return pick(lang, self.title_zh, self.title_en)

    def fix(self, lang: str) -> str:
        return pick(lang, self.fix_zh, self.fix_en)


@dataclass(frozen=True)
class Diagnosis:
    """A recognised failure: what it is, the fix, where the fix comes from, the evidence."""

    title: str
    fix: str
    source: str
    matched_line: str
    key: str = ""


def _sig(key, pattern, title_zh, title_en, fix_zh, fix_en, source) -> Signature:
    return Signature(key, re.compile(pattern), title_zh, title_en, fix_zh, fix_en, source)


SIGNATURES: tuple[Signature, ...] = (
    _sig(
        "cuda_graph_tp_crash",
        # Both texts were seen together on 2xH200 with TP=2 during CUDA-graph capture.
        r"gemm_and_bias error: CUBLAS_STATUS_EXECUTION_FAILED|CUBLAS_STATUS_EXECUTION_FAILED"
        r"|an illegal memory access was encountered",
        "TP>1 时在 CUDA Graph 捕获阶段崩溃（CUBLAS_STATUS_EXECUTION_FAILED / illegal memory access）",
        "Crash during CUDA-graph capture with TP>1 (CUBLAS_STATUS_EXECUTION_FAILED / illegal memory access)",
        "加 `--enforce-eager`（跳过 CUDA Graph，可运行但每 token 更慢）",
        "Add `--enforce-eager` (skips CUDA graphs: it works, but each token is slower)",
        "docs/facts.md: Known failures (2xH200, 14B, TP=2)",
    ),
    _sig(
        "cpu_numa_bind",
        # vllm/utils/ompmultiprocessing.py (assertion text).
        r"Not enough allowed NUMA nodes to bind threads",
        "CPU 后端 TP>1：NUMA 节点不够，无法自动绑定线程",
        "CPU backend, TP>1: not enough NUMA nodes to bind worker threads automatically",
        '设置 `VLLM_CPU_OMP_THREADS_BIND="0|1"`（每个 TP rank 一组核，用 | 分隔）',
        'Set `VLLM_CPU_OMP_THREADS_BIND="0|1"` (one core list per TP rank, separated by |)',
        "docs/facts.md: The cpu profile (TP=2)",
    ),
    _sig(
        "cpu_attention_head_dim",
        # csrc/cpu/cpu_attn.cpp: "Unsupported CPU attention configuration: head_dim=16 isa=1 …".
        r"Unsupported CPU attention configuration: head_dim=\d*",
        "CPU 注意力不支持这个 head_dim",
        "CPU attention does not support this head_dim",
        "换用 head_dim ≥ 64 的模型（lab 构建的 tiny 模型即满足）",
        "Use a model with head_dim >= 64 (the lab's tiny model has it)",
        "docs/facts.md: The cpu profile",
    ),
    _sig(
        "vllm_script_metadata",
        # importlib.metadata, raised from vllm/entrypoints/cli/main.py under vllm-cpu.
        r"PackageNotFoundError: (?:No package metadata was found for vllm\b|vllm\b)",
        "`vllm` 命令找不到名为 vllm 的发行包（vllm-cpu）",
        "The `vllm` script finds no distribution named vllm (vllm-cpu)",
        "用 `python -m vllm.entrypoints.openai.api_server …` 启动服务",
        "Start the server with `python -m vllm.entrypoints.openai.api_server …`",
        "docs/facts.md: Starting the server (vllm-cpu 0.32)",
    ),
    _sig(
        "port_in_use",
        r"Address already in use|\[Errno 98\]|EADDRINUSE",
        "端口已被占用",
        "The port is already in use",
        "换一个 `--port`，或先 `invoke stop` 停掉旧的服务",
        "Use another `--port`, or run `invoke stop` to end the old server",
        "docs/facts.md: Known failures",
    ),
    _sig(
        "kv_cache_too_small_for_max_len",
        # vllm/v1/core/kv_cache_utils.py: _check_enough_kv_cache_memory.
        r"larger than the available KV cache\s+memory",
        "KV Cache 放不下一条 max-model-len 长度的请求",
        "The KV cache cannot hold one request of max-model-len tokens",
        "减小 `--max-model-len`（日志里给了估计的最大长度），或提高 `--gpu-memory-utilization`",
        "Lower `--max-model-len` (the log gives an estimate), or raise `--gpu-memory-utilization`",
        "vLLM 0.32 source: v1/core/kv_cache_utils.py; seed 000 Q1",
    ),
    _sig(
        "no_kv_cache_memory",
        # vllm/v1/core/kv_cache_utils.py: available memory <= 0 after the profiling run.
        r"No available memory for the cache blocks",
        "权重和激活占满了预算，没有剩余显存给 KV Cache",
        "Weights and activations fill the budget: no memory is left for the KV cache",
        "提高 `--gpu-memory-utilization`，或加大 `--tensor-parallel-size`，或换更小的模型",
        "Raise `--gpu-memory-utilization`, or raise `--tensor-parallel-size`, or use a smaller model",
        "vLLM 0.32 source: v1/core/kv_cache_utils.py",
    ),
    _sig(
        "startup_memory_taken",
        # vllm/v1/worker/utils.py (GPU) and v1/worker/cpu_worker.py (CPU).
        r"is less than desired (?:GPU|CPU) memory utilization",
        "启动时空闲显存/内存少于 --gpu-memory-utilization 要求的量（有别的进程占用）",
        "At startup, free memory is below what --gpu-memory-utilization asks for (another process holds it)",
        "先 `invoke stop` 并用 nvidia-smi 查看占用显存的进程，或降低 `--gpu-memory-utilization`",
        "Run `invoke stop` and check nvidia-smi for other processes, or lower `--gpu-memory-utilization`",
        "vLLM 0.32 source: v1/worker/utils.py",
    ),
    _sig(
        "cuda_oom",
        # torch: "CUDA out of memory. Tried to allocate …"; vLLM: "Failed to load model - not
        # enough GPU memory." Not the INFO hint "If out-of-memory error occurs during cudagraph
        # capture", which every healthy start prints on older versions.
        r"CUDA out of memory|OutOfMemoryError|Failed to load model - not enough GPU memory",
        "加载或 profiling 时 CUDA 显存不足（OOM）",
        "CUDA out of memory while loading or profiling",
        "降低 `--gpu-memory-utilization`（如 0.7）或 `--max-model-len`，或加大 `--tensor-parallel-size`",
        "Lower `--gpu-memory-utilization` (e.g. 0.7) or `--max-model-len`, or raise `--tensor-parallel-size`",
        "seed 000 Q1, seed 004 Q2",
    ),
    _sig(
        "worker_died",
        # vllm/v1/executor/multiproc_executor.py: "Worker proc %s died unexpectedly (exit code:
        # %s), shutting down executor." Last of the runtime failures: an OOM or CUDA error
        # that killed the worker is the more specific diagnosis.
        r"Worker proc \S+ died unexpectedly",
        "vLLM 的一个 worker 进程意外退出（引擎随之关闭）",
        "A vLLM worker process died unexpectedly (the engine shuts down)",
        "退出码 -9 即 SIGKILL：多半是内核 OOM killer（看 `dmesg`）或被手动杀掉；释放内存或降低 `--gpu-memory-utilization` / `--max-num-seqs` 后重新启动",
        "Exit code -9 is SIGKILL: the kernel's OOM killer (see `dmesg`) or a kill by hand; free memory or lower `--gpu-memory-utilization` / `--max-num-seqs`, then start again",
        "vLLM 0.32 source: v1/executor/multiproc_executor.py; seen on this machine (tests/fixtures/cpu_tp2_worker_killed.log)",
    ),
    _sig(
        "model_offline_not_cached",
        # huggingface_hub with HF_HUB_OFFLINE=1 and a repo id that is not in the local cache.
        r"LocalEntryNotFoundError|outgoing traffic has been disabled",
        "离线模式（HF_HUB_OFFLINE=1）下本地缓存里没有这个模型",
        "Offline mode (HF_HUB_OFFLINE=1) and the model is not in the local cache",
        "把 `--model` 指向含 config.json 的本地目录，或联网先下载该模型",
        "Point `--model` at a local folder with config.json, or download the model first",
        "vLLM 0.32 (seen: EngineArgs with HF_HUB_OFFLINE=1)",
    ),
    _sig(
        "model_not_found",
        r"does not appear to have a file named config\.json|Repo id must be in the form"
        r"|HFValidationError|Invalid repository ID or local directory specified"
        r"|RepositoryNotFoundError|is not a local folder and is not a valid model identifier",
        "找不到模型：路径不存在、目录里没有 config.json，或 HF 仓库名不对",
        "Model not found: the path does not exist, the folder has no config.json, or the repo id is wrong",
        "检查 `--model`：本地目录要有 config.json（路径写全），或用正确的 HF 仓库名",
        "Check `--model`: a local folder must hold config.json (use the full path), or give a valid HF repo id",
        "docs/facts.md: Known failures (missing model)",
    ),
)


# vLLM's prefix: "(EngineCore_DP0 pid=7) ERROR 11-21 15:20:03 [core.py:843] " (0.32 adds the
# process part; older versions start at the level).
_VLLM_PREFIX_RE = re.compile(
    r"^(?:\([^)]*\) )?(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ \S+ \[[^\]]*\] ?"
)


def _is_code_line(line: str) -> bool:
    """A traceback frame or source line ("  File …", "    raise …"): indented after the prefix."""
    body = _VLLM_PREFIX_RE.sub("", line)
    return body[:1].isspace()


def _best_line(lines: list[str], pattern: re.Pattern) -> str | None:
    """The first matching message line; a traceback code line only when nothing else matches."""
    fallback = None
    for line in lines:
        if pattern.search(line):
            if not _is_code_line(line):
                return line
            fallback = fallback or line
    return fallback


def _short(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def diagnose(log_text: str, lang: str = "zh") -> list[Diagnosis]:
    """Every known failure found in `log_text`, most specific first, one per signature.

    Lines starting with "#" are skipped (fixture headers and shell comments, never vLLM output).

    Command line equivalent: `grep -nE 'out of memory|CUBLAS_STATUS|NUMA nodes' server.log`
    """
    check_lang(lang)
    lines = [line for line in clean_lines(log_text) if not line.lstrip().startswith("#")]
    found: list[Diagnosis] = []
    for sig in SIGNATURES:
        line = _best_line(lines, sig.pattern)
        if line is not None:
            found.append(
                Diagnosis(sig.title(lang), sig.fix(lang), sig.source, _short(line), sig.key)
            )
    return found


def first_diagnosis(log_text: str, lang: str = "zh") -> Diagnosis | None:
    """The most specific failure found in `log_text`, or None."""
    found = diagnose(log_text, lang)
    return found[0] if found else None


def first_fix(log_text: str, lang: str = "zh") -> str | None:
    """The fix of the most specific failure found, or None."""
    found = diagnose(log_text, lang)
    return found[0].fix if found else None


def diagnose_balance(
    used_mib_per_gpu: Sequence[float | None] | Mapping[object, float | None],
    tolerance_pct: float = 10.0,
    lang: str = "zh",
) -> Diagnosis | None:
    """Seed 000 Q2: one GPU uses noticeably more memory than the others under TP.

    `used_mib_per_gpu` is a list (GPU 0, 1, …) or a mapping {gpu index: MiB used}.
    Returns None when the spread is below `tolerance_pct` (or fewer than two GPUs report).

    Command line equivalent: `nvidia-smi --query-gpu=index,memory.used --format=csv`
    """
    check_lang(lang)
    pairs = (
        used_mib_per_gpu.items()
        if isinstance(used_mib_per_gpu, Mapping)
        else enumerate(used_mib_per_gpu)
    )
    items = [(idx, mib) for idx, mib in pairs if mib is not None]
    spread_pct = imbalance_pct(mib for _, mib in items)
    # Balanced means spread < tolerance, as the step's criterion reads ("误差 < 10%"): a
    # spread of exactly the tolerance fails the step, so it must be diagnosed too.
    if spread_pct is None or spread_pct < tolerance_pct:
        return None
    heavy_gpu = max(items, key=lambda kv: kv[1])[0]
    evidence = (
        ", ".join(f"GPU{idx} {mib:,.0f} MiB" for idx, mib in items)
        + f" (spread {spread_pct:.1f} %)"
    )
    title = pick(
        lang,
        f"TP 下显存不均衡：GPU{heavy_gpu} 多用了显存（差 {spread_pct:.1f}% ≥ {tolerance_pct:g}%）",
        f"Unbalanced memory under TP: GPU{heavy_gpu} uses more ({spread_pct:.1f} % ≥ {tolerance_pct:g} %)",
    )
    fix = pick(
        lang,
        "检查 `CUDA_VISIBLE_DEVICES`（两张卡都可见且正是 TP 用的卡），并用 nvidia-smi 查看该 GPU 上的其他进程",
        "Check `CUDA_VISIBLE_DEVICES` (both cards visible, and the ones TP uses) and other processes on that GPU (nvidia-smi)",
    )
    return Diagnosis(title, fix, "seed 000 Q2", evidence, "tp_memory_unbalanced")


# --------------------------------------------------------------------------------------------
# Fatal lines: a line after which the server will not serve (lab.vllm.watch fails the step)
# --------------------------------------------------------------------------------------------
#: Texts vLLM prints when a process of the server tree has failed. The worker and engine texts
#: are vLLM 0.32's (v1/executor/multiproc_executor.py: "WorkerProc hit an exception.",
#: "Worker proc %s died unexpectedly, shutting down executor."; v1/engine/core.py:
#: "EngineCore failed to start."; v1/engine/utils.py: "Engine core initialization failed.
#: See root cause above."; v1/engine/exceptions.py: EngineDeadError); the CUDA texts are the
#: CUDA runtime's, cuBLAS's and torch's; NCCL's errors read "NCCL error" in torch.
FATAL_RE = re.compile(
    r"WorkerProc hit an exception|EngineCore failed to start|Engine core initialization failed"
    r"|died unexpectedly|EngineDeadError"
    r"|CUBLAS_STATUS_(?!SUCCESS)[A-Z_]+|CUDA error|illegal memory access"
    r"|CUDA out of memory|OutOfMemoryError"
    r"|NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|ncclRemoteError"
)


def is_fatal(line: str) -> bool:
    """True for a line after which the server will not serve: a text of `FATAL_RE` or a known
    failure of `SIGNATURES`. Traceback code lines ("  File …", "    raise …") and "#" lines
    never count (the message line that follows them does)."""
    if not line.strip() or line.lstrip().startswith("#") or _is_code_line(line):
        return False
    return bool(FATAL_RE.search(line)) or any(sig.pattern.search(line) for sig in SIGNATURES)


def unknown_fatal(line: str, lang: str = "zh") -> Diagnosis:
    """A fatal line no signature knows: the diagnosis is the line itself."""
    return Diagnosis(
        pick(
            lang,
            "未识别的致命错误（见下面这一行和日志）",
            "An unrecognised fatal error (see this line and the log)",
        ),
        pick(
            lang,
            "读日志末尾的报错；修正后重试",
            "Read the error at the end of the log; fix it and retry",
        ),
        "lab.vllm.diagnose.FATAL_RE",
        _short(line),
        "unknown_fatal",
    )


# --------------------------------------------------------------------------------------------
# Remedies: the known fix of a failure, applied once by `--fix auto`
# --------------------------------------------------------------------------------------------
#: The lowest --gpu-memory-utilization an automatic retry goes down to.
MIN_GPU_MEMORY_UTILIZATION = 0.5
#: vLLM 0.32 (v1/core/kv_cache_utils.py): "… the estimated maximum model length is %d."
_ESTIMATED_LEN_RE = re.compile(r"estimated maximum model length is (\d[\d,]*)")


@dataclass(frozen=True)
class Remedy:
    """A safe, known fix of one failure: vLLM flags to add (or to set to a new value), or
    server environment variables. Only the failures of `remedy_for` have one."""

    key: str  # the signature it fixes
    args: tuple[str, ...] = ()  # vLLM flags (a flag already present is replaced)
    env: tuple[tuple[str, str], ...] = ()
    why_zh: str = ""
    why_en: str = ""
    cost_zh: str = ""
    cost_en: str = ""
    source: str = ""
    #: Settings of the lab it changes ({"gpu_memory_utilization": 0.7}); the flags in `args`
    #: then come from the session's own argv builder.
    settings: dict[str, float | int] = field(default_factory=dict)
    #: The fix holds for starts with at least this tensor-parallel size.
    min_tp: int = 1

    @property
    def shown(self) -> str:
        """What was added, as a user would type it: `--enforce-eager`, `VLLM_…="0|1"`."""
        parts = [f"{k}={shlex.quote(v)}" for k, v in self.env]
        return " ".join([*parts, shlex.join(self.args)]).strip()

    def why(self, lang: str) -> str:
        return pick(lang, self.why_zh, self.why_en)

    def cost(self, lang: str) -> str:
        return pick(lang, self.cost_zh, self.cost_en)


def _has_flag(argv: Iterable[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def remedy_for(
    key: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    tp: int = 1,
    log_text: str = "",
) -> Remedy | None:
    """The safe fix of the failure `key` for a server started with `argv` and `env`, or None
    (no safe fix, or the fix is already in place: retrying would fail the same way).

    - cuda_graph_tp_crash: `--enforce-eager` (docs/facts.md, 2×H200 TP=2);
    - cuda_oom: `--gpu-memory-utilization` 0.2 lower (0.9 → 0.7, seed 000 Q1's example), or,
      already at the floor, `--max-model-len` halved (seed 004 Q2);
    - kv_cache_too_small_for_max_len: `--max-model-len` set to vLLM's own estimate;
    - cpu_numa_bind: `VLLM_CPU_OMP_THREADS_BIND` with one core per rank ("0|1").
    """
    env = env or {}
    if key == "cuda_graph_tp_crash":
        if _has_flag(argv, "--enforce-eager"):
            return None
        return Remedy(
            key,
            ("--enforce-eager",),
            why_zh="CUDA Graph 捕获阶段崩溃（cuBLAS / illegal memory access）；eager 模式跳过图捕获",
            why_en="the crash happens while capturing CUDA graphs (cuBLAS / illegal memory access); eager mode skips the capture",
            cost_zh="每个 token 更慢（无 CUDA Graph）：在 2×H200 上 TP=2 eager 的 TPOT 约 29 ms，TP=1 有图时约 8.8 ms；用 `invoke day4 --compare-tp` 实测",
            cost_en="each token is slower (no CUDA graphs): on 2×H200, TPOT about 29 ms with TP=2 eager vs 8.8 ms with TP=1 and graphs; measure it with `invoke day4 --compare-tp`",
            source="docs/facts.md: Known failures (2xH200, 14B, TP=2)",
            min_tp=2 if tp > 1 else 1,
        )
    if key == "cuda_oom":
        util = float(_flag_value(argv, "--gpu-memory-utilization") or 0.9)
        if util - 0.2 >= MIN_GPU_MEMORY_UTILIZATION - 1e-9:
            new = round(util - 0.2, 2)
            return Remedy(
                key,
                ("--gpu-memory-utilization", f"{new:g}"),
                why_zh=f"加载或 profiling 时显存不足：把 --gpu-memory-utilization 从 {util:g} 降到 {new:g}",
                why_en=f"out of memory while loading or profiling: --gpu-memory-utilization {util:g} → {new:g}",
                cost_zh="KV Cache 变小：能同时处理的请求（最大并发）变少",
                cost_en="a smaller KV cache: fewer requests fit at once (lower max concurrency)",
                source="seed 000 Q1, seed 004 Q2",
                settings={"gpu_memory_utilization": new},
            )
        length = int(_flag_value(argv, "--max-model-len") or 0)
        if length >= 512:
            return _shorter_context(key, length, length // 2, "seed 004 Q2")
        return None
    if key == "kv_cache_too_small_for_max_len":
        length = int(_flag_value(argv, "--max-model-len") or 0)
        m = _ESTIMATED_LEN_RE.search(log_text)
        estimate = int(m.group(1).replace(",", "")) if m else length // 2
        if length and 0 < estimate < length:
            return _shorter_context(
                key, length, estimate, "vLLM 0.32 source: v1/core/kv_cache_utils.py"
            )
        return None
    if key == "cpu_numa_bind":
        if env.get("VLLM_CPU_OMP_THREADS_BIND"):
            return None
        bind = "|".join(str(i) for i in range(max(tp, 2)))
        return Remedy(
            key,
            env=(("VLLM_CPU_OMP_THREADS_BIND", bind),),
            why_zh="CPU 后端 TP>1 无法自动绑定 NUMA 节点：手动给每个 TP rank 指定一个核",
            why_en="the CPU backend cannot bind TP>1 ranks to NUMA nodes by itself: give each rank a core by hand",
            cost_zh="每个 rank 只用一个核（本机核数少时本来也如此）",
            cost_en="each rank gets one core (on a small box that is all there is anyway)",
            source="docs/facts.md: The cpu profile (TP=2)",
        )
    return None


def _shorter_context(key: str, length: int, new: int, source: str) -> Remedy:
    return Remedy(
        key,
        ("--max-model-len", str(new)),
        why_zh=f"KV Cache 放不下 max-model-len 长度的请求：--max-model-len 从 {length} 降到 {new}",
        why_en=f"the KV cache cannot hold a max-model-len request: --max-model-len {length} → {new}",
        cost_zh=f"单个请求最长 {new} tokens（提示词加回复）",
        cost_en=f"a request may hold at most {new} tokens (prompt plus reply)",
        source=source,
        settings={"max_model_len": new},
    )
