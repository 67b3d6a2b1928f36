"""Experiments on how the server schedules and caches: prefix caching, the KV cache's size,
continuous batching, chunked prefill, and the API key (seed 000 Q3, seed 002's parameter
table, seed 003 phases 2 and 3). They run on every profile (vllm-cpu included)."""

from __future__ import annotations

from lab.checklist.experiments import metrics as M
from lab.checklist.experiments.model import Arm, Change, Equals, Experiment, Load
from lab.core.fmt import num
from lab.core.lang import pick
from lab.record.values import ExperimentValues


def _pct(f) -> str:
    return "—" if f is None or f.change_pct_median is None else f"{f.change_pct_median:+.1f} %"


# -- prefix caching ---------------------------------------------------------------------------
PREFIX_HITS = M.counter(
    "prefix_cache_hits", "前缀缓存命中 token 数", "prefix-cache hit tokens", better="higher"
)


def _prefix_lesson(values: ExperimentValues, lang: str) -> str:
    ttft = next(f for f in values.findings if f.metric == "ttft_median_ms")
    on = values.median("default", "ttft_median_ms")
    off = values.median("off", "ttft_median_ms")
    rate = values.median("default", "prefix_hit_rate_pct")
    return pick(
        lang,
        f"共享前缀时，前缀缓存（本服务默认：{values_default(values)}；种子 002 的参数表写的是 False、block 16）"
        f"把 TTFT 中位数从 {num(off)} ms 变为 {num(on)} ms（{_pct(ttft)}），命中率 {num(rate)} %。",
        f"With a shared prefix, prefix caching (this server's default: {values_default(values)}; "
        f"seed 002's table says False, block 16) took median TTFT from {num(off)} ms to "
        f"{num(on)} ms ({_pct(ttft)}), with a hit rate of {num(rate)} %.",
    )


def values_default(values: ExperimentValues) -> str:
    """The default arm's prefix-caching setting and block size, as `vllm:cache_config_info`
    reported them."""
    cfg = values.cache_config.get("default") or {}
    return (
        f"enable_prefix_caching={cfg.get('enable_prefix_caching', '?')}, "
        f"block_size={cfg.get('block_size', '?')}"
    )


PREFIX_CACHING = Experiment(
    name="prefix-caching",
    question_zh="许多请求共享一段长系统提示时，前缀缓存能省下多少首 token 时间？服务的默认值是什么？",
    question_en="When many requests share a long system prompt, how much time to first token "
    "does prefix caching save, and what is the server's default?",
    arms=(
        Arm(
            "off",
            flags=("--no-enable-prefix-caching",),
            label_zh="关闭前缀缓存",
            label_en="prefix caching off",
        ),
        Arm("default", label_zh="默认（不加参数）", label_en="the default (no flag)"),
    ),
    load={
        "cpu": Load(
            kind="shared-prefix",
            input_len=1600,
            prefix_len=1536,
            output_len=4,
            num_requests=12,
            concurrency=1,
            warmup=1,
        ),
        "gpu": Load(
            kind="shared-prefix",
            input_len=1920,
            prefix_len=1792,
            output_len=16,
            num_requests=64,
            concurrency=4,
            warmup=2,
        ),
    },
    metrics=(M.TTFT_MEDIAN, M.TTFT_P99, M.PREFIX_HIT_RATE, PREFIX_HITS, M.OUTPUT_TOK_S),
    expect=(
        Change(
            "ttft_median_ms",
            baseline="off",
            treatment="default",
            direction="lower",
            min_change_pct=5,
        ),
        Change(
            "prefix_cache_hits",
            baseline="off",
            treatment="default",
            direction="higher",
            min_change_pct=0,
            relative=False,
        ),
    ),
    # One round on a GPU: each start of the 7B model takes 1.5–4 min (docs/facts.md).
    rounds={"cpu": 2, "gpu": 1},
    lesson=_prefix_lesson,
    ticks=("p2-paged",),
    seed_ref="seed 002 §4 (--enable-prefix-caching, --block-size); seed 003 phase 2",
)

