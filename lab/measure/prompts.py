"""Synthetic prompts of an exact token length, sent as token-id lists.

vLLM's /v1/completions accepts `prompt: [id, id, ...]` and uses the ids as they are, so the
server sees exactly `input_len` prompt tokens: no decode/re-encode drift (vLLM's own random
dataset decodes ids to text and re-tokenizes, which can shift the length by a token or two).

The ids come from the served model's own tokenizer, via vLLM's `/tokenize` endpoint
(`vllm/entrypoints/serve/tokenize/protocol.py`: request `{model, prompt, add_special_tokens}`,
response `{count, max_model_len, tokens, token_strs}`), so they are ordinary word pieces and
never special tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lab.core.errors import ApiError, ConfigError
from lab.core.net import api_root
from lab.vllm.api import request

#: Built-in text tokenized to get a pool of realistic token ids. Varied vocabulary on
#: purpose: more distinct words give a larger pool.
POOL_TEXT = (
    "The quick brown fox jumps over the lazy dog while a curious child watches from the "
    "window. Large language models generate text one token at a time, and each new token "
    "depends on every token before it. Serving systems batch many requests together so the "
    "accelerator stays busy; paged attention stores the key and value cache in fixed-size "
    "blocks, much like virtual memory in an operating system. Engineers measure the time to "
    "first token, the time per output token and the end-to-end latency, then compare "
    "throughput across concurrency levels. Mountains, rivers, forests and deserts cover the "
    "continents; oceans hold whales, dolphins, coral reefs and countless small fish. In the "
    "kitchen, bread rises slowly, soup simmers, and the smell of garlic, basil and roasted "
    "peppers fills the room. Mathematics offers primes, matrices, integrals, probability and "
    "geometry; physics adds momentum, energy, entropy and light. Yesterday the orchestra "
    "played a symphony by candlelight, and the audience applauded for seven minutes. "
    "Please summarise the following report about quarterly revenue, customer retention, "
    "supply chains, weather delays, and the new warehouse opening in the northern district."
)

#: Seconds to wait for /tokenize; it is a cheap call, so a long wait means trouble.
TOKENIZE_TIMEOUT_S = 30.0


def token_pool(base_url: str, model: str, api_key: str | None = None) -> list[int]:
    """Unique token ids of the built-in text, from the server's `/tokenize` endpoint.

    Special tokens are not requested (`add_special_tokens: false`). Raises ApiError when the
    server cannot be reached or answers something unusable.
    """
    url = api_root(base_url) + "/tokenize"
    body: dict[str, Any] = {"model": model, "prompt": POOL_TEXT, "add_special_tokens": False}
    resp = request("POST", url, api_key, TOKENIZE_TIMEOUT_S, json=body)
    try:
        tokens = resp.json()["tokens"]
    except (ValueError, KeyError, TypeError) as err:
        raise ApiError(
            f"POST {url} answered without a 'tokens' list", evidence=resp.text[:300]
        ) from err
    pool = sorted({int(t) for t in tokens})
    if not pool:
        raise ApiError(f"POST {url} returned no tokens")
    return pool


def synthetic_prompts(pool: list[int], n: int, input_len: int, seed: int) -> list[list[int]]:
    """`n` prompts of exactly `input_len` ids drawn at random from `pool`.

    Each prompt is drawn independently, so two prompts sharing a prefix-cache block is
    vanishingly unlikely for any realistic pool; the same seed gives the same prompts.
    """
    if not pool:
        raise ConfigError("token pool is empty: cannot build prompts")
    if input_len < 1:
        raise ConfigError(f"input_len must be >= 1, got {input_len}")
    if n < 0:
        raise ConfigError(f"number of prompts must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    ids = np.asarray(pool, dtype=np.int64)
    draws = rng.integers(0, len(ids), size=(n, input_len))
    return [[int(x) for x in ids[row]] for row in draws]
