"""Build a LoRA adapter with random weights for a model folder, offline, with peft; run by
the vLLM env's python (it imports torch, transformers and peft).

peft decides the adapter's layout: the LoRA layers are injected into the model built from its
config on the meta device (no base weights are allocated, so a 7B or 14B config costs
nothing), and `get_peft_model_state_dict` names and shapes the tensors. They are then filled
with seeded random values (B too, so the adapter changes the output, unlike peft's default
B = 0) and written in the standard adapter format: `adapter_config.json` (peft's
`LoraConfig.save_pretrained`) and `adapter_model.safetensors`. vLLM serves it with
`--enable-lora --max-lora-rank R --lora-modules NAME=DIR`.

    python build_lora_adapter.py --model DIR --out DIR [--rank 8] [--alpha 16]
        [--targets q_proj,v_proj] [--seed 0]

Prints one JSON line: {"ok": true, "out": …, "rank": …, "tensors": …, "params": …, "bytes": …}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from script_common import deadline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", required=True, type=Path, help="the base model's folder (config.json)"
    )
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="std of the random A and B values")
    ap.add_argument("--deadline-s", type=float, default=0)
    args = ap.parse_args(argv)
    deadline(args.deadline_s, "build_lora_adapter.py")
    try:
        import peft
    except ImportError:
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": "peft is not installed in the vLLM env: run "
                    "`invoke install --reinstall` (vllm_extras: peft)",
                }
            )
        )
        return 0
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(args.model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=args.targets.split(","),
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, lora)
    shapes = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    gen = torch.Generator().manual_seed(args.seed)
    tensors = {
        k: (torch.randn(shape, generator=gen) * args.std).to(torch.bfloat16).contiguous()
        for k, shape in sorted(shapes.items())
    }
    args.out.mkdir(parents=True, exist_ok=True)
    lora.base_model_name_or_path = str(args.model)
    lora.save_pretrained(str(args.out))
    save_file(tensors, str(args.out / "adapter_model.safetensors"), metadata={"format": "pt"})
    print(
        json.dumps(
            {
                "ok": True,
                "out": str(args.out),
                "rank": args.rank,
                "alpha": args.alpha,
                "targets": args.targets.split(","),
                "tensors": len(tensors),
                "params": sum(t.numel() for t in tensors.values()),
                "bytes": (args.out / "adapter_model.safetensors").stat().st_size,
                "peft": peft.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
