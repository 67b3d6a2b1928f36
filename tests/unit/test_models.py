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


# -- the experiments' artefacts: a LoRA adapter (peft) and a draft model --------------------
@pytest.fixture
def adapter_script(tmp_path, monkeypatch):
    """A build_lora_adapter.py that writes the two adapter files and answers like the real one."""
    folder = tmp_path / "scripts"
    folder.mkdir(exist_ok=True)
    (folder / "build_lora_adapter.py").write_text(textwrap.dedent("""
        import json, pathlib, sys
        args = sys.argv[1:]
        out = pathlib.Path(args[args.index("--out") + 1])
        if "nopeft" in out.name:
            print(json.dumps({"ok": False, "error": "peft is not installed in the vLLM env"}))
            sys.exit(0)
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text(json.dumps({"args": args}))
        (out / "adapter_model.safetensors").write_bytes(b"x")
        print(json.dumps({"ok": True, "rank": int(args[args.index("--rank") + 1]), "tensors": 8}))
    """))
    monkeypatch.setattr(vllm_env, "SCRIPTS", folder)
    return VllmEnv(Path(sys.executable), managed=False)


def test_an_adapter_is_built_once_per_model_rank_and_seed(tmp_path, adapter_script):
    out = models.adapter_dir(tmp_path / "models", "/m/tiny-qwen2", rank=8, seed=1)
    assert out == tmp_path / "models" / "lora" / "tiny-qwen2-r8-s1-std0.02"
    done = models.ensure_adapter(adapter_script, "/m/tiny-qwen2", out, rank=8, seed=1)
    assert done["built"] is True and done["rank"] == 8 and done["build_s"] >= 0
    args = json.loads((out / "adapter_config.json").read_text())["args"]
    assert args[args.index("--targets") + 1] == "q_proj,v_proj"
    assert args[args.index("--model") + 1] == "/m/tiny-qwen2"
    assert models.ensure_adapter(adapter_script, "/m/tiny-qwen2", out, rank=8, seed=1)["built"] is False


def test_an_env_without_peft_fails_with_the_scripts_own_line(tmp_path, adapter_script):
    with pytest.raises(LabError, match="peft is not installed"):
        models.ensure_adapter(adapter_script, "/m", tmp_path / "nopeft", rank=8, seed=0)


def test_the_draft_has_a_shipped_config_with_the_targets_architecture_family():
    for target, name in models.DRAFT_CONFIGS.items():
        draft = json.loads((models.SHIPPED_CONFIGS / name / "config.json").read_text())
        shipped = json.loads((models.SHIPPED_CONFIGS / models.REHEARSAL_CONFIGS[target]
                              / "config.json").read_text())
        assert draft["model_type"] == shipped["model_type"]
        assert draft["hidden_size"] < shipped["hidden_size"]


def test_a_draft_is_built_from_its_config_with_the_targets_tokenizer(tmp_path, build_script):
    out = models.draft_dir(tmp_path / "models", "Qwen/Qwen2.5-7B-Instruct")
    done = models.ensure_draft(build_script, "/m/target", "Qwen/Qwen2.5-7B-Instruct", out)
    assert done["built"] is True
    args = json.loads((out / "config.json").read_text())["args"]
    assert args[args.index("--tokenizer-from") + 1] == "/m/target"
    assert args[args.index("--config") + 1].endswith("qwen2.5-0.5b/config.json")
    assert models.ensure_draft(build_script, "/m/target", "Qwen/Qwen2.5-7B-Instruct", out)["built"] is False
    with pytest.raises(LabError, match="no shipped draft config"):
        models.ensure_draft(build_script, "/m/target", "other/model", tmp_path / "d2")
