"""The prompt sets of the experiments' loads, built from a pool of the served model's token
ids (lab.measure.prompts.token_pool), each request with its own output length and a label
that the records keep (so a mixed load can be summarised per class).

- `random_set`: independent prompts of one length (the benchmark's usual load);
- `shared_prefix_set`: every prompt starts with the same prefix (a long system prompt), then
  its own suffix: what prefix caching saves;
- `mixed_set`: a decode-heavy load of short prompts with long outputs, with a few long
  prompts (short outputs) spread among them: what chunked prefill is about.

Command line equivalent (roughly): `vllm bench serve --dataset-name prefix_repetition` for
the shared prefix, `--dataset-name random` for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.errors import ConfigError
from lab.measure.prompts import synthetic_prompts


@dataclass
class PromptSet:
    """Prompts (token ids) with, per prompt, its output length and label."""

    prompts: list[list[int]] = field(default_factory=list)
    output_lens: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)


def random_set(
    pool: list[int], n: int, input_len: int, output_len: int, seed: int, label: str = "random"
) -> PromptSet:
    """`n` independent prompts of `input_len` tokens."""
    prompts = synthetic_prompts(pool, n, input_len, seed)
    return PromptSet(prompts, [output_len] * n, [label] * n)


def shared_prefix_set(
    pool: list[int], n: int, prefix_len: int, input_len: int, output_len: int, seed: int
) -> PromptSet:
    """`n` prompts of `input_len` tokens whose first `prefix_len` are the same for all."""
    if not 0 < prefix_len < input_len:
        raise ConfigError(
            f"the shared prefix ({prefix_len} tokens) must be shorter than the "
            f"prompt ({input_len} tokens) and longer than 0"
        )
    prefix = synthetic_prompts(pool, 1, prefix_len, seed + 7919)[0]
    suffixes = synthetic_prompts(pool, n, input_len - prefix_len, seed)
    return PromptSet([prefix + s for s in suffixes], [output_len] * n, ["shared"] * n)


def mixed_set(
    pool: list[int],
    n: int,
    short_len: int,
    short_output_len: int,
    long_len: int,
    long_output_len: int,
    long_count: int,
    seed: int,
) -> PromptSet:
    """`n` prompts: `long_count` long ones (label "long") spread evenly among short ones
    (label "short"); the first request is always short so the decodes are running when
    the first long prompt arrives."""
    if not 0 <= long_count < n:
        raise ConfigError(f"long_count must be between 0 and n - 1 ({n - 1}), got {long_count}")
    if long_count and long_len <= short_len:
        raise ConfigError(f"long prompts ({long_len}) must be longer than short ones ({short_len})")
    shorts = synthetic_prompts(pool, n - long_count, short_len, seed)
    longs = synthetic_prompts(pool, long_count, long_len, seed + 104729) if long_count else []
    step = n / (long_count + 1) if long_count else 0
    long_at = {int(step * (i + 1)) for i in range(long_count)}
    out = PromptSet()
    for idx in range(n):
        if idx in long_at and longs:
            out.prompts.append(longs.pop())
            out.output_lens.append(long_output_len)
            out.labels.append("long")
        else:
            out.prompts.append(shorts.pop())
            out.output_lens.append(short_output_len)
            out.labels.append("short")
    return out


def concat(*sets: PromptSet) -> PromptSet:
    """One set after another (e.g. the warm-up's prompts, then the measured ones)."""
    out = PromptSet()
    for s in sets:
        out.prompts += s.prompts
        out.output_lens += s.output_lens
        out.labels += s.labels
    return out