# -- the KV cache -----------------------------------------------------------------------------
KV_ARMS = {
    "cpu": (
        Arm(
            "1gib",
            env={"VLLM_CPU_KVCACHE_SPACE": "1"},
            label_zh="KV 缓存 1 GiB",
            label_en="KV cache 1 GiB",
        ),
        Arm(
            "2gib",
            env={"VLLM_CPU_KVCACHE_SPACE": "2"},
            label_zh="KV 缓存 2 GiB",
            label_en="KV cache 2 GiB",
        ),
        Arm(
            "tiny",
            flags=("--num-gpu-blocks-override", "6"),
            cfg={"max_model_len": 512},
            env={"VLLM_CPU_KVCACHE_SPACE": "1"},
            label_zh="只有 6 个块（max-model-len 512）",
            label_en="only 6 blocks (max-model-len 512)",
        ),
    ),
    "gpu": (
        Arm(
            "0.5",
            cfg={"gpu_memory_utilization": 0.5},
            label_zh="显存比例 0.5",
            label_en="gpu-memory-utilization 0.5",
        ),
        Arm(
            "0.7",
            cfg={"gpu_memory_utilization": 0.7},
            label_zh="显存比例 0.7",
            label_en="gpu-memory-utilization 0.7",
        ),
        Arm(
            "0.9",
            cfg={"gpu_memory_utilization": 0.9},
            label_zh="显存比例 0.9",
            label_en="gpu-memory-utilization 0.9",
        ),
        Arm(
            "tiny",
            flags=("--num-gpu-blocks-override", "96"),
            cfg={"max_model_len": 1024},
            label_zh="只有 96 个块（max-model-len 1024）",
            label_en="only 96 blocks (max-model-len 1024)",
        ),
    ),
}


def _kv_lesson(values: ExperimentValues, lang: str) -> str:
    big, small = values.order[0], "tiny"
    arms = [a.name for a in values.arms]
    mid = arms[1] if len(arms) > 2 else big
    tok_a, tok_b = values.median(big, "kv_cache_tokens"), values.median(mid, "kv_cache_tokens")
    pre = values.median(small, "preemptions")
    tput_big, tput_small = (
        values.median(big, "output_tok_s"),
        values.median(small, "output_tok_s"),
    )
    return pick(
        lang,
        f"KV 块数 × 块大小 = 可缓存的 token：{big} 有 {num(tok_a)} 个 token，{mid} 有 {num(tok_b)} 个；"
        f"缓存小于负载所需时（{small}）发生 {num(pre)} 次抢占，吞吐从 {num(tput_big)} 降到 {num(tput_small)} tok/s。",
        f"KV blocks × block size = tokens cached: {big} holds {num(tok_a)} tokens, {mid} "
        f"{num(tok_b)}; with a cache smaller than the load needs ({small}) the scheduler "
        f"preempted {num(pre)} times and throughput went from {num(tput_big)} to "
        f"{num(tput_small)} tok/s.",
    )


