"""Step 7 (Day 3) and Day 4's metrics step: the key `vllm:` series with their meanings, and what the server counted during the recorded benchmark."""
from __future__ import annotations

from typing import Any

from lab.core.fmt import fixed, num
from lab.record.runner import Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.vllm import process as server


def metrics_step(lab: Lab, ctx: StepContext) -> Outcome:
    """Scrape /metrics and check the key `vllm:` series are present, with their values."""
    from lab.vllm import metrics
    server.require_running(lab.state_path)
    text = metrics.scrape(lab.url, api_key=lab.api_key)
    snap = metrics.parse(text)
    rows = metrics.key_series_rows(snap, "zh")
    for row, en in zip(rows, metrics.key_series_rows(snap, "en")):
        row["meaning_zh"], row["meaning_en"] = row.pop("meaning"), en["meaning"]
        row["old_note_zh"], row["old_note_en"] = row.pop("old_note"), en["old_note"]
    present = [r for r in rows if r["present"]]
    missing = [r["name"] for r in rows if not r["present"]]
    crit = check("key_series", "关键 vllm: 指标齐全", "key vllm: series present",
                 len(present), ">=", len(rows))
    if missing:
        crit.reason = "missing: " + ", ".join(missing)
    old = metrics.old_name_rows(snap, "zh")
    for row, en in zip(old, metrics.old_name_rows(snap, "en")):
        row["note_zh"], row["note_en"] = row.pop("note"), en["note"]
    values = {"series": rows, "old_names": old, "vllm_series": sum(
        1 for line in text.splitlines() if line.startswith("vllm:"))}
    actual = f"{len(present)}/{len(rows)} key series present; " + "; ".join(
        f"{r['name']} = {_fmt_value(r['value'])}" for r in present[:6])
    evidence = "\n".join(line for line in text.splitlines()
                         if line.startswith(tuple(r["name"] for r in present[:4])))[:1200]
    return Outcome([crit], actual, values, evidence=evidence,
                   command=f"curl {lab.url}/metrics")


