"""lab.vllm.models: the check that a local model exists, and building the tiny cpu model or a
rehearsal tokenizer in the vLLM env (here: a stand-in build script run as a real subprocess)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from lab.core.errors import LabError, ModelMissing
from lab.vllm import env as vllm_env
from lab.vllm import models
from lab.vllm.env import VllmEnv
from lab.vllm.launch import Profile


def test_a_hub_id_is_left_to_vllm_but_a_local_path_must_hold_config_json(tmp_path):
    models.check_model(Profile("gpu", "Qwen/Qwen2.5-7B-Instruct"))  # vLLM resolves hub ids
    with pytest.raises(ModelMissing, match=r"has no config\.json"):
        models.check_model(Profile("gpu", str(tmp_path / "my-model")))
    with pytest.raises(ModelMissing):  # cpu and rehearsal models are always local
        models.check_model(Profile("cpu", "tiny-qwen2", has_gpu=False))
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text("{}")
    models.check_model(Profile("gpu", str(tmp_path / "my-model")))


def test_every_rehearsal_model_has_a_shipped_config():
    for name in models.REHEARSAL_CONFIGS.values():
        config = json.loads((models.SHIPPED_CONFIGS / name / "config.json").read_text())
        assert config["model_type"] == "qwen2"


@pytest.fixture
def build_script(tmp_path, monkeypatch):
    """A build_tiny_model.py that writes config.json where --out says and logs its args."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "build_tiny_model.py").write_text(textwrap.dedent("""
        import json, pathlib, sys
        args = sys.argv[1:]
        out = pathlib.Path(args[args.index("--out") + 1])
        if "fail" in out.name:
            print("OSError: disk full", file=sys.stderr)
            sys.exit(1)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"args": args}))
    """))
    monkeypatch.setattr(vllm_env, "SCRIPTS", folder)
    return VllmEnv(Path(sys.executable), managed=False)


def test_the_tiny_cpu_model_is_built_once(tmp_path, build_script):
    path = tmp_path / "models" / models.TINY_MODEL
    prof = Profile("cpu", str(path), has_gpu=False)
    done = models.ensure_model(build_script, prof)
    assert done["model_built"] is True and done["model_build_s"] >= 0
    assert json.loads((path / "config.json").read_text())["args"] == ["--out", str(path)]
    assert models.ensure_model(build_script, prof) == {"model_built": False}


def test_a_rehearsal_model_is_built_from_its_shipped_config(tmp_path, build_script):
    path = tmp_path / "models" / "rehearsal-qwen2.5-14b"
    prof = Profile("rehearsal", str(path), served_model_name="Qwen/Qwen2.5-14B-Instruct",
                   load_format="dummy")
    models.ensure_model(build_script, prof)
    args = json.loads((path / "config.json").read_text())["args"]
    assert args[args.index("--config") + 1] == str(
        models.SHIPPED_CONFIGS / "qwen2.5-14b" / "config.json")


def test_a_model_the_lab_cannot_build_is_missing(tmp_path, build_script):
    with pytest.raises(ModelMissing, match="model not found"):
        models.ensure_model(build_script, Profile("cpu", str(tmp_path / "other"), has_gpu=False))


def test_a_failed_build_is_one_line_with_the_scripts_output(tmp_path, build_script):
    prof = Profile("rehearsal", str(tmp_path / "fail"), served_model_name="Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(LabError) as err:
        models.ensure_model(build_script, prof)
    assert str(err.value) == f"could not build the model at {tmp_path / 'fail'}"
    assert "OSError: disk full" in err.value.evidence
