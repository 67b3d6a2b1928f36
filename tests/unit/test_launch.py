"""lab.vllm.launch: the server's argument list and environment, and how a command is shown
and stored (secrets redacted, never a shell string run)."""

from __future__ import annotations

import shlex

import pytest

from lab.vllm import launch
from lab.vllm.launch import Profile

SECRET = "sk-test-secret-4242"


def _argv(prof: Profile, **kw) -> list[str]:
    base = dict(host="127.0.0.1", port=8000, max_model_len=2048, gpu_memory_utilization=0.9)
    return launch.build_argv("/venv/bin/python", prof, **{**base, **kw})


def test_gpu_argv_is_the_seeds_command():
    argv = _argv(Profile("gpu", "Qwen/Qwen2.5-7B-Instruct"))
    assert argv == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                    "--model", "Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1",
                    "--port", "8000", "--max-model-len", "2048",
                    "--gpu-memory-utilization", "0.9"]


def test_tp_served_name_dummy_weights_key_and_extra_flags():
    prof = Profile("rehearsal", "/data/rehearsal-qwen2.5-14b",
                   served_model_name="Qwen/Qwen2.5-14B-Instruct", load_format="dummy")
    argv = _argv(prof, tp=2, api_key=SECRET, extra=["--enforce-eager"])
    joined = " ".join(argv)
    assert "--tensor-parallel-size 2" in joined
    assert "--served-model-name Qwen/Qwen2.5-14B-Instruct" in joined
    assert "--load-format dummy" in joined and f"--api-key {SECRET}" in joined
    assert argv[-1] == "--enforce-eager"


def test_cpu_argv_has_no_gpu_memory_flag_and_tp1_no_tp_flag():
    argv = _argv(Profile("cpu", "/data/models/tiny-qwen2", has_gpu=False))
    assert "--gpu-memory-utilization" not in argv and "--tensor-parallel-size" not in argv


def test_server_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", raising=False)
    ka = {"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "60"}  # above the client's pool keep-alive
    assert launch.server_env(Profile("gpu", "m"), tp=2) == {"CUDA_VISIBLE_DEVICES": "0,1", **ka}
    assert launch.server_env(Profile("rehearsal", "m"), tp=1) == {
        "CUDA_VISIBLE_DEVICES": "0", "HF_HUB_OFFLINE": "1", **ka}
    cpu = Profile("cpu", "m", env={"VLLM_CPU_KVCACHE_SPACE": "1"}, has_gpu=False)
    assert launch.server_env(cpu, tp=2) == {"VLLM_CPU_KVCACHE_SPACE": "1", **ka}
    from lab.measure.loadgen import CLIENT_KEEPALIVE_S
    assert CLIENT_KEEPALIVE_S < 5 < launch.SERVER_KEEPALIVE_S  # below vLLM's default and ours
    monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "7")     # a user's own value is kept
    assert "VLLM_HTTP_TIMEOUT_KEEP_ALIVE" not in launch.server_env(cpu, tp=1)
    # A user's own CUDA_VISIBLE_DEVICES is respected: the lab does not override it.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert "CUDA_VISIBLE_DEVICES" not in launch.server_env(Profile("gpu", "m"), tp=2)


def test_redact_argv_hides_both_spellings():
    argv = ["python", "-m", "x", "--api-key", SECRET, "--port", "1", f"--api-key={SECRET}"]
    out = launch.redact_argv(argv)
    assert SECRET not in " ".join(out)
    assert out == ["python", "-m", "x", "--api-key", "***", "--port", "1", "--api-key=***"]
    assert argv[4] == SECRET  # the input is not modified


@pytest.mark.parametrize("flag", ["--hf-token", "--hf_token", "--api_key", "--db-password",
                                  "--client-secret"])
def test_any_secret_looking_flag_is_redacted(flag):
    assert launch.redact_argv([flag, SECRET]) == [flag, "***"]
    assert launch.redact_argv([f"{flag}={SECRET}"]) == [f"{flag}=***"]


def test_flags_that_only_contain_a_secret_word_are_kept():
    argv = ["--tokenizer", "tok", "--ssl-keyfile", "k.pem", "--max-num-batched-tokens", "8192"]
    assert launch.redact_argv(argv) == argv


def test_a_secret_flag_without_a_value_does_not_hide_the_next_flag():
    assert launch.redact_argv(["--api-key", "--port", "1"]) == ["--api-key", "--port", "1"]


def test_redact_env():
    env = {"HF_TOKEN": SECRET, "OPENAI_API_KEY": SECRET, "VLLM_CPU_KVCACHE_SPACE": 1,
           "TOKENIZERS_PARALLELISM": "false"}
    assert launch.redact_env(env) == {"HF_TOKEN": "***", "OPENAI_API_KEY": "***",
                                      "VLLM_CPU_KVCACHE_SPACE": "1",
                                      "TOKENIZERS_PARALLELISM": "false"}
    assert launch.redact_env(None) == {}


def test_shell_line_is_what_a_learner_types_without_secrets():
    argv = _argv(Profile("cpu", "/data/my models/tiny", has_gpu=False), api_key=SECRET)
    line = launch.shell_line(argv, {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_TOKEN": SECRET},
                             python_as="python")
    assert SECRET not in line
    assert line.startswith("HF_TOKEN='***' VLLM_CPU_KVCACHE_SPACE=1 python -m "
                           "vllm.entrypoints.openai.api_server --model '/data/my models/tiny'")
    # It parses back into the (redacted) argument list: quoting is right.
    words = shlex.split(line)
    assert words[2:] == ["python", *launch.redact_argv(argv)[1:]]
    assert launch.shell_line(["a", "b"]) == "a b"


def test_check_bind_warns_only_when_exposed_without_key():
    assert launch.check_bind("127.0.0.1", None) is None
    assert launch.check_bind("localhost", None) is None
    assert launch.check_bind("0.0.0.0", "key") is None
    for host in ("0.0.0.0", "::"):
        warning = launch.check_bind(host, None)
        assert warning and "--api-key" in warning and "\n" not in warning
    warning = launch.check_bind("192.168.1.5", None)
    assert warning and "192.168.1.5" in warning
