"""Step 6: the seed's chat prompt, /v1/models and a streamed reply."""

from __future__ import annotations

from lab.core.fmt import fixed
from lab.record.runner import Outcome, StepContext, require
from lab.record.session import Lab
from lab.record.values import ApiTestValues, StreamReply
from lab.vllm import api
from lab.vllm import process as server


def api_test(lab: Lab, ctx: StepContext, day: str = "day3") -> Outcome:
    """The seed's chat prompt, /v1/models, and a streamed reply."""
    state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    a = lab.cfg["api"]
    prompt, max_tokens = a[f"prompt_{day}"], a[f"max_tokens_{day}"]
    reply = api.chat(
        lab.url,
        model,
        prompt,
        max_tokens=max_tokens,
        temperature=a["temperature"],
        api_key=lab.api_key,
        timeout_s=a["timeout_s"],
    )
    models = [str(m.get("id")) for m in api.list_models(lab.url, lab.api_key)]
    stream = api.chat_stream(
        lab.url,
        model,
        prompt,
        max_tokens=64,
        temperature=a["temperature"],
        api_key=lab.api_key,
        timeout_s=a["timeout_s"],
    )
    crits = [
        require(
            "chat_200",
            "对话接口返回 HTTP 200",
            "chat returns HTTP 200",
            reply.http_status == 200,
            reply.http_status,
        ),
        require(
            "content",
            "回复内容非空",
            "reply content is non-empty",
            bool(reply.content.strip()),
            len(reply.content),
            reason="empty content",
        ),
        require(
            "usage",
            "返回 usage（token 统计）",
            "usage is present",
            reply.completion_tokens is not None,
            reply.completion_tokens,
            reason="no usage",
        ),
        require(
            "models",
            "/v1/models 列出该模型",
            "/v1/models lists the model",
            model in models,
            ", ".join(models),
            reason=f"{model} not in {models}",
        ),
        require(
            "stream",
            "流式回复到达",
            "a streamed reply arrives",
            stream.chunks > 0 and stream.http_status == 200,
            stream.chunks,
            reason="no streamed chunk",
        ),
    ]
    values = ApiTestValues(
        prompt=prompt,
        max_tokens=max_tokens,
        reply=reply.content,
        latency_s=reply.latency_s,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        output_tok_s=reply.tokens_per_s,
        finish_reason=reply.finish_reason,
        models=[str(m) for m in models],
        stream=StreamReply(
            chunks=stream.chunks,
            ttft_s=stream.ttft_s,
            e2el_s=stream.e2el_s,
            completion_tokens=stream.completion_tokens,
            reply=stream.content,
        ),
    )
    actual = (
        f"HTTP {reply.http_status} in {reply.latency_s * 1000:,.0f} ms, "
        f"{reply.prompt_tokens} prompt + {reply.completion_tokens} completion tokens "
        f"({fixed(reply.tokens_per_s)} tok/s), finish_reason {reply.finish_reason}; "
        f"stream: {stream.chunks} chunks, TTFT {fixed((stream.ttft_s or 0) * 1000)} ms"
    )
    command = (
        f"curl {lab.url}/v1/chat/completions -H 'Content-Type: application/json' -d "
        f'\'{{"model": "{model}", "messages": [{{"role": "user", "content": '
        f'"{prompt}"}}], "max_tokens": {max_tokens}}}\''
    )
    return Outcome(crits, actual, values, evidence=f"HTTP {reply.http_status}", command=command)
