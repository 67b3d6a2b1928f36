"""`invoke compare-runs A B`: what changed between two runs of the same day: run facts, each
step's status and duration, and each step's key figures."""
from __future__ import annotations

from typing import Any

from lab.core.errors import LabError
from lab.record.queries import Records
from lab.record.logbook import Logbook


def _get(values: dict, path: str) -> Any:
    """values at a dotted path; "a|b" tries each path in turn."""
    for one in path.split("|"):
        node: Any = values
        for part in one.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


#: Key figures per step: (label, path in values, unit, scale, better).
FIGURES: dict[str, tuple[tuple[str, str, str, float, str | None], ...]] = {
    "gpus": (("GPUs with enough free memory", "free_gpus", "", 1, "higher"),),
    "install": (("vLLM", "vllm", "", 1, None), ("torch", "torch", "", 1, None),
                ("install time", "install_s", "s", 1, "lower")),
    "tools": (("nvitop", "versions.nvitop", "", 1, None),),
    "serve": (("startup (until /health = 200)", "ready_s", "s", 1, "lower"),
              ("KV-cache capacity", "kv_cache_tokens", "tokens", 1, "higher"),
              ("max concurrency", "max_concurrency_x", "x", 1, "higher"),
              ("model load", "model_load_gib", "GiB", 1, None),
              ("model load time", "model_load_s", "s", 1, "lower"),
              ("engine init", "engine_init_s", "s", 1, "lower")),
    "monitor": (("peak GPU memory used", "peak_mem_used_pct", "%", 1, None),
                ("peak GPU utilisation", "peak_util_pct", "%", 1, None),
                ("peak process-tree RSS", "peak_rss_mib", "MiB", 1, None),
                ("peak process-tree CPU", "peak_cpu_pct", "%", 1, None),
                ("load output throughput", "load.output_throughput", "tok/s", 1, "higher")),
    "api-test": (("chat latency", "latency_s", "ms", 1000, "lower"),
                 ("chat tokens/s", "tokens_per_s", "tok/s", 1, "higher"),
                 ("stream TTFT", "stream.ttft_s", "ms", 1000, "lower")),
    "metrics": (("vllm: series exported", "vllm_series", "", 1, None),),
    "balance": (("memory spread between GPUs", "spread_pct", "%", 1, "lower"),),
    "bench": (("latency loop mean", "latency.avg_latency_ms|latency.avg_ms", "ms", 1, "lower"),
              ("peak KV-cache usage", "metrics.kv.peak_kv_cache_usage_perc", "%", 100, None),
              ("preemptions", "metrics.delta.preemptions", "", 1, "lower")),
    "compare-tp": (("TP=2 ÷ TP=1 output throughput", "ratios.output_throughput", "x", 1, "higher"),
                   ("TP=2 ÷ TP=1 TPOT median", "ratios.tpot_median", "x", 1, "lower")),
    "compare": (("vLLM output throughput", "vllm.output_tok_s", "tok/s", 1, "higher"),
                ("HF output throughput", "hf.output_tok_s", "tok/s", 1, "higher"),
                ("vLLM mean latency", "vllm.latency_s", "ms", 1000, "lower"),
                ("HF mean latency", "hf.latency_s", "ms", 1000, "lower")),
}