def _fmt_value(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def metrics_after_bench(lab: Lab, ctx: StepContext) -> Outcome:
    """The key series now (as Day 3, with meanings and the seed's old names), plus what the
    server counted during the recorded benchmark: deltas, peak KV-cache usage, queue time."""
    out = metrics_step(lab, ctx)
    row = _bench_record(lab, ctx)
    if row is None:
        out.criteria.append(require("bench_deltas", "基准测试前后的 /metrics 增量",
                                    "/metrics deltas around the benchmark", False,
                                    reason="no benchmark recorded: run `invoke bench` first"))
        return out
    bv = row["values"]
    delta = (bv.get("metrics") or {}).get("delta") or {}
    client = bv.get("client") or {}
    finished = delta.get("requests_finished")
    out.criteria.append(check("bench_deltas", "基准测试期间服务端完成的请求数（/metrics 增量）",
                              "requests the server finished during the benchmark (/metrics delta)",
                              finished, ">", 0))
    label = ("服务端生成 token 数（Δ vllm:generation_tokens_total）= 客户端 usage 合计",
             "server-counted output tokens (Δ vllm:generation_tokens_total) = the client's usage total")
    gen = delta.get("generation_tokens")
    if client.get("failed"):
        out.criteria.append(skip("tokens_match", *label,
                                 f"{client['failed']} requests failed: the two counts may differ",
                                 measured=gen))
    else:
        out.criteria.append(require("tokens_match", *label,
                                    gen is not None and round(gen) == client.get("output_tokens"),
                                    f"{fmt_int(gen)} vs {fmt_int(client.get('output_tokens'))}",
                                    reason="the counts differ"))
    rows = interpret(bv)
    out.values.update(interpretation=rows, bench_step_id=row["id"], bench_run_id=row["run_id"],
                      delta=delta, kv=(bv.get("metrics") or {}).get("kv"), client=client)
    out.actual += "; benchmark: " + "; ".join(
        f"{r['label_en']} {num(r['value'])} {r['unit']}" for r in rows[:6])
    return out


def _bench_record(lab: Lab, ctx: StepContext) -> dict | None:
    """The bench step of this run, else the latest one recorded against the server that is
    running now: deltas of an older server must not be read as this one's."""
    mine = [s for s in lab.book.steps(ctx.run_id) if s["key"] == "bench" and s["values"].get("client")]
    if mine:
        return mine[-1]
    latest = lab.book.latest_steps("day4").get("bench")
    state = server.require_running(lab.state_path)
    if not latest or not latest["values"].get("client"):
        return None
    return latest if latest["started_at"] >= state.started_at else None


def interpret(bench_values: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's "关键指标解读" for one recorded bench: each figure the server counted
    during the benchmark, with a plain-language meaning (zh and en) drawn from its value."""
    m = bench_values.get("metrics") or {}
    d = m.get("delta") or {}
    kv = m.get("kv") or {}
    client = bench_values.get("client") or {}
    rows: list[dict[str, Any]] = []

    def add(key, series, value, unit, zh, en):
        label_zh, label_en = LABELS[key]
        rows.append({"key": key, "label_zh": label_zh, "label_en": label_en, "series": series,
                     "value": value, "unit": unit, "meaning_zh": zh, "meaning_en": en})

    n, sent = d.get("requests_finished"), client.get("requests")
    add("requests_finished", "Δ vllm:e2e_request_latency_seconds_count", n, "requests",
        f"基准测试期间服务端完成了 {fmt_int(n)} 个请求（客户端发出 {fmt_int(sent)} 个，含预热和延迟循环）",
        f"The server finished {fmt_int(n)} requests during the benchmark (the client sent {fmt_int(sent)}, "
        "warm-ups and the latency loop included)")
    p, cp = d.get("prompt_tokens"), client.get("prompt_tokens")
    add("prompt_tokens", "Δ vllm:prompt_tokens_total", p, "tokens",
        f"预填充（prefill）阶段处理了 {fmt_int(p)} 个输入 token（客户端按 usage 统计 {fmt_int(cp)}）",
        f"{fmt_int(p)} prompt tokens went through prefill (the client's usage total: {fmt_int(cp)})")
    g, cg = d.get("generation_tokens"), client.get("output_tokens")
    same = g is not None and cg is not None and round(g) == cg
    add("generation_tokens", "Δ vllm:generation_tokens_total", g, "tokens",
        f"解码阶段生成了 {fmt_int(g)} 个输出 token；客户端 usage 合计 {fmt_int(cg)}，"
        + ("两边一致：吞吐数字可信" if same else "两边不一致：有请求失败或别的客户端在用这台服务"),
        f"Decode generated {fmt_int(g)} output tokens; the client's usage total is {fmt_int(cg)}: "
        + ("they agree, so the throughput figures hold" if same else
           "they differ: requests failed or another client used this server"))
    pre = d.get("preemptions")
    add("preemptions", "Δ vllm:num_preemptions_total", pre, "preemptions",
        "没有请求被抢占：KV Cache 一直够用" if pre == 0 else
        f"{fmt_int(pre)} 次抢占：KV Cache 不够时请求被踢回队列、之后重算，延迟会变高；"
        "可降低并发或提高 --gpu-memory-utilization",
        "No request was preempted: the KV cache always had room" if pre == 0 else
        f"{fmt_int(pre)} preemptions: when the KV cache ran out, requests were evicted and recomputed "
        "later, which raises latency; lower the concurrency or raise --gpu-memory-utilization")
    peak = kv.get("peak_kv_cache_usage_perc")
    pct = None if peak is None else peak * 100
    add("peak_kv_cache_usage", "max vllm:kv_cache_usage_perc (polled)", pct, "%",
        _kv_zh(pct, kv), _kv_en(pct, kv))
    q, step = d.get("mean_queue_time_s"), d.get("mean_tpot_s")
    qms = None if q is None else q * 1000
    zh, en = _queue_meaning(q, step)
    add("mean_queue_time", "Δsum/Δcount vllm:request_queue_time_seconds", qms, "ms",
        f"请求平均在调度队列里等了 {fixed(qms, 2)} ms 才开始执行；{zh}",
        f"Requests waited {fixed(qms, 2)} ms on average in the scheduler's queue before running; {en}")
    for key, name, zh, en in (
            ("mean_ttft", "vllm:time_to_first_token_seconds",
             "服务端测的首 token 延迟（从请求到达算起，含排队和预填充）",
             "The server's time to first token (from arrival: queueing and prefill included)"),
            ("mean_tpot", "vllm:request_time_per_output_token_seconds",
             "服务端测的每个输出 token 的解码时间，即 TPOT",
             "The server's decode time per output token, i.e. TPOT")):
        v = d.get(key + "_s")
        ms = None if v is None else v * 1000
        add(key, f"Δsum/Δcount {name}", ms, "ms",
            f"{zh}，均值 {fixed(ms, 2)} ms；可与客户端表格里的同名数字对照（客户端还多了网络和流式传输）",
            f"{en}, mean {fixed(ms, 2)} ms; compare with the client's table above (the client adds "
            "the network and streaming)")
    return rows


def _queue_meaning(queue_s: float | None, step_s: float | None) -> tuple[str, str]:
    """Queue time against one decode step (the mean TPOT): shorter means a request simply
    joined the batch at the next step; several steps mean it waited for room."""
    if queue_s is None or not step_s:
        return "没有测到", "not measured"
    steps = queue_s / step_s
    if steps < 1:
        return (f"不到一个解码步（TPOT {step_s * 1000:.2f} ms）：下一步就进了批次，没有真正排队",
                f"less than one decode step (TPOT {step_s * 1000:.2f} ms): requests joined the "
                "batch at the next step, no real queue")
    return (f"约 {steps:.0f} 个解码步：请求在等空位，负载超过了引擎一次能跑的量",
            f"about {steps:.0f} decode steps: requests waited for room; the load exceeded what "
            "the engine runs at once")


LABELS = {
    "requests_finished": ("完成的请求数", "requests finished"),
    "prompt_tokens": ("输入（prompt）token 数", "prompt tokens"),
    "generation_tokens": ("生成的输出 token 数", "output tokens generated"),
    "preemptions": ("抢占次数", "preemptions"),
    "peak_kv_cache_usage": ("KV Cache 使用率峰值", "peak KV-cache usage"),
    "mean_queue_time": ("平均排队时间", "mean queue time"),
    "mean_ttft": ("TTFT 均值（服务端）", "mean TTFT (server)"),
    "mean_tpot": ("TPOT 均值（服务端）", "mean TPOT (server)"),
}


def _kv_zh(pct: float | None, kv: dict) -> str:
    if pct is None:
        return "没有采到 KV Cache 使用率（/metrics 读取失败）"
    level = ("远未用满，还能承受更高并发" if pct < 50 else
             "较满，再加并发就接近上限" if pct < 90 else "接近用满，继续加压会出现抢占")
    return f"压测中 KV Cache 最高用了 {pct:.2f}%（每 {kv.get('interval_s', 0):g} s 采样，共 {kv.get('samples')} 次）：{level}"


def _kv_en(pct: float | None, kv: dict) -> str:
    if pct is None:
        return "No KV-cache usage was sampled (/metrics could not be read)"
    level = ("far from full: room for more concurrency" if pct < 50 else
             "fairly full: more concurrency nears the limit" if pct < 90 else
             "nearly full: more load will cause preemptions")
    return (f"The KV cache peaked at {pct:.2f} % during the load (sampled every "
            f"{kv.get('interval_s', 0):g} s, {kv.get('samples')} samples): {level}")


def fmt_int(value: Any) -> str:
    """A count: 4,608 (rounded); None -> "n/a"."""
    return num(None if value is None else round(value))
