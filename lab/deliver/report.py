"""性能对比报告 (the performance comparison report), rendered from the logbook only.

It gathers the recorded steps that matter (Day 4 `bench` and `compare`, the `serve` that
was benchmarked, the `gpus` query, the `monitor` timeline, Day 5 `offline`), recomputes
the sweep from the `requests` table where it can (`lab.measure.stats.summarize`, the way
`vllm bench serve` computes it), and renders `logbook/report.md` with its PNG plots.
A piece that was never recorded renders as "not measured yet — run `invoke X`".

`render_all` is what `invoke report` runs: the report, the plots, the deployment notes, the
dashboard and prometheus.yml.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.measure import stats
from lab.core.errors import LabError
from lab.record.logbook import Logbook
from lab.deliver.progress import Records, run_hint

if TYPE_CHECKING:
    pass

#: Seed 004's cost view: the time and GPU-minutes to infer this many samples.
SAMPLES_FOR_COST = 10_000
GIB = 1024 ** 3


# ------------------------------------------------------------------------------------ gather


def _has_gpus(step: dict) -> bool:
    return bool((step.get("values") or {}).get("gpus"))


def gather(book: Logbook, run_id: int | None = None) -> dict:
    """The recorded steps and rows the report, the plots and the dashboard are drawn from.
    `run_id`: a day4 run whose bench/compare to report (default: the latest recorded)."""
    rec = Records(book)
    if run_id is not None:
        run = rec.run(run_id)
        if run["day"] != "day4":
            raise LabError(f"run #{run_id} is a {run['day']} run; --run takes a day4 run "
                           "(the one whose bench and compare to report)")
    scope = {"run_id": run_id} if run_id is not None else {}
    bench = rec.latest("bench", **scope)
    compare = rec.latest("compare", **scope)
    anchor = bench or compare
    if anchor:
        # The server and GPUs the benchmark ran on: same run, else earlier on the same host.
        host = rec.runs[anchor["run_id"]]["host"]
        same_host = lambda s: rec.runs[s["run_id"]]["host"] == host  # noqa: E731
        serve = rec.latest("serve", run_id=anchor["run_id"]) or \
            rec.latest("serve", before=anchor["started_at"], where=same_host)
        gpus = rec.latest("gpus", run_id=anchor["run_id"], where=_has_gpus) or \
            rec.latest("gpus", before=anchor["started_at"],
                       where=lambda s: same_host(s) and _has_gpus(s))
    else:
        serve = rec.latest("serve")
        gpus = rec.latest("gpus", where=_has_gpus) or rec.latest("gpus")
    monitor = None
    if anchor:
        monitor = rec.latest("monitor", run_id=anchor["run_id"],
                             where=lambda s: bool(book.samples(s["id"])))
    monitor = monitor or rec.latest("monitor", where=lambda s: bool(book.samples(s["id"])))
    install = rec.latest("install", where=lambda s: bool((s.get("values") or {}).get("vllm")))
    offline = rec.latest("offline")
    metrics_step = rec.latest("metrics")
    server = next((r for r in reversed(book.servers()) if serve and r.get("step_id") == serve["id"]),
                  None)
    levels, by_level = sweep_levels(book, bench)
    runs_used = sorted({s["run_id"] for s in (bench, compare, serve, gpus, monitor, install, offline)
                        if s})
    return {
        "rec": rec, "run_id": run_id, "bench": bench, "compare": compare, "serve": serve,
        "server": server,
        "gpus": gpus, "monitor": monitor, "install": install, "offline": offline,
        "metrics": metrics_step,
        "samples": book.samples(monitor["id"]) if monitor else [],
        "levels": levels, "by_level": by_level, "latency": latency_loop(book, bench),
        "runs": [rec.runs[i] for i in runs_used],
        "profile": _profile(rec, serve or anchor),
    }


def _profile(rec: Records, step: dict | None) -> str | None:
    if not step:
        return None
    return (step.get("values") or {}).get("profile") or rec.runs[step["run_id"]].get("profile")


def sweep_levels(book: Logbook, bench: dict | None) -> tuple[list[dict], dict[int, list[dict]]]:
    """The sweep's levels [{concurrency, level, summary, source, n}] and its request rows by
    concurrency. Recomputed from the `requests` table where it has the rows; otherwise the
    summaries the bench step recorded."""
    if not bench:
        return [], {}
    rows = book.requests(bench["id"], phase="sweep") or [
        r for r in book.requests(bench["id"]) if r.get("phase") != "latency"]
    by_level: dict[int, list[dict]] = {}
    for row in rows:
        if row.get("concurrency"):
            by_level.setdefault(int(row["concurrency"]), []).append(row)
    if by_level:
        levels = [{"concurrency": c, "level": group[0].get("level") or f"c{c}",
                   "summary": stats.summarize(group, None), "source": "requests",
                   "n": sum(1 for r in group if not r.get("warmup"))}
                  for c, group in sorted(by_level.items())]
        return levels, by_level
    recorded = (bench.get("values") or {}).get("levels") or []
    levels = [{"concurrency": lv.get("concurrency"), "level": lv.get("level") or f"c{lv.get('concurrency')}",
               "summary": _complete(lv.get("summary") or lv), "source": "values",
               "n": (lv.get("summary") or lv).get("requests")}
              for lv in recorded if lv.get("concurrency")]
    return sorted(levels, key=lambda lv: lv["concurrency"]), {}


def _complete(summary: dict) -> dict:
    """A recorded summary with every key stats.summarize gives (missing ones None)."""
    out = {**stats.summarize([], None), **summary}
    for key, empty in stats.summarize([], None).items():
        if isinstance(empty, dict):
            out[key] = {**empty, **(summary.get(key) or {})}
    return out


def latency_loop(book: Logbook, bench: dict | None) -> dict | None:
    """Seed 000's latency script (sequential requests: avg/min/max ms), from the request rows
    of phase "latency" when recorded, else from the bench step's values."""
    if not bench:
        return None
    rows = [r for r in book.requests(bench["id"], phase="latency") if not r.get("warmup")]
    if rows:
        ms = [r["e2el_s"] * 1000 for r in rows if r.get("ok") and r.get("e2el_s") is not None]
        return {"avg_ms": sum(ms) / len(ms) if ms else None, "min_ms": min(ms, default=None),
                "max_ms": max(ms, default=None), "n": len(rows),
                "failed": sum(1 for r in rows if not r.get("ok")), "source": "requests"}
    lat = (bench.get("values") or {}).get("latency")
    if not lat:
        return None
    # lab.measure.bench records the seed's key names (avg_latency_ms, …); accept the short ones too.
    pick = lambda *keys: next((lat[k] for k in keys if lat.get(k) is not None), None)  # noqa: E731
    return {"avg_ms": pick("avg_ms", "avg_latency_ms"), "min_ms": pick("min_ms", "min_latency_ms"),
            "max_ms": pick("max_ms", "max_latency_ms"), "n": pick("n", "runs"),
            "failed": pick("failed"), "source": "values"}


