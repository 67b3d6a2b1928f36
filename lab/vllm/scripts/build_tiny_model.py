"""Build a model folder offline, run by the vLLM env's python (it imports torch/transformers).

Three uses:
- cpu profile: a tiny Qwen2-architecture model with random weights (head_dim 64, because
  vLLM's CPU attention rejects smaller heads) and a tokenizer trained here.
- rehearsal: a real architecture's config.json (shipped in models/) plus the same kind of
  tokenizer padded to the config's vocab_size, for `--load-format dummy` (no weights).
- a draft model for speculative decoding (`--tokenizer-from TARGET`): an architecture's
  config with the target's vocab_size and the target's tokenizer files copied, because vLLM
  requires the draft's vocabulary size to equal the target's.

The tokenizer is a ByteLevel BPE trained locally with `tokenizers`. With random weights a
model emits ids across the whole vocabulary, so when the vocab is larger than what was
trained, it is padded with decodable filler entries: every id must decode. It loads as
Qwen2Tokenizer beside a `model_type: qwen2` config, for both chat and completions.

    python build_tiny_model.py --out DIR [--config real/config.json] [--bpe-size 4096]
    python build_tiny_model.py --out DRAFT --config draft/config.json --tokenizer-from TARGET
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2.5's chat template, reduced to plain messages (no tools).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TINY_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,  # head_dim = 256 / 4 = 64
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "max_window_layers": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "sliding_window": None,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "use_cache": True,
}


def corpus() -> list[str]:
    """Training text available offline: the standard library's own docstrings, plus the
    checklist's Chinese so common CJK byte pairs merge."""
    import pydoc  # noqa: F401  (imports many stdlib modules with long docstrings)

    texts = ["你好，请介绍一下你自己。写一首关于春天的诗。解释一下什么是深度学习。" * 20]
    for _name, mod in sorted(sys.modules.items()):
        for obj in [mod] + [getattr(mod, a, None) for a in dir(mod)[:200]]:
            doc = inspect.getdoc(obj) if obj is not None else None
            if doc:
                texts.append(doc)
    return texts


def train_tokenizer(bpe_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def padded(tok, vocab_size: int):
    """Rebuild the BPE with filler entries so ids [0, vocab_size - specials) all exist.
    Fillers are strings over the byte-level alphabet, so they decode to (random) bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    target = vocab_size - len(SPECIALS)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    n = len(alphabet)
    i = 0
    while len(vocab) < target:
        a, b, c = alphabet[i % n], alphabet[(i // n) % n], alphabet[(i // n // n) % n]
        filler = a + b + c + "\u0100"  # 4 chars: cannot clash with trained 1-3 char pieces often
        if filler not in vocab:
            vocab[filler] = len(vocab)
        i += 1
    new = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    new.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    new.decoder = decoders.ByteLevel()
    return new


def save_tokenizer(tok, out: Path, model_max_length: int) -> int:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    # Beside a qwen2 config, transformers loads Qwen2Tokenizer: say so, and give it the
    # vocab.json/merges.txt it expects as well as tokenizer.json.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2))
    model = json.loads(tok.to_str())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tok.get_vocab_size(with_added_tokens=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument(
        "--config", type=Path, help="a real architecture's config.json (rehearsal: no weights)"
    )
    ap.add_argument("--bpe-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tokenizer-from",
        type=Path,
        help="a built model folder: copy its tokenizer and take its vocab_size (a draft model)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tokenizer_from:
        return build_draft(args)

    config = json.loads(args.config.read_text()) if args.config else dict(TINY_CONFIG)
    tok = train_tokenizer(args.bpe_size)
    if args.config:
        tok = padded(tok, config["vocab_size"])
    vocab = save_tokenizer(tok, args.out, config.get("max_position_embeddings", 4096))
    if not args.config:
        config["vocab_size"] = vocab
    config["bos_token_id"] = None
    config["eos_token_id"] = vocab - 1  # <|im_end|>, the last special
    (args.out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [vocab - 1, vocab - 3], "do_sample": False})
    )

    if args.config:
        (args.out / "config.json").write_text(json.dumps(config, indent=2))
    else:
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(args.seed)
        model = Qwen2ForCausalLM(Qwen2Config(**config)).to(torch.bfloat16)
        model.save_pretrained(args.out, safe_serialization=True)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "vocab_size": vocab,
                "hidden_size": config["hidden_size"],
                "head_dim": config["hidden_size"] // config["num_attention_heads"],
                "weights": not args.config,
            }
        )
    )
    return 0


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def build_draft(args) -> int:
    """A config-only draft model (served with the target's `--load-format dummy`): the draft
    architecture's config with the target's vocab_size and eos, and the target's tokenizer."""
    import shutil

    if not args.config:
        raise SystemExit("--tokenizer-from needs --config (the draft's architecture)")
    target = json.loads((args.tokenizer_from / "config.json").read_text())
    config = json.loads(args.config.read_text())
    config["vocab_size"] = target["vocab_size"]
    for key in ("bos_token_id", "eos_token_id"):
        config[key] = target.get(key)
    for name in TOKENIZER_FILES:
        if (args.tokenizer_from / name).exists():
            shutil.copy2(args.tokenizer_from / name, args.out / name)
    (args.out / "config.json").write_text(json.dumps(config, indent=2))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "vocab_size": config["vocab_size"],
                "hidden_size": config["hidden_size"],
                "num_hidden_layers": config["num_hidden_layers"],
                "tokenizer_from": str(args.tokenizer_from),
                "weights": False,
            }
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
