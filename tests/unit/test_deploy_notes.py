"""部署命令笔记: every server actually started, its exact command, and each flag and
environment variable explained — and no API key, ever, even if a row held one."""
import re

import pytest

from lab.deliver import deploy_notes as dn
from lab.deliver.gather import gather
from lab.explain.flags import ENV_VARS, PARAMS
from lab.vllm.launch import redact_argv, redact_env
from tests.fakes.fake_logbook import HOSTILE, LEAKED_KEY, add_hostile, cpu_logbook, gpu_logbook

# The flags of seed 001's 参数说明 and seed 002's 关键参数说明 table, and seed 000's 核心参数.
SEED_FLAGS = ("--model", "--host", "--port", "--tensor-parallel-size", "--pipeline-parallel-size",
              "--gpu-memory-utilization", "--max-model-len", "--block-size", "--swap-space",
              "--max-num-batched-tokens", "--max-num-seqs", "--enable-prefix-caching", "--dtype",
              "--quantization", "--api-key")
ASKED_FOR = ("--served-model-name", "--load-format", "--enforce-eager")
ENV = ("CUDA_VISIBLE_DEVICES", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")


def render(book, tmp_path, lang="en") -> str:
    data = gather(book, now=1.0e9, measurements=False)
    return dn.render_deploy_notes(data, lang, tmp_path).read_text()


@pytest.mark.parametrize("name", SEED_FLAGS + ASKED_FOR)
def test_each_seed_flag_has_default_meaning_memory_and_speed_in_both_languages(name):
    entry = PARAMS[name]
    for field in ("default", "meaning", "memory", "speed"):
        zh, en = getattr(entry, field)
        assert zh.strip() and en.strip(), (name, field)


@pytest.mark.parametrize("name", ENV)
def test_the_env_vars_the_lab_sets_are_explained(name):
    for field in ("default", "meaning", "memory", "speed"):
        assert all(text.strip() for text in getattr(ENV_VARS[name], field))


def test_every_started_server_gets_its_command_and_its_flags_explained(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path)
    assert text.count("## Server #") == 2
    assert ("CUDA_VISIBLE_DEVICES=0 HF_HUB_OFFLINE=1 /venv/bin/python -m "
            "vllm.entrypoints.openai.api_server --model /models/rehearsal-qwen2.5-7b") in text
    assert "--tensor-parallel-size 2 --api-key '***' --enforce-eager" in text
    for row in ("| `--tensor-parallel-size` | 2 | 1 |", "| `--gpu-memory-utilization` | 0.9 | 0.9 |",
                "| `--load-format` | dummy |", "| `--enforce-eager` | true |",
                "| `CUDA_VISIBLE_DEVICES` | 0,1 |"):
        assert row in text, row
    # the reference covers every seed flag, marking those used
    for name in SEED_FLAGS:
        assert f"| `{name}` |" in text
    assert re.search(r"\| `--max-model-len` \|[^\n]*\| ✔ \|", text)
    assert re.search(r"\| `--quantization` \|[^\n]*\|  \|", text)


def test_cpu_server_notes_explain_the_kv_cache_env_and_the_entrypoint(fresh_db, tmp_path):
    cpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path, lang="zh")
    assert "| `VLLM_CPU_KVCACHE_SPACE` | 1 |" in text
    assert "vllm-cpu 的 `vllm` 脚本会失败" in text
    assert "实际生效的 block size" in text and ": 128" in text


def test_no_server_recorded_names_the_task(fresh_db, tmp_path):
    assert "no server recorded yet — run `invoke serve`" in render(fresh_db, tmp_path)


@pytest.mark.parametrize("argv, flags", [
    (["py", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "-tp", "2"],
     [("--model", "m"), ("--tensor-parallel-size", "2")]),
    (["vllm", "serve", "Qwen/Q", "--max_num_seqs=32", "--no-enable-prefix-caching"],
     [("--model", "Qwen/Q"), ("--max-num-seqs", "32"), ("--enable-prefix-caching", "false")]),
    (["py", "-m", "x", "--enforce-eager", "--port", "8000"],
     [("--enforce-eager", "true"), ("--port", "8000")]),
])
def test_flags_are_parsed_in_every_spelling_vllm_accepts(argv, flags):
    assert [(f["flag"], f["value"]) for f in dn.parse_flags(argv)] == flags


