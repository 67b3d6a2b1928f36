"""Step 2: the vLLM env, and `import vllm; print(vllm.__version__)` in it."""
from __future__ import annotations

from lab.core.errors import VllmEnvMissing
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import InstallValues, VllmVersions
from lab.vllm import env as vllm_env


def install(lab: Lab, ctx: StepContext, reinstall: bool = False) -> Outcome:
    """Make the vLLM env (unless it exists) and check `import vllm` prints a version."""
    env = lab.env
    values = InstallValues(python=str(env.python), managed=env.managed)
    commands: list[str] = []
    if env.managed and (reinstall or not env.exists()):
        log_path = lab.logbook_dir / "logs" / f"install-{ctx.run_id}.log"
        lab.console.print(f"installing vLLM into {env.root} (log: {log_path}) …")
        with lab.console.status("pip install …"):
            commands, seconds = vllm_env.create(env, lab.cfg, lab.profile_name, log_path)
        values.install_s, values.install_log = round(seconds, 1), str(log_path)
    commands.append(f'{env.python} -c "import vllm; print(vllm.__version__)"')
    try:
        versions = env.probe()
    except VllmEnvMissing as err:
        err.values = values  # keep what was learnt in the failed step's record
        raise
    values.versions = VllmVersions.from_probe(versions)
    took = f", installed in {values.install_s:.0f} s" if values.install_s else ", already installed"
    actual = (f"vllm {versions['vllm']} ({versions['dist']}), torch {versions['torch']}, "
              f"transformers {versions['transformers']}{took}; env {env.root}")
    crit = require("vllm_version", "打印 vllm 版本号", "vllm prints its version",
                   bool(versions.get("vllm")), versions.get("vllm"))
    return Outcome([crit], actual, values, command="\n".join(commands))