# ------------------------------------------------------------------------------------ figures


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def gpu_for(data: dict) -> list[dict]:
    """The GPUs the benchmarked server used, as the gpus step recorded them: its
    CUDA_VISIBLE_DEVICES (from the servers table), else the first `tp` GPUs. None on CPU."""
    found = ((data["gpus"] or {}).get("values") or {}).get("gpus") or []
    if not found or data["profile"] == "cpu":
        return []
    tp = int(((data["serve"] or {}).get("values") or {}).get("tp") or 1)
    visible = str(((data.get("server") or {}).get("env") or {}).get("CUDA_VISIBLE_DEVICES") or "")
    wanted = [int(v) for v in visible.split(",") if v.strip().isdigit()] or list(range(tp))
    chosen = [g for g in found if g.get("index") in wanted]
    return chosen or found[:tp]


def bandwidth_gbps(gpu: dict) -> float | None:
    """NVML: max memory clock (MHz) × bus width (bits) × 2 / 8 / 1000 → GB/s."""
    bw = _num(gpu.get("peak_memory_bandwidth_gbps"))
    if bw is None and gpu.get("max_memory_clock_mhz") and gpu.get("memory_bus_width_bits"):
        bw = gpu["max_memory_clock_mhz"] * gpu["memory_bus_width_bits"] * 2 / 8 / 1000.0
    return bw


