"""The HuggingFace transformers baseline of `invoke compare`, run by the vLLM env's python.

It generates for the same chat prompts as the vLLM side, greedily, a fixed number of new
tokens each, `--batch-size` prompts per `model.generate` call (left-padded), and prints ONE
JSON line on stdout with what it measured:

- `output_tokens`: generated token ids, counted per sample (up to and including the first
  EOS; with `--ignore-eos`, EOS is masked until `--max-new-tokens`, so every sample has
  exactly that many);
- `total_s`: the sum of the timed `generate` calls (tokenizing and model load excluded);
  `output_tok_s` = output_tokens / total_s, `samples_per_min` = samples / total_s × 60;
- `latency_s`: mean end-to-end latency per sample; a sample's latency is the wall time of
  its batch's `generate` call (a batch returns all its samples together);
- memory: on GPU `torch.cuda.max_memory_allocated` (weights + activations + KV cache, this
  process); on CPU the process's peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`).

The prompt token ids it used (the model's chat template, `add_generation_prompt=True`) are
written to `--ids-out`, so the vLLM side gets exactly the same inputs.

`--dummy` (the rehearsal profile, where no weights exist): random init from config.json with
`AutoModelForCausalLM.from_config(config, dtype=bfloat16)` directly on the device.

    python hf_baseline.py --model DIR --prompts-file prompts.json --ids-out ids.json \
        --max-new-tokens 64 --batch-size 8 [--ignore-eos] [--dummy] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from script_common import MIB, deadline


def chat_ids(tok, messages: list[dict]) -> list[int]:
    """Token ids of one chat through the model's chat template (generation prompt added)."""
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return [int(i) for i in out]


def load_model(path: str, dummy: bool, device: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = torch.bfloat16
    if dummy:
        config = AutoConfig.from_pretrained(path)
        with torch.device(device):
            try:
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
            except TypeError:  # transformers 4.x spells it torch_dtype
                model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except TypeError:
            model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
        model = model.to(device)
    return model.eval()


def eos_ids(model, tok) -> set[int]:
    raw = getattr(model.generation_config, "eos_token_id", None)
    if raw is None:
        raw = tok.eos_token_id
    ids = raw if isinstance(raw, (list, tuple)) else [raw]
    return {int(i) for i in ids if i is not None}


def count_new(row: list[int], eos: set[int]) -> int:
    """Generated tokens of one sample: up to and including the first EOS (the rest is padding)."""
    for i, token in enumerate(row):
        if token in eos:
            return i + 1
    return len(row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--prompts-file",
        required=True,
        type=Path,
        help="JSON list of chats, each a list of {role, content}",
    )
    ap.add_argument("--ids-out", type=Path, help="write the prompt token ids here (JSON)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--ignore-eos",
        action="store_true",
        help="generate exactly --max-new-tokens per sample (EOS masked)",
    )
    ap.add_argument("--dummy", action="store_true", help="random init from config.json")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--deadline-s", type=float, default=0)
    args = ap.parse_args(argv)
    deadline(args.deadline_s, "hf_baseline.py")

    import torch
    from transformers import AutoTokenizer

    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    chats = json.loads(args.prompts_file.read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"  # decoder-only batches pad on the left
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    ids = [chat_ids(tok, chat) for chat in chats]
    if args.ids_out:
        args.ids_out.write_text(json.dumps(ids))

    started = time.perf_counter()
    model = load_model(args.model, args.dummy, device)
    load_s = time.perf_counter() - started
    eos = eos_ids(model, tok)
    gen = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }
    if args.ignore_eos:
        gen["min_new_tokens"] = args.max_new_tokens

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def batch_inputs(rows: list[list[int]]):
        enc = tok.pad({"input_ids": rows}, padding=True, return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    with torch.inference_mode():
        # Warm-up, not timed: the first batch once, at full length, so lazy CUDA init and
        # kernel selection for these shapes are not charged to the first timed batch
        # (seen on an H100: 9.2 s for the first batch of 8, 3.3 s for the second).
        warm_ids, warm_mask = batch_inputs(ids[: args.batch_size])
        model.generate(input_ids=warm_ids, attention_mask=warm_mask, **gen)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        batches, latencies, samples = [], [], []
        for first in range(0, len(ids), args.batch_size):
            rows = ids[first : first + args.batch_size]
            input_ids, mask = batch_inputs(rows)
            sync()
            t0 = time.perf_counter()
            out = model.generate(input_ids=input_ids, attention_mask=mask, **gen)
            sync()
            elapsed = time.perf_counter() - t0
            new = out[:, input_ids.shape[1] :].tolist()
            counts = [count_new(row, eos) for row in new]
            batches.append(
                {
                    "batch": len(batches),
                    "size": len(rows),
                    "elapsed_s": elapsed,
                    "output_tokens": sum(counts),
                    "padded_input_len": int(input_ids.shape[1]),
                }
            )
            for row, n in zip(rows, counts, strict=True):
                latencies.append(elapsed)
                samples.append({"prompt_tokens": len(row), "output_tokens": n, "e2el_s": elapsed})

    total_s = sum(b["elapsed_s"] for b in batches)
    output_tokens = sum(s["output_tokens"] for s in samples)
    result = {
        "ok": True,
        "side": "hf",
        "device": device,
        "dummy": args.dummy,
        "load_s": load_s,
        "num_prompts": len(ids),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "ignore_eos": args.ignore_eos,
        "prompt_tokens": sum(len(r) for r in ids),
        "output_tokens": output_tokens,
        "total_s": total_s,
        "output_tok_s": output_tokens / total_s if total_s > 0 else None,
        "samples_per_min": len(samples) / total_s * 60 if total_s > 0 else None,
        "latency_s": sum(latencies) / len(latencies) if latencies else None,
        "batches": batches,
        "requests": samples,
        "sampling": {
            "greedy": True,
            "do_sample": False,
            "repetition_penalty": getattr(model.generation_config, "repetition_penalty", None),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        result.update(
            max_memory_allocated_mib=torch.cuda.max_memory_allocated() / MIB,
            max_memory_reserved_mib=torch.cuda.max_memory_reserved() / MIB,
            device_total_mib=props.total_memory / MIB,
            device_name=props.name,
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