KV_CACHE = Experiment(
    name="kv-cache",
    question_zh="KV 缓存有多大（块数 × 块大小），能并发多少请求？缓存不够时吞吐和抢占会怎样？",
    question_en="How big is the KV cache (blocks × block size), how many requests fit, and "
    "what happens to throughput and preemptions when it is too small for the load?",
    arms=KV_ARMS,
    load={
        "cpu": Load(input_len=100, output_len=100, num_requests=16, concurrency=8, warmup=1),
        "gpu": Load(input_len=256, output_len=256, num_requests=128, concurrency=64, warmup=2),
    },
    metrics=(
        M.KV_BLOCKS,
        M.BLOCK_SIZE,
        M.KV_TOKENS,
        M.MAX_CONCURRENCY,
        M.OUTPUT_TOK_S,
        M.PREEMPTIONS,
        M.TTFT_P99,
    ),
    expect={
        "cpu": (
            Change(
                "kv_cache_tokens",
                baseline="1gib",
                treatment="2gib",
                direction="higher",
                min_change_pct=50,
            ),
            Change(
                "preemptions",
                baseline="1gib",
                treatment="tiny",
                direction="higher",
                min_change_pct=0,
                relative=False,
            ),
            Change(
                "output_tok_s",
                baseline="1gib",
                treatment="tiny",
                direction="lower",
                min_change_pct=5,
            ),
        ),
        "gpu": (
            Change(
                "kv_cache_tokens",
                baseline="0.5",
                treatment="0.9",
                direction="higher",
                min_change_pct=50,
            ),
            Change(
                "preemptions",
                baseline="0.9",
                treatment="tiny",
                direction="higher",
                min_change_pct=0,
                relative=False,
            ),
            Change(
                "output_tok_s",
                baseline="0.9",
                treatment="tiny",
                direction="lower",
                min_change_pct=5,
            ),
        ),
    },
    rounds={"cpu": 1, "gpu": 1},
    lesson=_kv_lesson,
    ticks=("p2-paged", "p2-scheduler", "p3-tuning"),
    seed_ref="seed 002 §5.2 (GPU blocks × block_size); seed 003 phases 2–3; seed 000 Q1",
)


# -- continuous batching ----------------------------------------------------------------------
def _batching_lesson(values: ExperimentValues, lang: str) -> str:
    lo, hi = values.arms[0].name, values.arms[-1].name
    t_lo, t_hi = values.median(lo, "output_tok_s"), values.median(hi, "output_tok_s")
    f_lo, f_hi = values.median(lo, "ttft_median_ms"), values.median(hi, "ttft_median_ms")
    return pick(
        lang,
        f"并发 64 时，--max-num-seqs 从 {lo} 到 {hi}：吞吐 {num(t_lo)} → {num(t_hi)} tok/s，"
        f"TTFT 中位数 {num(f_lo)} → {num(f_hi)} ms：连续批处理让等待的请求随时加入正在解码的批次（种子 000 Q3）。",
        f"At concurrency 64, --max-num-seqs from {lo} to {hi}: throughput {num(t_lo)} → "
        f"{num(t_hi)} tok/s, median TTFT {num(f_lo)} → {num(f_hi)} ms: continuous batching "
        f"lets waiting requests join the running batch at any step (seed 000 Q3).",
    )


BATCHING = Experiment(
    name="batching",
    question_zh="同一时间最多调度多少个序列（--max-num-seqs）对吞吐和首 token 时间有什么影响？",
    question_en="How does the number of sequences scheduled at once (--max-num-seqs) trade "
    "throughput against time to first token?",
    arms=(
        Arm(
            "1",
            flags=("--max-num-seqs", "1"),
            label_zh="--max-num-seqs 1",
            label_en="--max-num-seqs 1",
        ),
        Arm(
            "8",
            flags=("--max-num-seqs", "8"),
            label_zh="--max-num-seqs 8",
            label_en="--max-num-seqs 8",
        ),
        Arm(
            "64",
            flags=("--max-num-seqs", "64"),
            label_zh="--max-num-seqs 64",
            label_en="--max-num-seqs 64",
        ),
    ),
    load={
        "cpu": Load(input_len=32, output_len=32, num_requests=64, concurrency=64, warmup=1),
        "gpu": Load(input_len=256, output_len=128, num_requests=256, concurrency=64, warmup=2),
    },
    metrics=(M.OUTPUT_TOK_S, M.TTFT_MEDIAN, M.TPOT_MEDIAN, M.TTFT_P99),
    expect=(
        Change("output_tok_s", baseline="1", treatment="64", direction="higher", min_change_pct=20),
        Change(
            "ttft_median_ms", baseline="1", treatment="64", direction="lower", min_change_pct=20
        ),
    ),
    rounds={"cpu": 1, "gpu": 1},
    lesson=_batching_lesson,
    ticks=("p2-paged", "p2-scheduler", "p3-tuning"),
    seed_ref="seed 000 Q3; seed 002 §4 (--max-num-seqs); seed 003 phase 2 (continuous batching)",
)