def roofline(data: dict) -> dict:
    """Single-stream decode against the memory-bandwidth bound. bound = weight bytes (the
    serve step's model_load_gib) / peak bandwidth (NVML): the least time one token can take
    at batch 1, since each decode step reads every weight once. Compared with the measured
    median TPOT at concurrency 1: pct = bound / TPOT × 100."""
    serve = data["serve"]
    out: dict[str, Any] = {"applies": True, "missing": [], "bound_ms": None, "pct": None}
    if data["profile"] == "cpu":
        return {"applies": False, "reason": "cpu"}
    gpus = gpu_for(data)
    if not gpus:
        out["missing"].append(("gpus", "invoke gpus"))
    weights = _num(((serve or {}).get("values") or {}).get("model_load_gib"))
    if weights is None:
        out["missing"].append(("model_load_gib", "invoke serve"))
    c1 = next((lv for lv in data["levels"] if lv["concurrency"] == 1), None)
    tpot = _num(((c1 or {}).get("summary") or {}).get("tpot_ms", {}).get("median"))
    if tpot is None:
        out["missing"].append(("tpot_c1", "invoke bench"))
    bws = [bw for bw in (bandwidth_gbps(g) for g in gpus) if bw]
    if gpus and not bws:
        out["missing"].append(("bandwidth", "invoke gpus"))
    out.update(weights_gib=weights, tpot_ms=tpot, tp=int(((serve or {}).get("values") or {}).get("tp") or 1),
               gpu=gpus[0] if gpus else None, bandwidth_gbps=min(bws) if bws else None)
    if weights is not None and bws:
        out["bound_ms"] = weights * GIB / (min(bws) * 1e9) * 1000
        if tpot:
            out["pct"] = out["bound_ms"] / tpot * 100
    return out


def comparison(data: dict) -> dict | None:
    """Seed 000's table (memory, mean latency, throughput, speedup) from the compare step."""
    step = data["compare"]
    if not step:
        return None
    values = step.get("values") or {}
    v, h = values.get("vllm") or {}, values.get("hf") or {}
    gpus = gpu_for(data)
    total_gib = (gpus[0].get("memory_total_mib") or 0) / 1024 if gpus else None

    def mem(side: dict) -> dict:
        gib = _num(side.get("peak_mem_gib"))
        pct = _num(side.get("peak_mem_pct"))
        if pct is None and gib is not None and total_gib:
            pct = gib / total_gib * 100
        return {"gib": gib, "pct": pct}

    def latency_ms(side: dict) -> float | None:
        ms = _num(side.get("latency_ms"))
        s = _num(side.get("latency_s"))
        return ms if ms is not None else (s * 1000 if s is not None else None)

    if not v and not h:
        # lab.checklist.steps.compare may record its own rows: [{metric_zh, metric_en, vllm, hf, speedup}].
        return {"step": step, "source": values.get("source"), "workload": values.get("workload"),
                "rows": [], "table": values.get("table") or [], "cost": cost(values, data)}
    mv, mh = mem(v), mem(h)
    lv, lh = latency_ms(v), latency_ms(h)
    tv, th = _num(v.get("output_tok_s")), _num(h.get("output_tok_s"))
    sv, sh = _num(v.get("samples_per_min")), _num(h.get("samples_per_min"))
    return {
        "step": step, "source": values.get("source"), "workload": values.get("workload"),
        "rows": [
            {"key": "memory", "vllm": mv, "hf": mh, "ratio": _ratio(mv["gib"], mh["gib"])},
            {"key": "latency", "vllm": lv, "hf": lh, "ratio": _ratio(lh, lv)},
            {"key": "throughput", "vllm": tv, "hf": th, "ratio": _ratio(tv, th)},
            {"key": "samples", "vllm": sv, "hf": sh, "ratio": _ratio(sv, sh)},
        ],
        "table": [], "cost": cost(values, data),
    }