def test_an_unknown_flag_is_listed_not_guessed(fresh_db, tmp_path):
    run = fresh_db.start_run("day3", profile="gpu")
    fresh_db.add_server(run_id=run, step_id=None, profile="gpu", model="m", tp=1,
                        argv=["py", "-m", "x", "--model", "m", "--made-up-flag", "7"], env={},
                        host="127.0.0.1", port=8000)
    assert "| \\--made-up-flag | 7 | — | not in these notes: see `vllm serve --help`" in render(
        fresh_db, tmp_path)


@pytest.mark.parametrize("argv", [
    ["--api-key", LEAKED_KEY], [f"--api-key={LEAKED_KEY}"], ["--api_key", LEAKED_KEY],
    ["--API-KEY", LEAKED_KEY], ["--hf-token", LEAKED_KEY], [f"--some-secret={LEAKED_KEY}"],
])
def test_secret_values_are_redacted_in_any_spelling(argv):
    assert LEAKED_KEY not in " ".join(redact_argv(["py", *argv, "--port", "1"]))


def test_redaction_keeps_flags_that_only_look_alike():
    argv = ["py", "--tokenizer", "tok/path", "--ssl-keyfile", "key.pem", "--port", "8000"]
    assert redact_argv(argv) == argv
    env = redact_env({"VLLM_API_KEY": LEAKED_KEY, "HF_TOKEN": LEAKED_KEY,
                       "TOKENIZERS_PARALLELISM": "false"})
    assert env == {"VLLM_API_KEY": "***", "HF_TOKEN": "***", "TOKENIZERS_PARALLELISM": "false"}


def test_api_key_never_appears_even_if_a_row_held_one(fresh_db, tmp_path):
    add_hostile(fresh_db)
    text = render(fresh_db, tmp_path)
    assert LEAKED_KEY not in text
    assert "--api-key '***' '--api-key=***'" in text and "| `VLLM_API_KEY` | \\*\\*\\* |" in text


def test_hostile_text_cannot_break_out_of_the_notes(fresh_db, tmp_path):
    add_hostile(fresh_db)
    text = render(fresh_db, tmp_path)
    # the command is shown verbatim in a code block whose fence is longer than any backtick
    # run inside it, so the text stays inert there
    block = re.search(r"^(`{3,})bash\n(.*?)\n\1$", text, re.S | re.M)
    assert block and len(block.group(1)) > 3 and "alert" in block.group(2)
    outside = text.replace(block.group(0), "")
    assert HOSTILE not in outside and "<script>" not in outside and "&lt;script&gt;" in outside
    assert not re.search(r"(?<!\\)\]\((http|javascript)", outside)


@pytest.mark.parametrize("lang, heading", [("en", "Commands of the advanced features"),
                                           ("zh", "高级功能的命令")])
def test_the_advanced_features_commands_are_in_the_notes(fresh_db, tmp_path, lang, heading):
    """LoRA hot-loading, speculative decoding, AWQ/GPTQ (seed 001/004) and TP/PP/DP, each
    with its commands and what to know (issue 11)."""
    cpu_logbook(fresh_db)
    text = render(fresh_db, tmp_path, lang=lang)
    assert heading in text
    for needle in ("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", "/v1/load_lora_adapter",
                   "/v1/unload_lora_adapter", '"method": "ngram"', "--quantization awq",
                   "--quantization gptq", "--quantization fp8", "python -m awq.entry",
                   "--data-parallel-size 2", "--pipeline-parallel-size 2"):
        assert needle in text, needle
    # the flags these commands use are explained in the reference
    for flag in ("--max-lora-rank", "--max-loras", "--data-parallel-size"):
        assert f"| `{flag}` |" in text
    assert "| `VLLM_ALLOW_RUNTIME_LORA_UPDATING` |" in text