def key_figures(step: dict) -> list[dict]:
    """[{label, value, unit, better}] of a step's key figures (only those recorded)."""
    values = step.get("values") or {}
    out = []
    for label, path, unit, scale, better in FIGURES.get(step["key"], ()):
        value = _get(values, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and scale != 1:
            value = value * scale
        out.append({"label": label, "value": value, "unit": unit, "better": better})
    if step["key"] == "bench":
        for level in values.get("levels") or []:
            s, c = level.get("summary") or level, level.get("concurrency")
            out += [{"label": f"c{c} output throughput", "value": s.get("output_throughput"),
                     "unit": "tok/s", "better": "higher"},
                    {"label": f"c{c} TTFT median", "value": _get(s, "ttft_ms.median"),
                     "unit": "ms", "better": "lower"},
                    {"label": f"c{c} TPOT median", "value": _get(s, "tpot_ms.median"),
                     "unit": "ms", "better": "lower"}]
    if step["key"] == "compare":
        for name, value in sorted((values.get("speedup") or {}).items()):
            out.append({"label": f"speedup {name}", "value": value, "unit": "x", "better": "higher"})
    if step["key"] == "offline":
        for b in values.get("batches") or []:
            out.append({"label": f"batch {b.get('batch_size')} throughput", "value": b.get("tok_s"),
                        "unit": "tok/s", "better": "higher"})
    if step["key"] not in FIGURES and step["key"] not in ("offline",):
        for name, value in sorted(values.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and len(out) < 8:
                out.append({"label": name, "value": value, "unit": "", "better": None})
    return [f for f in out if f["value"] is not None]


def _change(a: Any, b: Any, better: str | None) -> str:
    if a is None or b is None:
        return "—"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if a == b:
            return "="
        delta = b - a
        pct = f" ({delta / a * 100:+.1f} %)" if a else ""
        mark = ""
        if better:
            improved = delta > 0 if better == "higher" else delta < 0
            mark = " ▲ better" if improved else " ▼ worse"
        return f"{_fmt(delta, signed=True)}{pct}{mark}"
    return "=" if a == b else "changed"


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed else ""
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{value:{sign},.0f}"
    return f"{value:{sign},.2f}"


def _run_versions(rec: Records, run_id: int) -> str | None:
    step = rec.latest("install", run_id=run_id) or rec.latest("serve", run_id=run_id)
    values = (step or {}).get("values") or {}
    return values.get("vllm") or values.get("vllm_version")


def compare_runs(book: Logbook, a: int, b: int) -> dict:
    """What changed between runs `a` and `b` of the same day: run facts, each step's
    status and duration, and each step's key figures. Rows: {section, item, a, b, change}."""
    rec = Records(book)
    ra, rb = rec.run(a), rec.run(b)
    if ra["day"] != rb["day"]:
        raise LabError(f"run #{a} is {ra['day']} and run #{b} is {rb['day']}: "
                       "compare two runs of the same day")
    rows = []

    def add(section: str, item: str, va: Any, vb: Any, unit: str = "", better: str | None = None):
        rows.append({"section": section, "item": item + (f" ({unit})" if unit else ""),
                     "a": _fmt(va), "b": _fmt(vb), "change": _change(va, vb, better)})

    for label, key in (("task", "task"), ("profile", "profile"), ("host", "host"),
                       ("status", "status")):
        add("run", label, ra.get(key), rb.get(key))
    add("run", "vLLM", _run_versions(rec, a), _run_versions(rec, b))
    dur = [(r["ended_at"] - r["started_at"]) if r.get("ended_at") else None for r in (ra, rb)]
    add("run", "duration", dur[0], dur[1], "s", "lower")
    steps_a = {s["key"]: s for s in rec.steps if s["run_id"] == a}
    steps_b = {s["key"]: s for s in rec.steps if s["run_id"] == b}
    order = list(steps_a) + [k for k in steps_b if k not in steps_a]
    for key in order:
        sa, sb = steps_a.get(key), steps_b.get(key)
        add(key, "status", (sa or {}).get("status", "not run"), (sb or {}).get("status", "not run"))
        add(key, "duration", (sa or {}).get("duration_s"), (sb or {}).get("duration_s"), "s", "lower")
        figs_a = {f["label"]: f for f in key_figures(sa)} if sa else {}
        figs_b = {f["label"]: f for f in key_figures(sb)} if sb else {}
        for label in list(figs_a) + [k for k in figs_b if k not in figs_a]:
            fa, fb = figs_a.get(label), figs_b.get(label)
            f = fa or fb
            add(key, label, (fa or {}).get("value"), (fb or {}).get("value"), f["unit"], f["better"])
    return {"a": ra, "b": rb, "rows": rows}