def cost(values: dict, data: dict) -> list[dict]:
    """Seed 004's cost view: minutes and GPU-minutes for SAMPLES_FOR_COST samples, each side,
    extrapolated from the measured samples/min. GPU count: recorded by compare, else (vLLM)
    the served TP; none on the CPU profile."""
    recorded = values.get("cost") or {}
    tp = int(((data["serve"] or {}).get("values") or {}).get("tp") or 1)
    out = []
    for side in ("hf", "vllm"):
        s = values.get(side) or {}
        spm = _num(s.get("samples_per_min"))
        gpus = _num(s.get("gpus") or s.get("num_gpus") or (recorded.get(side) or {}).get("gpus"))
        if gpus is None and side == "vllm" and data["profile"] != "cpu":
            gpus = tp
        if data["profile"] == "cpu":
            gpus = None
        minutes = SAMPLES_FOR_COST / spm if spm else None
        out.append({"side": side, "samples_per_min": spm, "minutes": minutes, "gpus": gpus,
                    "gpu_minutes": minutes * gpus if minutes is not None and gpus else None})
    hf, vl = out
    saving = _ratio(hf["gpu_minutes"], vl["gpu_minutes"])
    for row in out:
        row["saving_x"] = saving
    return out


# ------------------------------------------------------------------------------------ plots


def make_plots(data: dict, out_dir: Path, lang: str) -> dict[str, Path]:
    """Draw every plot the data allows; returns {key: path} of those written. Old plots of
    a key that has no data now are removed, so nothing stale is embedded."""
    from lab.deliver import plots
    out: dict[str, Path] = {}
    monitor = data["monitor"]
    caption = f" — run #{monitor['run_id']}" if monitor else ""
    made = {
        "timeline": plots.timeline(data["samples"], out_dir / plots.FILES["timeline"], lang, caption),
        "sweep": plots.sweep(data["levels"], out_dir / plots.FILES["sweep"], lang),
        "latency": plots.latency_distribution(data["by_level"], out_dir / plots.FILES["latency"], lang),
        "offline": plots.offline(((data["offline"] or {}).get("values") or {}).get("batches") or [],
                                 out_dir / plots.FILES["offline"], lang),
    }
    for key, path in made.items():
        if path:
            out[key] = path
        else:
            (out_dir / plots.FILES[key]).unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------ context

DEFINITIONS = (
    ("TTFT", "首 token 延迟：发出 POST 前开始计时，到第一个带 choices 的流式块。",
     "Time to first token: from just before the POST to the first streamed chunk with choices."),
    ("TPOT", "每请求：(E2EL − TTFT) / (输出 token 数 − 1)，只算输出 > 1 的请求。",
     "Per request: (E2EL - TTFT) / (output tokens - 1), for outputs of more than one token."),
    ("ITL", "相邻两个流式块之间的间隔，所有请求合并统计。",
     "The gaps between successive chunks, pooled across requests."),
    ("E2EL", "端到端延迟：到最后一个带 choices 的块。", "End-to-end latency: until the last chunk with choices."),
    ("tok/s · req/s", "输出 token 取自 usage.completion_tokens；吞吐 = 总量 ÷ 从第一个发送到最后一个完成的墙钟时间。",
     "Output tokens come from usage.completion_tokens; throughput = total ÷ the wall time "
     "from the first send to the last finish."),
    ("mean · median · p90 · p99", "numpy.percentile（线性插值）；只统计成功且非预热的请求。",
     "numpy.percentile (linear); successful, non-warm-up requests only."),
    ("concurrency", "由信号量限制；等待并发名额的时间单独记录，不计入 TTFT。",
     "Capped by a semaphore; time spent waiting for a slot is recorded apart, not added to TTFT."),
    ("workload", "固定长度的合成 prompt、ignore_eos，每个并发级别前先预热。",
     "Synthetic prompts of a fixed token length, ignore_eos, a warm-up before each level."),
)

NAMING = (
    ("GuideLLM 的 “ITL” ≈ 这里（和 vLLM）的 TPOT；llmperf 的 ITL 包含 TTFT。比较不同工具的数字前先对齐定义。",
     "GuideLLM's \"ITL\" ≈ TPOT here (and in vLLM); llmperf's ITL includes TTFT. Align the "
     "definitions before comparing numbers from different tools."),
    ("种子脚本的“平均延迟”是非流式请求的端到端时间（含全部输出 token），不是 TTFT。",
     "The seed script's \"average latency\" is a non-streamed request's end-to-end time (all "
     "output tokens included), not TTFT."),
)


