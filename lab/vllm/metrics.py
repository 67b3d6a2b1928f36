"""Prometheus `/metrics` of a vLLM server: scrape, parse, explain, diff, and sample under load.

The text is parsed only with `prometheus_client.parser.text_string_to_metric_families`.
Metric names, types and labels follow vLLM 0.32's `vllm/v1/metrics/loggers.py`
(PrometheusStatLogger); the seeds' older names are mapped in `OLD_NAMES`.

Command line equivalent: `curl -s 127.0.0.1:8000/metrics | grep '^vllm:'`
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lab.core.errors import ApiError
from lab.core.lang import check_lang
from lab.core.net import api_root

# The meanings of the key series and the seeds' old names are explanations (lab.explain).
from lab.explain.metrics import KEY_SERIES, OLD_NAMES, OldName, SeriesInfo
from lab.vllm.api import request

__all__ = ["KEY_SERIES", "OLD_NAMES", "OldName", "SeriesInfo"]


# --------------------------------------------------------------------------- scrape / parse


def metrics_url(base_url: str) -> str:
    """`http://host:port/metrics`. An OpenAI-style base ending in /v1 is accepted too."""
    return api_root(base_url) + "/metrics"


def scrape(base_url: str, timeout_s: float = 5.0, api_key: str | None = None) -> str:
    """The exposition text of `<base_url>/metrics`. Raises ApiError (one line) on failure.

    The API key, when given, is sent as a bearer token and never appears in a message.

    Command line equivalent: `curl -s 127.0.0.1:8000/metrics`
    """
    return request("GET", metrics_url(base_url), api_key, timeout_s).text


@dataclass
class Snapshot:
    """One parsed scrape.

    families: family name -> Prometheus type ("gauge", "counter", "histogram", …). For counters
    the parser strips `_total`: family "vllm:prompt_tokens" has samples "vllm:prompt_tokens_total".
    samples: sample name -> [(labels, value), …] over every label set.
    """

    families: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    taken_at_s: float | None = None

    def has(self, name: str) -> bool:
        """True if `name` is a family (e.g. a histogram) or a sample name (e.g. `…_total`)."""
        return name in self.families or name in self.samples

    def names(self, prefix: str = "vllm:") -> list[str]:
        """Family names starting with `prefix`, sorted (the `_created` companions left out)."""
        return sorted(
            n for n in self.families if n.startswith(prefix) and not n.endswith("_created")
        )

    def _rows(self, name: str) -> list[tuple[dict[str, str], float]]:
        kind = self.families.get(name)
        if kind == "counter":
            return self.samples.get(name + "_total", [])
        if kind in ("histogram", "gaugehistogram", "summary"):
            return []  # a distribution has no single value: use histogram()
        return self.samples.get(name, [])

    def value(self, name: str, how: str = "sum") -> float | None:
        """A gauge or counter, aggregated over its label sets; None when absent.

        Counters answer to both names: "vllm:prompt_tokens" and "vllm:prompt_tokens_total".
        `how`: "sum" (counters, request counts), "max" or "mean" (fractions such as
        vllm:kv_cache_usage_perc, where a sum over data-parallel engines would exceed 1).
        """
        rows = self._rows(name)
        if not rows:
            return None
        values = [v for _, v in rows]
        if how == "sum":
            return float(sum(values))
        if how == "max":
            return float(max(values))
        if how == "mean":
            return float(sum(values) / len(values))
        raise ValueError(f"how must be sum, max or mean, not {how!r}")

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """A gauge or counter summed per value of one label, e.g. finished_reason -> count."""
        out: dict[str, float] = {}
        for labels, v in self._rows(name):
            key = labels.get(label, "")
            out[key] = out.get(key, 0.0) + v
        return out

    def histogram(self, name: str) -> tuple[float, float] | None:
        """(count, sum) of a histogram (or summary) over its label sets; None when absent."""
        counts = self.samples.get(name + "_count")
        sums = self.samples.get(name + "_sum")
        if not counts or not sums:
            return None
        return float(sum(v for _, v in counts)), float(sum(v for _, v in sums))

    def histogram_mean(self, name: str) -> float | None:
        """sum / count of a histogram; None when absent or with no observation yet."""
        hist = self.histogram(name)
        if hist is None or hist[0] <= 0:
            return None
        return hist[1] / hist[0]

    def cache_config(self) -> dict:
        """The labels of `vllm:cache_config_info` (engine 0 when several), typed.

        Integers and floats become numbers, "True"/"False" booleans, "None" None; other
        values stay strings. Empty when the series is absent.
        """
        rows = self.samples.get("vllm:cache_config_info", [])
        if not rows:
            return {}
        labels = next((lab for lab, _ in rows if lab.get("engine") == "0"), rows[0][0])
        return {key: _typed(val) for key, val in labels.items()}


def _typed(text: str):
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def parse(text: str) -> Snapshot:
    """Parse Prometheus exposition text into a Snapshot. Raises ApiError if it is not one."""
    snap = Snapshot()
    try:
        for family in text_string_to_metric_families(text):
            snap.families[family.name] = family.type
            for sample in family.samples:
                snap.samples.setdefault(sample.name, []).append(
                    (dict(sample.labels), float(sample.value))
                )
    except (ValueError, TypeError, IndexError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ApiError(f"/metrics is not Prometheus text: {first_line[:200]}") from None
    return snap


def fetch(base_url: str, timeout_s: float = 5.0, api_key: str | None = None) -> Snapshot:
    """scrape() then parse(), stamped with the time of the scrape."""
    snap = parse(scrape(base_url, timeout_s=timeout_s, api_key=api_key))
    snap.taken_at_s = time.time()
    return snap


# --------------------------------------------------------------------------- meanings

# Names vLLM itself used before the current ones: read them when a server is old enough to
# export only those, and say so in the row ("found_as").
_FORMER_NAMES: dict[str, tuple[str, ...]] = {
    "vllm:kv_cache_usage_perc": ("vllm:gpu_cache_usage_perc",),
    "vllm:inter_token_latency_seconds": ("vllm:time_per_output_token_seconds",),
}


def _read(
    snapshot: Snapshot, info: SeriesInfo, name: str
) -> tuple[bool, float | None, float | None]:
    """(present, value, observation count) of one series under `name`."""
    if info.kind == "histogram":
        hist = snapshot.histogram(name)
        if hist is None:
            return False, None, None
        return True, snapshot.histogram_mean(name), hist[0]
    value = snapshot.value(name, how=info.how)
    return value is not None, value, None


def key_series_rows(snapshot: Snapshot, lang: str = "zh") -> list[dict]:
    """One row per KEY_SERIES entry: what the server reports and what it means.

    Row keys: name, present, value (a gauge/counter, or a histogram's mean = sum/count; None
    when absent or not yet observed), count (histogram observations), unit, meaning, kind,
    old_name and old_note (when a seed cites an older name), found_as (set when only a former
    vLLM name was exported). A missing series is reported as missing, never filled in.
    """
    check_lang(lang)
    rows = []
    for info in KEY_SERIES:
        found_as = None
        present, value, count = _read(snapshot, info, info.name)
        if not present:
            for former in _FORMER_NAMES.get(info.name, ()):
                present, value, count = _read(snapshot, info, former)
                if present:
                    found_as = former
                    break
        old = OLD_NAMES.get(info.old_name) if info.old_name else None
        rows.append(
            {
                "name": info.name,
                "present": present,
                "value": value,
                "count": count,
                "unit": info.unit,
                "kind": info.kind,
                "meaning": info.meaning(lang),
                "old_name": info.old_name,
                "old_note": old.note(lang) if old else None,
                "found_as": found_as,
            }
        )
    return rows


def old_name_rows(snapshot: Snapshot | None = None, lang: str = "zh") -> list[dict]:
    """The seeds' old names -> today's, with the note the report prints.

    With a snapshot, also says whether each name is exported by that server (old_present,
    current_present), so the report shows what was checked rather than assumed.
    """
    check_lang(lang)
    rows = []
    for old, info in OLD_NAMES.items():
        row: dict[str, Any] = {
            "old_name": old,
            "current": list(info.current),
            "note": info.note(lang),
        }
        if snapshot is not None:
            row["old_present"] = snapshot.has(old)
            row["current_present"] = [snapshot.has(name) for name in info.current]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- deltas


def _counter_delta(before: Snapshot, after: Snapshot, name: str) -> tuple[float | None, bool]:
    """(after - before, reset?) of a counter; None if absent on either side or reset."""
    b, a = before.value(name), after.value(name)
    if a is None or b is None:
        return None, False
    if a < b:
        return None, True  # the counter went down: the server restarted in between
    return a - b, False


def _hist_mean_delta(before: Snapshot, after: Snapshot, name: str) -> tuple[float | None, bool]:
    """Mean of the observations made between two scrapes: Δsum / Δcount."""
    hb, ha = before.histogram(name), after.histogram(name)
    if hb is None or ha is None:
        return None, False
    d_count, d_sum = ha[0] - hb[0], ha[1] - hb[1]
    if d_count < 0:
        return None, True
    if d_count == 0:
        return None, False
    return d_sum / d_count, False


def delta(before: Snapshot, after: Snapshot) -> dict:
    """What the server did between two scrapes (e.g. around one benchmark level).

    Keys: requests_finished (Δ of the e2e histogram count, i.e. every finished request),
    requests_by_reason ({finished_reason: Δ}), prompt_tokens, generation_tokens, preemptions,
    mean_queue_time_s, mean_ttft_s, mean_e2e_s, mean_tpot_s, mean_itl_s, interval_s (when both
    snapshots carry a time) and server_restarted (a counter went down; deltas are then None).
    A value is None when its series is missing or nothing was observed in the interval.
    """
    restarted = False
    out: dict = {}

    e2e = "vllm:e2e_request_latency_seconds"
    hb, ha = before.histogram(e2e), after.histogram(e2e)
    if hb is not None and ha is not None and ha[0] >= hb[0]:
        out["requests_finished"] = ha[0] - hb[0]
    else:
        out["requests_finished"] = None
        restarted |= hb is not None and ha is not None

    reasons_before = before.by_label("vllm:request_success", "finished_reason")
    reasons_after = after.by_label("vllm:request_success", "finished_reason")
    by_reason: dict[str, float] = {}
    for reason, count in reasons_after.items():
        diff = count - reasons_before.get(reason, 0.0)
        if diff < 0:
            restarted = True
            by_reason = {}
            break
        by_reason[reason] = diff
    out["requests_by_reason"] = by_reason if reasons_before and reasons_after else {}

    for key, name in (
        ("prompt_tokens", "vllm:prompt_tokens"),
        ("generation_tokens", "vllm:generation_tokens"),
        ("preemptions", "vllm:num_preemptions"),
    ):
        out[key], reset = _counter_delta(before, after, name)
        restarted |= reset

    for key, name in (
        ("mean_queue_time_s", "vllm:request_queue_time_seconds"),
        ("mean_ttft_s", "vllm:time_to_first_token_seconds"),
        ("mean_e2e_s", "vllm:e2e_request_latency_seconds"),
        ("mean_tpot_s", "vllm:request_time_per_output_token_seconds"),
        ("mean_itl_s", "vllm:inter_token_latency_seconds"),
    ):
        out[key], reset = _hist_mean_delta(before, after, name)
        restarted |= reset

    if restarted:
        # Counters restart from zero with the server: no difference between the two is valid.
        out = {key: ({} if key == "requests_by_reason" else None) for key in out}
    if before.taken_at_s is not None and after.taken_at_s is not None:
        out["interval_s"] = after.taken_at_s - before.taken_at_s
    out["server_restarted"] = restarted
    return out


# --------------------------------------------------------------------------- sampling


#: The gauges sampled while a load runs (`sample_usage`), with how label sets combine.
USAGE_GAUGES = (
    ("kv_cache_usage_perc", "vllm:kv_cache_usage_perc", "max"),  # a fraction: max over engines
    ("num_requests_running", "vllm:num_requests_running", "sum"),
    ("num_requests_waiting", "vllm:num_requests_waiting", "sum"),
)


def usage_row(snap: Snapshot) -> dict:
    """One timeline row for `lab.measure.sampler.Sampler`: t, source "metrics", device
    "server", and the USAGE_GAUGES (None when the server does not export one)."""
    row: dict = {
        "t": snap.taken_at_s if snap.taken_at_s is not None else time.time(),
        "source": "metrics",
        "device": "server",
    }
    for key, name, how in USAGE_GAUGES:
        row[key] = snap.value(name, how=how)
    return row


def sample_usage(base_url: str, *, api_key: str | None = None, timeout_s: float = 2.0) -> dict:
    """Scrape /metrics once and return its `usage_row`: the Sampler's sample function for
    the KV-cache usage and queue lengths under load. Raises ApiError (the Sampler counts it).

    Command line equivalent:
        watch -n 0.5 "curl -s 127.0.0.1:8000/metrics | grep -E '^vllm:(kv_cache_usage_perc|num_requests_)'"
    """
    return usage_row(fetch(base_url, timeout_s=timeout_s, api_key=api_key))


# --------------------------------------------------------------------------- speculative decoding

#: The counters of speculative decoding (vllm/v1/spec_decode/metrics.py, 0.32), per engine;
#: `…_per_pos` carries a `position` label (0 … num_speculative_tokens − 1).
SPEC_DECODE = (
    "vllm:spec_decode_num_drafts",
    "vllm:spec_decode_num_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens",
)
SPEC_DECODE_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"


@dataclass
class SpecDecodeCounts:
    """The speculative-decoding counters (or their change between two scrapes)."""

    drafts: float
    draft_tokens: float
    accepted_tokens: float
    accepted_per_pos: list[float] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted ÷ proposed draft tokens (vLLM's own dashboard formula)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens > 0 else None

    @property
    def mean_acceptance_length(self) -> float | None:
        """Tokens emitted per verification step: 1 (the target's own) + accepted per draft."""
        return 1 + self.accepted_tokens / self.drafts if self.drafts > 0 else None

    def minus(self, before: SpecDecodeCounts) -> SpecDecodeCounts | None:
        """The change since `before`; None when a counter went down (the server restarted)."""
        diffs = [
            self.drafts - before.drafts,
            self.draft_tokens - before.draft_tokens,
            self.accepted_tokens - before.accepted_tokens,
        ]
        if min(diffs) < 0:
            return None
        pos = [
            a - (before.accepted_per_pos[i] if i < len(before.accepted_per_pos) else 0.0)
            for i, a in enumerate(self.accepted_per_pos)
        ]
        return SpecDecodeCounts(diffs[0], diffs[1], diffs[2], accepted_per_pos=pos)


def spec_decode(snap: Snapshot) -> SpecDecodeCounts | None:
    """The `vllm:spec_decode_*` counters summed over engines; None when the server does not
    speculate (they are only exported with `--speculative-config`).

    Command line equivalent: `curl -s 127.0.0.1:8000/metrics | grep '^vllm:spec_decode'`
    """
    values = [snap.value(name) for name in SPEC_DECODE]
    if any(v is None for v in values):
        return None
    drafts, draft_tokens, accepted = (float(v or 0.0) for v in values)
    per_pos = snap.by_label(SPEC_DECODE_PER_POS, "position")
    positions = sorted(per_pos, key=lambda p: int(p) if p.isdigit() else 0)
    return SpecDecodeCounts(drafts, draft_tokens, accepted, [per_pos[p] for p in positions])


# --------------------------------------------------------------------------- LoRA


@dataclass
class LoraInfo:
    """`vllm:lora_requests_info`: a gauge vLLM sets to the current time under labels that
    name the adapters running and waiting (comma-separated) and `max_lora`; the label set
    with the latest time is the present state."""

    max_lora: int | None
    running: list[str]
    waiting: list[str]
    at_s: float


def lora_info(snap: Snapshot) -> LoraInfo | None:
    """The latest state of `vllm:lora_requests_info`; None when the server has no LoRA
    (the series exists only with `--enable-lora`) or has not set it yet.

    Command line equivalent: `curl -s 127.0.0.1:8000/metrics | grep '^vllm:lora_requests_info'`
    """
    rows = snap.samples.get("vllm:lora_requests_info", [])
    if not rows:
        return None
    labels, at = max(rows, key=lambda row: row[1])

    def names(key: str) -> list[str]:
        return [n for n in labels.get(key, "").split(",") if n]

    max_lora = labels.get("max_lora", "")
    return LoraInfo(
        int(max_lora) if max_lora.isdigit() else None,
        names("running_lora_adapters"),
        names("waiting_lora_adapters"),
        at,
    )
