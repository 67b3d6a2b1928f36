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
        raise LabError(f"could not build the model at {path}",
                       evidence=tail_text(proc.stderr or proc.stdout, 20))
    return {"model_built": True, "model_build_s": round(time.monotonic() - started, 2)}