# -- chunked prefill --------------------------------------------------------------------------
ITL_P99_SHORT = M.latency("itl_ms", "p99", "short")
TTFT_LONG = M.latency("ttft_ms", "median", "long")


def _chunked_lesson(values: ExperimentValues, lang: str) -> str:
    small, large = values.arms[0].name, values.arms[-1].name
    i_s, i_l = values.median(small, ITL_P99_SHORT.key), values.median(large, ITL_P99_SHORT.key)
    t_s, t_l = values.median(small, TTFT_LONG.key), values.median(large, TTFT_LONG.key)
    return pick(
        lang,
        f"长提示混入解码负载时，每步 token 预算 {small}（分块预填充）对 {large}：短请求 ITL p99 "
        f"{num(i_s)} 对 {num(i_l)} ms，长请求 TTFT 中位数 {num(t_s)} 对 {num(t_l)} ms。",
        f"With long prompts in a decode-heavy load, a step budget of {small} tokens (prefills "
        f"chunked) against {large}: ITL p99 of the short requests {num(i_s)} vs {num(i_l)} ms, "
        f"median TTFT of the long ones {num(t_s)} vs {num(t_l)} ms.",
    )


CHUNKED_PREFILL = Experiment(
    name="chunked-prefill",
    question_zh="长提示混入以解码为主的负载时，每步 token 预算（--max-num-batched-tokens）如何在"
    "解码请求的 ITL 与长请求的 TTFT 之间取舍？",
    question_en="With long prompts mixed into a decode-heavy load, how does the per-step token "
    "budget (--max-num-batched-tokens) trade the decoders' ITL against the long "
    "prompts' TTFT?",
    arms={
        "cpu": (
            Arm(
                "256",
                flags=("--max-num-batched-tokens", "256"),
                label_zh="每步 256 token",
                label_en="256 tokens a step",
            ),
            Arm(
                "2048",
                flags=("--max-num-batched-tokens", "2048"),
                label_zh="每步 2048 token",
                label_en="2048 tokens a step",
            ),
        ),
        "gpu": (
            Arm(
                "512",
                flags=("--max-num-batched-tokens", "512"),
                label_zh="每步 512 token",
                label_en="512 tokens a step",
            ),
            Arm(
                "8192",
                flags=("--max-num-batched-tokens", "8192"),
                label_zh="每步 8192 token",
                label_en="8192 tokens a step",
            ),
        ),
    },
    load={
        "cpu": Load(
            kind="mixed",
            input_len=32,
            output_len=64,
            long_len=1536,
            long_output_len=4,
            long_count=4,
            num_requests=24,
            concurrency=16,
            warmup=1,
        ),
        "gpu": Load(
            kind="mixed",
            input_len=64,
            output_len=256,
            long_len=1900,
            long_output_len=8,
            long_count=16,
            num_requests=128,
            concurrency=64,
            warmup=2,
        ),
    },
    metrics=(ITL_P99_SHORT, TTFT_LONG, M.latency("itl_ms", "median", "short"), M.OUTPUT_TOK_S),
    expect={
        "cpu": (
            Change(
                ITL_P99_SHORT.key,
                baseline="2048",
                treatment="256",
                direction="lower",
                min_change_pct=5,
            ),
            Change(
                TTFT_LONG.key,
                baseline="2048",
                treatment="256",
                direction="higher",
                min_change_pct=5,
            ),
        ),
        "gpu": (
            Change(
                ITL_P99_SHORT.key,
                baseline="8192",
                treatment="512",
                direction="lower",
                min_change_pct=5,
            ),
            Change(
                TTFT_LONG.key,
                baseline="8192",
                treatment="512",
                direction="higher",
                min_change_pct=5,
            ),
        ),
    },
    rounds={"cpu": 1, "gpu": 2},
    lesson=_chunked_lesson,
    ticks=("p2-scheduler", "p3-tuning"),
    seed_ref="seed 002 §4 (--max-num-batched-tokens); seed 003 phase 2 (prefill/decode scheduling)",
)


