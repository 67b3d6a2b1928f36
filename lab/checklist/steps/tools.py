"""Step 3: the monitoring tools (nvitop, gpustat) installed or found."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from lab.core.errors import VllmEnvMissing
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import ToolsValues


def tools(lab: Lab, ctx: StepContext) -> Outcome:
    """Install nvitop and gpustat into the vLLM env (or find them on PATH); nvitop answers."""
    bindir = lab.env.python.parent
    found = {name: _which(name, bindir) for name in ("nvitop", "gpustat")}
    command = []
    if not all(found.values()):
        argv = [str(lab.env.python), "-m", "pip", "install", "-q", "nvitop", "gpustat"]
        command.append(shlex.join(argv))
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
        )
        found = {name: _which(name, bindir) for name in found}
        if not found["nvitop"]:  # gpustat is optional in the seed; nvitop is the criterion
            raise VllmEnvMissing(
                "pip install nvitop gpustat failed and nvitop is not on PATH",
                evidence="\n".join(proc.stderr.splitlines()[-10:]),
            )
    versions = {name: _version(path) for name, path in found.items()}
    command += [f"{found['nvitop'] or 'nvitop'} --version"]
    crit = require(
        "nvitop",
        "nvitop --version 有输出",
        "nvitop --version answers",
        bool(versions["nvitop"]),
        versions["nvitop"],
        reason="nvitop did not answer",
    )
    actual = ", ".join(v or f"{k} missing" for k, v in versions.items())
    return Outcome(
        [crit], actual, ToolsValues(versions=versions, paths=found), command="\n".join(command)
    )


def _which(name: str, bindir: Path) -> str | None:
    local = bindir / name
    return str(local) if local.exists() else shutil.which(name)


def _version(path: str | None) -> str | None:
    if not path:
        return None
    try:
        out = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if out.returncode == 0 and text else None
