"""Step 2: the vLLM env, and `import vllm; print(vllm.__version__)` in it."""

from __future__ import annotations

from lab.core.errors import VllmEnvMissing
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import InstallValues, VllmVersions
from lab.ui.console import say, warn
from lab.ui.progress import status
from lab.vllm import env as vllm_env


def install(lab: Lab, ctx: StepContext, reinstall: bool = False) -> Outcome:
    """Make the vLLM env (unless it exists) and check `import vllm` prints a version."""
    env = lab.env
    values = InstallValues(python=str(env.python), managed=env.managed)
    commands: list[str] = []
    if env.managed and (reinstall or not env.exists()):
        log_path = lab.logbook_dir / "logs" / f"install-{ctx.run_id}.log"
        say(lab.console, f"installing vLLM into {env.root} (log: {log_path}) …")
        with status(lab.console, "installing vLLM …"):
            done = vllm_env.create(
                env, lab.cfg, lab.profile_name, log_path, say=lambda m: warn(lab.console, m)
            )
        commands = done.commands
        values.install_s, values.install_log = round(done.install_s, 1), str(log_path)
        values.installer, values.uv_version = done.installer, done.uv_version
        values.installer_fallback = done.fallback
    commands.append(f'{env.python} -c "import vllm; print(vllm.__version__)"')
    try:
        versions = env.probe(fresh=True)  # the step's criterion: run it, every time
    except VllmEnvMissing as err:
        err.values = values  # keep what was learnt in the failed step's record
        raise
    values.versions = VllmVersions.from_probe(versions)
    took = (
        f", installed with {values.installer} in {values.install_s:.0f} s"
        if values.install_s is not None
        else ", already installed"
    )
    actual = (
        f"vllm {versions['vllm']} ({versions['dist']}), torch {versions['torch']}, "
        f"transformers {versions['transformers']}{took}; env {env.root}"
    )
    crit = require(
        "vllm_version",
        "打印 vllm 版本号",
        "vllm prints its version",
        bool(versions.get("vllm")),
        versions.get("vllm"),
    )
    return Outcome([crit], actual, values, command="\n".join(commands))
