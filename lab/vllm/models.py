"""The models the lab serves: the tiny cpu model and the rehearsal models, built offline in
the vLLM env (`scripts/build_tiny_model.py`), and the check that a local model exists.

Command line equivalent: `python lab/vllm/scripts/build_tiny_model.py --out .lab/models/tiny-qwen2`
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.core.config import PROJECT_ROOT
from lab.core.errors import LabError, ModelMissing
from lab.core.text import tail_text
from lab.vllm.env import VllmEnv
from lab.vllm.launch import Profile

#: Models shipped as configs for the rehearsal profile (real architecture, dummy weights).
REHEARSAL_CONFIGS = {
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "Qwen/Qwen2.5-14B-Instruct": "qwen2.5-14b",
}
#: The folder name of the cpu profile's model under the data dir's models/.
TINY_MODEL = "tiny-qwen2"
#: The shipped architecture configs (models/<name>/config.json).
SHIPPED_CONFIGS = PROJECT_ROOT / "models"


def check_model(prof: Profile) -> None:
    """A local model path must exist with a config.json (HF ids are left to vLLM)."""
    p = Path(prof.model)
    looks_local = prof.model.startswith(("/", ".", "~")) or p.exists() or prof.name != "gpu"
    if looks_local and not (p / "config.json").exists():
        raise ModelMissing(f"model not found: {prof.model} has no config.json")


def ensure_model(env: VllmEnv, prof: Profile) -> dict:
    """Build the tiny cpu model or the rehearsal tokenizer if missing (offline, in the vLLM
    env). Returns what was done, for the step record."""
    path = Path(prof.model)
    if (path / "config.json").exists():
        return {"model_built": False}
    built = (prof.name == "cpu" and path.name == TINY_MODEL) or prof.name == "rehearsal"
    if not built:
        raise ModelMissing(f"model not found: {prof.model} has no config.json")
    args = ["--out", str(path)]
    if prof.name == "rehearsal":
        shipped = REHEARSAL_CONFIGS[prof.served_model_name or ""]
        args += ["--config", str(SHIPPED_CONFIGS / shipped / "config.json")]
    started = time.monotonic()
    proc = env.run_script("build_tiny_model.py", args, timeout_s=900)
    if proc.returncode != 0:
        raise LabError(
            f"could not build the model at {path}",
            evidence=tail_text(proc.stderr or proc.stdout, 20),
        )
    return {"model_built": True, "model_build_s": round(time.monotonic() - started, 2)}


# --------------------------------------------------------------------------------------------
# Artefacts of the experiments: LoRA adapters and draft models, built offline
# --------------------------------------------------------------------------------------------
#: The draft model each rehearsal target gets for speculative decoding: seed 001's latency
#: preset pairs Qwen2.5-7B with Qwen2.5-0.5B (shipped config; built with the target's
#: vocab_size and tokenizer, which vLLM requires; models/README.md).
DRAFT_CONFIGS = {
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-0.5b",
    "Qwen/Qwen2.5-14B-Instruct": "qwen2.5-0.5b",
}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_dir(models_dir: Path, model: str, rank: int, seed: int, std: float = 0.02) -> Path:
    """Where the adapter of rank `rank` (random weights from `seed`, of std `std`) for
    `model` lives."""
    return models_dir / "lora" / f"{Path(model).name}-r{rank}-s{seed}-std{std:g}"


def ensure_adapter(
    env: VllmEnv,
    model: str,
    out: Path,
    *,
    rank: int,
    seed: int,
    std: float = 0.02,
    targets: str = "q_proj,v_proj",
    timeout_s: float = 600,
) -> dict:
    """Build a LoRA adapter (peft, random weights) for the model folder `model` at `out`,
    unless one is there. Returns what was done (built, seconds, the script's answer).

    Command line equivalent: `python lab/vllm/scripts/build_lora_adapter.py --model M
    --out DIR --rank 8 --targets q_proj,v_proj`
    """
    if all((out / name).exists() for name in ADAPTER_FILES):
        return {"built": False, "path": str(out)}
    started = time.monotonic()
    data, _ = env.run_json_script(
        "build_lora_adapter.py",
        [
            "--model",
            model,
            "--out",
            str(out),
            "--rank",
            str(rank),
            "--seed",
            str(seed),
            "--std",
            str(std),
            "--targets",
            targets,
        ],
        what=f"building the rank-{rank} LoRA adapter",
        timeout_s=timeout_s,
    )
    return {
        **data,
        "built": True,
        "path": str(out),
        "build_s": round(time.monotonic() - started, 2),
    }


def draft_dir(models_dir: Path, served_model_name: str) -> Path:
    """Where the draft model of a rehearsal target lives."""
    return models_dir / f"draft-{DRAFT_CONFIGS[served_model_name]}"


def ensure_draft(env: VllmEnv, target: str, served_model_name: str, out: Path) -> dict:
    """Build the draft model of a rehearsal target at `out` unless it is there: the shipped
    draft config with the target's vocabulary and tokenizer, served with the target's
    `--load-format dummy`. Raises LabError when the target has no draft config.

    Command line equivalent: `python lab/vllm/scripts/build_tiny_model.py --out DIR
    --config models/qwen2.5-0.5b/config.json --tokenizer-from TARGET`
    """
    if served_model_name not in DRAFT_CONFIGS:
        raise LabError(
            f"no shipped draft config for {served_model_name}; "
            f"drafts exist for {', '.join(DRAFT_CONFIGS)}"
        )
    if (out / "config.json").exists():
        return {"built": False, "path": str(out)}
    shipped = SHIPPED_CONFIGS / DRAFT_CONFIGS[served_model_name] / "config.json"
    started = time.monotonic()
    proc = env.run_script(
        "build_tiny_model.py",
        ["--out", str(out), "--config", str(shipped), "--tokenizer-from", target],
        timeout_s=300,
    )
    if proc.returncode != 0:
        raise LabError(
            f"could not build the draft model at {out}",
            evidence=tail_text(proc.stderr or proc.stdout, 20),
        )
    return {"built": True, "path": str(out), "build_s": round(time.monotonic() - started, 2)}