# -- the API key ------------------------------------------------------------------------------
def _probe(name: str):
    def read(v) -> float | None:
        p = next((p for p in v.probes if p.name == name), None)
        return float(p.http_status) if p is not None and p.http_status is not None else None

    return read


NO_KEY = M.derived(
    "no_key_status", "不带 key 的 HTTP 状态", "HTTP status without a key", "", _probe("no-key")
)
WRONG_KEY = M.derived(
    "wrong_key_status",
    "错误 key 的 HTTP 状态",
    "HTTP status with a wrong key",
    "",
    _probe("wrong-key"),
)
RIGHT_KEY = M.derived(
    "right_key_status",
    "正确 key 的 HTTP 状态",
    "HTTP status with the right key",
    "",
    _probe("right-key"),
)
KEY_IN_FILES = M.counter("key_in_lab_files", "含有 key 的 lab 文件数", "lab files holding the key")
KEY_IN_LOG = M.counter("key_in_server_log", "vLLM 日志中出现 key", "the key in vLLM's own log")


def _api_key_lesson(values: ExperimentValues, lang: str) -> str:
    st = {
        k: values.median("keyed", k)
        for k in (
            "no_key_status",
            "wrong_key_status",
            "right_key_status",
            "key_in_lab_files",
            "key_in_server_log",
        )
    }

    def code(x: float | None) -> str:
        return "—" if x is None else f"{x:.0f}"

    return pick(
        lang,
        f"带 --api-key 启动的服务：不带 key 返回 {code(st['no_key_status'])}，错误 key 返回 "
        f"{code(st['wrong_key_status'])}，正确 key 返回 {code(st['right_key_status'])}；"
        f"key 出现在 {code(st['key_in_lab_files'])} 个 lab 文件中（日志库、状态文件、导出）。",
        f"A server started with --api-key answered {code(st['no_key_status'])} without a key, "
        f"{code(st['wrong_key_status'])} with a wrong one and {code(st['right_key_status'])} "
        f"with the right one; the key was found in {code(st['key_in_lab_files'])} of the lab's "
        f"files (logbook, state file, exports).",
    )


API_KEY = Experiment(
    name="api-key",
    question_zh="用 --api-key 启动后，不带 key、错误 key、正确 key 的请求分别得到什么？key 会被记下来吗？",
    question_en="With --api-key, what do requests with no key, a wrong key and the right key "
    "get, and is the key ever stored?",
    arms=(
        Arm(
            "keyed",
            api_key=True,
            label_zh="--api-key（每次随机生成）",
            label_en="--api-key (a fresh random key)",
        ),
    ),
    metrics=(NO_KEY, WRONG_KEY, RIGHT_KEY, KEY_IN_FILES, KEY_IN_LOG),
    expect=(
        Equals("no_key_status", "keyed", 401),
        Equals("wrong_key_status", "keyed", 401),
        Equals("right_key_status", "keyed", 200),
        Equals("key_in_lab_files", "keyed", 0),
    ),
    rounds=1,
    measure="api-key",
    lesson=_api_key_lesson,
    ticks=("p3-serving",),
    seed_ref="seed 000 (部署命令笔记: --api-key); docs/facts.md (API key)",
)

EXPERIMENTS = (PREFIX_CACHING, KV_CACHE, BATCHING, CHUNKED_PREFILL, API_KEY)