def report_context(book: Logbook, lang: str, run_id: int | None = None,
                   plots: dict[str, Path] | None = None, data: dict | None = None) -> dict:
    from lab.vllm import metrics
    from lab.deliver.jinja import STATUS_TEXT, fmt_ts
    data = data or gather(book, run_id)
    serve, install = data["serve"], data["install"]
    sv = (serve or {}).get("values") or {}
    iv = (install or {}).get("values") or {}
    context = {
        "lang": lang, "data": data, "run_id": run_id,
        "generated_at": fmt_ts(time.time()), "status_text": STATUS_TEXT[lang],
        "profile": data["profile"], "runs": data["runs"],
        "gpus": gpu_for(data),
        "all_gpus": ((data["gpus"] or {}).get("values") or {}).get("gpus") or [],
        "host": (data["runs"][-1]["host"] if data["runs"] else None),
        "versions": {"vllm": iv.get("vllm") or sv.get("vllm_version"), "dist": iv.get("dist"),
                     "torch": iv.get("torch"), "transformers": iv.get("transformers")},
        "serve": serve, "sv": sv, "bench": data["bench"], "compare": comparison(data),
        "latency": data["latency"], "levels": data["levels"], "roofline": roofline(data),
        "monitor": data["monitor"], "offline": data["offline"],
        "metrics_delta": _metrics_delta(data["bench"]),
        "interpretation": _interpretation(data),
        "plots": {k: p.name for k, p in (plots or {}).items()},
        "definitions": [(term, zh if lang == "zh" else en) for term, zh, en in DEFINITIONS],
        "naming": [zh if lang == "zh" else en for zh, en in NAMING],
        "old_names": metrics.old_name_rows(None, lang),
        "samples_for_cost": SAMPLES_FOR_COST,
        "mv": (data["monitor"] or {}).get("values") or {},
        "ov": (data["offline"] or {}).get("values") or {},
    }
    context = {k: lenient(v) for k, v in context.items()}
    context.update(hint=lambda command: run_hint(command, lang), flat=flat_numbers)
    return context


def _metrics_delta(bench: dict | None) -> dict | None:
    """What /metrics counted over the benchmark: bench values' metrics.delta (lab.measure.bench) or
    metrics_delta, with the peak KV-cache usage when polled."""
    values = (bench or {}).get("values") or {}
    m = values.get("metrics") or {}
    delta = dict(values.get("metrics_delta") or m.get("delta") or {})
    peak = (m.get("kv") or {}).get("peak_kv_cache_usage_perc")
    if peak is not None:
        delta["peak_kv_cache_usage_perc"] = peak
    return delta or None


def _interpretation(data: dict) -> list[dict]:
    """The Day 4 metrics step's reading of the benchmark (rows with meanings), when it read
    the reported bench."""
    step = data["rec"].latest("metrics", where=lambda s: bool((s.get("values") or {}).get("interpretation")))
    values = (step or {}).get("values") or {}
    bench = data["bench"]
    if not step or (bench and values.get("bench_step_id") not in (None, bench["id"])):
        return []
    return values["interpretation"]


class Lenient(dict):
    """A dict whose missing keys read as None in a template: values recorded by other steps
    may lack a key, and a missing figure must render as n/a, not crash the report."""

    def __missing__(self, key: Any) -> None:
        return None


def lenient(value: Any) -> Any:
    """`value` with every nested dict made Lenient (other objects untouched)."""
    if isinstance(value, dict):
        return Lenient({k: lenient(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [lenient(v) for v in value]
    return value


def flat_numbers(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """[(dotted key, number)] of a nested dict's numbers (e.g. bench's metrics_delta)."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out += flat_numbers(item, f"{prefix}{key}.")
    elif _num(value) is not None:
        out.append((prefix.rstrip("."), value))
    return out


def render_report(book: Logbook, lang: str, out_dir: Path, run_id: int | None = None,
                  data: dict | None = None, plots: dict[str, Path] | None = None) -> Path:
    """Render `logbook/report.md` and its plots (Command line equivalent: `invoke report`)."""
    from lab.deliver.jinja import render_to
    data = data or gather(book, run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots is None:
        plots = make_plots(data, out_dir, lang)
    return render_to(out_dir, "report.md", "report.md.j2",
                     **report_context(book, lang, run_id, plots, data))
