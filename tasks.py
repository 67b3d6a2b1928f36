"""vllm-lab: the vLLM learning checklist as Invoke tasks.

    invoke day3                 # steps 1-8, verified and recorded, then logbook/day3.md
    invoke serve --port 8001    # one step on its own
    invoke log --lang en        # re-render from the logbook

Thin on purpose: each task parses options and calls lab/. Heavy imports happen inside
the tasks, so `invoke --list` stays fast (it never imports vllm, torch or transformers).
Options are typed: a task's annotations (`tp: int = 1`, `duration: float | None = None`) are
what Invoke parses the flag into, and a value that does not parse is one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from invoke import Collection, Context, Exit, Task
from invoke import task as invoke_task
from invoke.parser import Argument

from lab.core.config import invoke_defaults

COMMON_HELP = {
    "profile": "gpu | cpu | rehearsal (default: gpu when NVML finds a GPU, else cpu)",
    "lang": "language of the rendered log: zh (default) or en",
    "port": "server port (default 8000)",
}

#: What a flag of each type must be, for the one-line error.
_KIND_WORDS = {int: "a whole number", float: "a number"}


class _TypedArgument(Argument):
    """A flag parsed by `cast` (int, float); a value that does not parse ends the command
    with one line and exit code 2, like every other bad option (no traceback)."""

    def __init__(
        self, *, cast: type | None = None, label: str | None = None, **kwargs: Any
    ) -> None:
        # Invoke's help shows =INT for int and =STRING for str, nothing for other kinds
        # (which reads like a boolean switch): a float flag is shown as =STRING.
        if cast is float:
            kwargs["kind"] = str
        super().__init__(**kwargs)
        self.cast = cast
        self.label = label or (self.name if self.positional else f"--{self.names[0]}")
        #: A flag that, when given, makes this positional argument unnecessary.
        self.waiver: Argument | None = None
        #: The task's help, printed when this positional argument is given `--help` (Invoke
        #: would otherwise take `invoke experiment --help` as the experiment named "--help").
        self.task_help: str | None = None

    @property
    def value(self) -> Any:
        value = self._value if self._value is not None else self.default
        if value is None and self.waiver is not None and self.waiver.value:
            return ""  # not missing: the waiving flag was given
        return value

    @value.setter
    def value(self, arg: Any) -> None:
        self.set_value(arg, cast=True)

    def set_value(self, value: Any, cast: bool = True) -> None:
        if self.positional and self.task_help and value in ("-h", "--help"):
            with contextlib.suppress(BrokenPipeError):  # `invoke experiment --help | head`
                print(self.task_help, flush=True)
            raise Exit(code=0)
        if not (cast and self.cast is not None):
            super().set_value(value, cast)
            return
        try:
            parsed = self.cast(value)
        except (TypeError, ValueError):
            what = _KIND_WORDS.get(self.cast, self.cast.__name__)
            raise Exit(f"error: {self.label} must be {what}, got {value!r}", 2) from None
        self.raw_value, self._value = value, parsed


def _flag_kind(hint: Any) -> type | None:
    """int or float from an annotation (`int`, `float | None`); None for anything else."""
    if hint in (int, float):
        return typing.cast(type, hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) == 1 and kinds[0] in (int, float):
            return typing.cast(type, kinds[0])
    return None


class LabTask(Task):
    """A Task whose flags take their kind from the annotations (Invoke 3 reads only the
    default's type, so `duration: float | None = None` would arrive as a string).
    `labels` names positional arguments in errors ({"b": "run B"})."""

    def __init__(
        self,
        body: Callable,
        labels: dict[str, str] | None = None,
        waived_by: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(body, **kwargs)
        self.labels = labels or {}
        #: A positional argument that a flag makes unnecessary ({"name": "list"}: `invoke
        #: experiment --list` needs no NAME).
        self.waived_by = waived_by or {}

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        kind = _flag_kind(typing.get_type_hints(self.body).get(name))
        if kind is not None and not opts["optional"]:
            opts["kind"] = kind
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        typed = [
            _TypedArgument(
                names=a.names,
                kind=a.kind,
                default=a.default,
                help=a.help,
                positional=a.positional,
                optional=a.optional,
                incrementable=a.incrementable,
                attr_name=a.attr_name,
                cast=a.kind if a.kind in (int, float) else None,
                label=self.labels.get(a.name or ""),
            )
            for a in super().get_arguments(ignore_unknown_help)
        ]
        by_name = {a.name: a for a in typed}
        for positional, flag in self.waived_by.items():
            by_name[positional].waiver = by_name[flag]
        for a in typed:
            if a.positional:
                a.task_help = self.help_text(typed)
        args: list[Argument] = list(typed)
        return args

    def help_text(self, arguments: list[_TypedArgument]) -> str:
        """What `invoke --help NAME` prints, in short: usage, docstring, every option's help."""
        name = self.name.replace("_", "-")
        positional = " ".join(f"[{(a.name or '').upper()}]" for a in arguments if a.positional)
        lines = [f"Usage: invoke {name} [--options] {positional}".rstrip(), ""]
        lines += ["Docstring:", f"  {(self.__doc__ or '').strip()}", "", "Options:"]
        for a in sorted(arguments, key=lambda a: a.names[0]):
            flag = f"--{a.names[0].replace('_', '-')}"
            lines.append(f"  {flag:<22}{a.help or ''}")
        return "\n".join(lines)


def task(*args: Any, **kwargs: Any) -> Any:
    """Invoke's @task, making a LabTask."""
    return invoke_task(*args, klass=LabTask, **kwargs)


def _lab(c: Context, **overrides: Any) -> Any:
    """A Lab from Invoke's config (invoke.yaml, INVOKE_LAB_* variables) plus flags."""
    from lab.commands import to_dict
    from lab.record.session import Lab

    cfg = to_dict(c.config.lab)
    for key, value in overrides.items():
        if value is None:
            continue
        node, *path = key.split(".")
        target = cfg
        for part in [node, *path][:-1]:
            target = target[part]
        target[([node, *path])[-1]] = value
    return Lab.from_config(cfg)


def _guard(fn: Callable[..., int | None]) -> Callable[..., None]:
    """LabError -> one line and a non-zero exit; never a traceback."""

    @functools.wraps(fn)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> None:
        from lab.core.errors import LabError

        try:
            code = fn(c, *args, **kwargs)
        except LabError as err:
            msg = f"error: {err}"
            if err.fix:
                msg += f"\n  fix: {err.fix}"
            raise Exit(msg, 2) from None
        except KeyboardInterrupt:
            raise Exit(
                "interrupted: the server was stopped and the step marked interrupted", 130
            ) from None
        except Exception as err:  # a bug of ours: one line here, the traceback in a file
            from lab.commands import save_traceback

            raise Exit(
                f"internal error: {type(err).__name__}: {err} (traceback: {save_traceback(c)})", 1
            ) from None
        if code:
            raise Exit(code=code)

    return wrapper


def _at_least_one(value: int, flag: str) -> int:
    from lab.core.errors import ConfigError

    if value < 1:
        raise ConfigError(f"{flag} must be at least 1, got {value}")
    return value


def _step(
    c: Context,
    key: str,
    day: str = "day3",
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    **kwargs: Any,
) -> int:
    from lab.commands import run_step_task

    lab = _lab(c, profile=profile, lang=lang, port=port)
    return run_step_task(lab, day, key, **kwargs)


@task(
    help={
        **COMMON_HELP,
        "min_gpus": "GPUs needed with enough free memory (day 3: 1, day 4: 2)",
        "free_gib": "free memory each GPU needs, GiB (seed: 16)",
    }
)
@_guard
def gpus(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    min_gpus: int = 1,
    free_gib: float | None = None,
) -> int:
    """1. Check GPU resources (nvidia-smi): a GPU with > 16 GB free."""
    from lab.commands import run_step_task

    lab = _lab(c, profile=profile, lang=lang, port=port, **{"thresholds.gpu_free_gib": free_gib})
    return run_step_task(lab, "day3", "gpus", min_gpus=_at_least_one(min_gpus, "--min-gpus"))


@task(
    help={
        **COMMON_HELP,
        "python": "use this existing vLLM interpreter instead of the managed env",
        "reinstall": "pip-install into the managed env again",
    }
)
@_guard
def install(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    python: str | None = None,
    reinstall: bool = False,
) -> int:
    """2. Install vLLM into its own env and check `import vllm` prints the version."""
    from lab.commands import run_step_task

    lab = _lab(c, profile=profile, lang=lang, port=port, python=python)
    return run_step_task(lab, "day3", "install", reinstall=reinstall)


@task(help=COMMON_HELP)
@_guard
def tools(
    c: Context, profile: str | None = None, lang: str | None = None, port: int | None = None
) -> int:
    """3. Install monitoring tools (nvitop, gpustat) and check nvitop answers."""
    return _step(c, "tools", profile=profile, lang=lang, port=port)


@task(
    help={
        **COMMON_HELP,
        "model": "hub repository id (default: the day's model, e.g. Qwen/Qwen2.5-7B-Instruct); "
        "a local path skips the download",
        "revision": "branch, tag or commit (default main; ModelScope: master)",
        "source": "hf (Hugging Face or a mirror) | modelscope (needs vllm-lab[modelscope])",
        "endpoint": "hub URL (default $HF_ENDPOINT, else https://huggingface.co; "
        "the seed's mirror: https://hf-mirror.com)",
        "local_dir": "where the files go (default <data_dir>/models/<repo id>)",
        "reserve": "GiB of disk to keep free beyond the files (default 2)",
        "day": "day3 (the 7B model) | day4 (the 14B model): whose log records it",
    }
)
@_guard
def download(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    model: str | None = None,
    revision: str | None = None,
    source: str | None = None,
    endpoint: str | None = None,
    local_dir: str | None = None,
    reserve: float | None = None,
    day: str = "day3",
) -> int:
    """4. Download the model (hub, mirror or ModelScope): disk check, progress, resume, SHA-256.

    The token of a gated repository is read from HF_TOKEN (MODELSCOPE_API_TOKEN), never stored.
    """
    from lab.commands import run_step_task

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        **{
            "download.source": source,
            "download.endpoint": endpoint,
            "download.reserve_gib": reserve,
        },
    )
    return run_step_task(lab, day, "download", model=model, revision=revision, local_dir=local_dir)


#: Day 6's node flags (issue 12): `serve --nnodes …`, `cluster`, `node`, `day6`.
NODE_HELP = {
    "nnodes": "number of nodes (hosts) the model spans (day6/cluster default 2)",
    "node_rank": "this host's node rank: 0 is the head (API server), others run headless",
    "master_addr": "the head's address every node reaches (default 127.0.0.1: a local cluster)",
    "master_port": "torch.distributed port on the head (default 29555)",
    "tp": "tensor-parallel size (within a node)",
    "pp": "pipeline-parallel size (stages across nodes; day6/cluster default: nnodes)",
    "dp": "data-parallel size (one node only)",
    "executor": "mp: vLLM's multi-node launcher | ray: an existing Ray cluster "
    "(--distributed-executor-backend ray)",
    "model": "model id or local path (default: the Day 4 model; cpu: the tiny model)",
}


@task(
    help={
        **COMMON_HELP,
        "tp": "tensor-parallel size (day 4: 2)",
        "model": "model id or local path",
        "host": "bind address (default 127.0.0.1; 0.0.0.0 warns without --api-key)",
        "api_key": "API key passed to vLLM (never stored)",
        "python": "an existing vLLM interpreter",
        "timeout": "startup timeout, s",
        "extra_args": 'more vLLM flags, e.g. "--enforce-eager"',
        "fix": "auto (default): a known failure (CUDA-graph crash, OOM at startup, CPU NUMA binding) is retried once with its fix | off: only report it",
        **{k: v for k, v in NODE_HELP.items() if k not in ("model", "tp")},
    },
    auto_shortflags=False,
)
@_guard
def serve(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    tp: int = 1,
    model: str | None = None,
    host: str | None = None,
    api_key: str | None = None,
    python: str | None = None,
    timeout: float | None = None,
    extra_args: str | None = None,
    fix: str | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    pp: int = 1,
    dp: int = 1,
    executor: str = "mp",
) -> int:
    """5. Serve the model in the background and wait for /health (stop it with `invoke stop`)."""
    from lab.commands import run_step_task

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        host=host,
        api_key=api_key,
        python=python,
        startup_timeout_s=timeout,
        extra_args=extra_args,
        fix=fix,
    )
    if nnodes > 1 or pp > 1 or dp > 1 or executor != "mp":  # Day 6: across nodes (issue 12)
        from lab.commands import layout_from

        layout = layout_from(
            lab,
            nnodes=nnodes,
            node_rank=node_rank,
            master_addr=master_addr,
            master_port=master_port,
            tp=tp,
            pp=pp,
            dp=dp,
            executor=executor,
            running=False,
        )
        if layout.node_rank != 0:
            from lab.core.errors import ConfigError

            raise ConfigError(
                f"node rank {layout.node_rank} runs headless: use `invoke node "
                f"--node-rank {layout.node_rank} …` on that host"
            )
        return run_step_task(
            lab,
            "day6",
            "serve-nodes",
            layout=layout,
            model=model,
            start_local_ranks=False,
            adopt=False,
        )
    tp = _at_least_one(tp, "--tp")
    day = "day4" if tp > 1 else "day3"  # TP>1 is Day 4's step (recorded in day4.md)
    return run_step_task(lab, day, "serve", tp=tp, model_of=day, model=model)


@task(
    help={
        **COMMON_HELP,
        "duration": "seconds to sample while the load runs",
        "concurrency": "concurrent requests of the load",
    }
)
@_guard
def monitor(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    duration: float | None = None,
    concurrency: int | None = None,
) -> int:
    """6. Monitor the GPU (nvitop) under load: memory used > 90 %, utilisation > 80 %."""
    from lab.commands import run_step_task

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        **{
            "monitor.duration_s": duration,
            "cpu.monitor_duration_s": duration,
            "monitor.concurrency": concurrency,
        },
    )
    return run_step_task(lab, "day3", "monitor")


@task(name="api-test", help=COMMON_HELP)
@_guard
def api_test(
    c: Context, profile: str | None = None, lang: str | None = None, port: int | None = None
) -> int:
    """7. API test: the seed's chat prompt, /v1/models and a streamed reply."""
    return _step(c, "api-test", profile=profile, lang=lang, port=port)


@task(help=COMMON_HELP)
@_guard
def metrics(
    c: Context, profile: str | None = None, lang: str | None = None, port: int | None = None
) -> int:
    """8. Read /metrics: the key vllm: series, with meanings (old names mapped)."""
    return _step(c, "metrics", profile=profile, lang=lang, port=port)


@task(help={"all": "also end untracked vLLM servers found on this machine"})
@_guard
def stop(c: Context, all: bool = False) -> None:
    """Stop the vLLM server and all its children (no orphan keeps GPU memory)."""
    from lab.commands import stop_report

    print(stop_report(_lab(c, profile="cpu"), all_orphans=all)[1])


@task(
    help={
        **COMMON_HELP,
        "keep_server": "leave the server running at the end",
        "reinstall": "pip-install the managed vLLM env again",
        "python": "an existing vLLM interpreter",
        "api_key": "API key passed to vLLM (never stored)",
        "duration": "monitor: seconds of load",
        "fix": "auto (default): a known failure (CUDA-graph crash, OOM at startup, CPU NUMA binding) is retried once with its fix | off: only report it",
    }
)
@_guard
def day3(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    keep_server: bool = False,
    reinstall: bool = False,
    python: str | None = None,
    api_key: str | None = None,
    duration: float | None = None,
    fix: str | None = None,
) -> int:
    """Day 3: steps 1-8 in order, stop the server, render logbook/day3.md."""
    from lab.commands import run_day

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        api_key=api_key,
        fix=fix,
        **{"monitor.duration_s": duration, "cpu.monitor_duration_s": duration},
    )
    return run_day(
        lab,
        "day3",
        keep_server=keep_server,
        kwargs={"install": {"reinstall": reinstall}},
        options={"reinstall": reinstall},
    )


BENCH_HELP = {
    "concurrency": "concurrency levels of the sweep, comma-separated (default 1,4,16,64)",
    "num_requests": "measured requests per level (default 64)",
    "input_len": "prompt length, tokens (exact; default 128)",
    "output_len": "reply length, tokens (ignore_eos; default 128)",
    "warmup": "warm-up requests before each level (default 4)",
    "duration": "optional time limit per level, s",
    "latency_runs": "the seed's latency loop: sequential chat requests (default 10)",
}


def _bench(
    concurrency: str | None = None,
    num_requests: str | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    warmup: int | None = None,
    duration: float | None = None,
    latency_runs: int | None = None,
    request_rate: str | None = None,
    burstiness: float | None = None,
    goodput: str | None = None,
    save_result: bool | None = None,
) -> dict[str, Any]:
    """Bench flags as config overrides (validated with the rest, before any work starts)."""
    return {
        "bench.concurrency": concurrency,
        "bench.num_requests": num_requests,
        "bench.input_len": input_len,
        "bench.output_len": output_len,
        "bench.warmup": warmup,
        "bench.duration_s": duration,
        "bench.latency_runs": latency_runs,
        "bench.request_rate": request_rate,
        "bench.burstiness": burstiness,
        "bench.goodput": goodput,
        "bench.save_result": save_result or None,
    }


@task(help=COMMON_HELP)
@_guard
def balance(
    c: Context, profile: str | None = None, lang: str | None = None, port: int | None = None
) -> int:
    """Day 4: check the TP=2 server's two GPUs use memory within 10 % (CPU: TP worker RSS)."""
    return _step(c, "balance", day="day4", profile=profile, lang=lang, port=port)


@task(
    help={
        **COMMON_HELP,
        **BENCH_HELP,
        "request_rate": "arrivals per level, req/s (default inf: all at once), as vllm bench serve",
        "burstiness": "gamma shape of the arrival gaps (1 = Poisson), as vllm bench serve",
        "goodput": 'latency targets in ms for goodput, e.g. "ttft:500 tpot:50"',
        "save_result": "also write each level as vllm bench serve --save-result JSON",
    }
)
@_guard
def bench(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    concurrency: str | None = None,
    num_requests: str | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    warmup: int | None = None,
    duration: float | None = None,
    latency_runs: int | None = None,
    request_rate: str | None = None,
    burstiness: float | None = None,
    goodput: str | None = None,
    save_result: bool = False,
) -> int:
    """Day 4: benchmark the running server: the seed's latency loop, then a concurrency sweep."""
    from lab.commands import run_step_task

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        **_bench(
            concurrency,
            num_requests,
            input_len,
            output_len,
            warmup,
            duration,
            latency_runs,
            request_rate,
            burstiness,
            goodput,
            save_result,
        ),
    )
    return run_step_task(lab, "day4", "bench")


@task(
    help={
        **COMMON_HELP,
        **BENCH_HELP,
        "keep_server": "leave the server running at the end",
        "compare_tp": "also run one benchmark level on TP=2 and TP=1, side by side",
        "python": "an existing vLLM interpreter",
        "api_key": "API key passed to vLLM (never stored)",
        "extra_args": 'more vLLM flags, e.g. "--enforce-eager" (TP=2 on some GPUs needs it)',
        "fix": "auto (default): a known failure (CUDA-graph crash, OOM at startup, CPU NUMA binding) is retried once with its fix | off: only report it",
    },
    auto_shortflags=False,
)  # too many options for one letter each
@_guard
def day4(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    keep_server: bool = False,
    compare_tp: bool = False,
    python: str | None = None,
    api_key: str | None = None,
    extra_args: str | None = None,
    concurrency: str | None = None,
    num_requests: str | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    warmup: int | None = None,
    duration: float | None = None,
    latency_runs: int | None = None,
    fix: str | None = None,
) -> int:
    """Day 4: GPUs, download, serve TP=2, balance, API test, benchmark, metrics; renders logbook/day4.md."""
    from lab.checklist.seeds import day4_plan
    from lab.commands import run_day

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        api_key=api_key,
        extra_args=extra_args,
        fix=fix,
        **_bench(concurrency, num_requests, input_len, output_len, warmup, duration, latency_runs),
    )
    return run_day(
        lab,
        "day4",
        keep_server=keep_server,
        keys=day4_plan(compare_tp),
        options={"compare_tp": compare_tp},
    )


@task(
    help={
        **COMMON_HELP,
        "num_prompts": "chat prompts sent to both sides (default 16)",
        "max_new_tokens": "tokens generated per prompt, greedy, EOS ignored (default 64)",
        "batch_size": "HF: prompts per generate() call (default 8)",
        "source": "vLLM side: auto (the running server, else offline) | server | offline",
        "python": "an existing vLLM interpreter (it runs both sides' scripts)",
    }
)
@_guard
def compare(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    num_prompts: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    source: str | None = None,
    python: str | None = None,
) -> int:
    """Day 4: vLLM vs a HuggingFace transformers baseline on the same prompts (speedup, cost)."""
    from lab.commands import run_step_task

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        **{
            "compare.num_prompts": num_prompts,
            "compare.max_new_tokens": max_new_tokens,
            "compare.batch_size": batch_size,
            "compare.source": source,
        },
    )
    opts = lab.cfg["compare"]
    return run_step_task(
        lab,
        "day4",
        "compare",
        num_prompts=opts["num_prompts"],
        max_new_tokens=opts["max_new_tokens"],
        batch_size=opts["batch_size"],
        source=opts["source"],
    )


@task(
    help={
        **COMMON_HELP,
        "batch_sizes": "the benchmark's batch sizes, comma-separated (default 1,4,8,16)",
        "max_tokens": "tokens generated per prompt (default 100, the seed's)",
        "python": "an existing vLLM interpreter",
    }
)
@_guard
def day5(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    batch_sizes: str | None = None,
    max_tokens: int | None = None,
    python: str | None = None,
) -> int:
    """Day 5: offline LLM.generate (example, batch sizes), KV blocks, key parameters; logbook/day5.md."""
    from lab.commands import run_day

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        **{"day5.batch_sizes": batch_sizes, "day5.max_tokens": max_tokens},
    )
    # Day 5 starts no server: keep_server leaves alone one the user left running.
    return run_day(
        lab,
        "day5",
        keep_server=True,
        options={
            "batch_sizes": lab.cfg["day5"]["batch_sizes"],
            "max_tokens": lab.cfg["day5"]["max_tokens"],
        },
    )


@task(
    help={
        "day": "day3 | day4 | day5",
        "run": "render only this run id (default: latest record of each step)",
        "lang": COMMON_HELP["lang"],
    }
)
@_guard
def log(c: Context, day: str = "day3", run: int | None = None, lang: str | None = None) -> None:
    """Re-render a day's execution log from the logbook (any past run)."""
    from lab.commands import render_log

    path = render_log(_lab(c, lang=lang, profile="cpu"), day, run)
    print(path)


@task(
    help={
        "lang": COMMON_HELP["lang"],
        "run": "a day4 run id: report that run's bench and compare (default: the latest recorded)",
    }
)
@_guard
def report(c: Context, lang: str | None = None, run: int | None = None) -> None:
    """Render the deliverables: report.md (+ PNG plots), deploy-notes.md, dashboard.html, prometheus.yml."""
    from lab.commands import run_report

    for path in run_report(_lab(c, lang=lang, profile="cpu"), run):
        print(path)


@task(help={"lang": COMMON_HELP["lang"]})
@_guard
def status(c: Context, lang: str | None = None) -> None:
    """The whole roadmap as a checklist, ticked from the logbook; renders logbook/progress.md."""
    from lab.commands import run_status

    print(run_status(_lab(c, lang=lang, profile="cpu")))


@task(
    help={
        "item": "the checklist item id (`invoke status` lists them), e.g. q1",
        "note": "your answer or note, kept with the tick",
        "undo": "untick the item instead",
        "lang": COMMON_HELP["lang"],
    }
)
@_guard
def done(
    c: Context, item: str, note: str = "", undo: bool = False, lang: str | None = None
) -> None:
    """Tick a theory item by hand (e.g. the self-test Q1-Q3): invoke done q1 --note "..."."""
    from lab.commands import run_done

    print(run_done(_lab(c, lang=lang, profile="cpu"), item, note=note, undo=undo))


@task(
    name="compare-runs",
    help={"a": "the earlier run id", "b": "the later run id", "lang": COMMON_HELP["lang"]},
    labels={"a": "run A", "b": "run B"},
)
@_guard
def compare_runs(c: Context, a: int, b: int, lang: str | None = None) -> None:
    """What changed between two runs of the same day: status, timings, key figures."""
    from lab.commands import run_compare_runs

    run_compare_runs(_lab(c, lang=lang, profile="cpu"), a, b)


@task(
    help={
        **COMMON_HELP,
        "name": "the experiment (`invoke experiment --list` names them)",
        "list": "list the experiments: name, question, arms, profiles",
        "rounds": "rounds of A B … alternation (default: the experiment's, 1-2)",
        "arms": "run only these arms, comma-separated (e.g. 1,64 for batching)",
        "num_requests": "measured requests per arm (default: the experiment's)",
        "python": "an existing vLLM interpreter",
        "timeout": "startup timeout per arm, s",
        "extra_args": 'more vLLM flags for every arm, e.g. "--enforce-eager"',
    },
    auto_shortflags=False,
    positional=["name"],
    waived_by={"name": "list"},
)
@_guard
def experiment(
    c: Context,
    name: str | None = None,
    list: bool = False,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    rounds: int | None = None,
    arms: str | None = None,
    num_requests: int | None = None,
    python: str | None = None,
    timeout: float | None = None,
    extra_args: str | None = None,
) -> int | None:
    """Experiments: one server per arm, the same load, arms alternated; a measured verdict."""
    from lab.commands import list_experiments, run_experiment

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        startup_timeout_s=timeout,
        extra_args=extra_args,
    )
    if list or not name:
        list_experiments(lab)
        return None
    return run_experiment(lab, name, rounds=rounds, arms=arms, num_requests=num_requests)


# ------------------------------------------------------------------------------------------
# Day 6: one model across several nodes (issue 12)
# ------------------------------------------------------------------------------------------


def _node_help(*without: str) -> dict[str, str]:
    return {k: v for k, v in NODE_HELP.items() if k not in without}


def _layout(
    c: Context,
    lab: Any,
    nnodes: int | None,
    node_rank: int,
    master_addr: str | None,
    master_port: int | None,
    tp: int | None,
    pp: int | None,
    dp: int | None,
    executor: str | None,
    running: bool = True,
) -> Any:
    from lab.commands import layout_from

    return layout_from(
        lab,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        tp=tp,
        pp=pp,
        dp=dp,
        executor=executor,
        running=running,
    )


@task(
    help={
        **COMMON_HELP,
        **_node_help("node_rank", "master_addr", "dp"),
        "python": "an existing vLLM interpreter",
        "timeout": "startup timeout, s",
        "extra_args": "more vLLM flags for every node",
    },
    auto_shortflags=False,
)
@_guard
def cluster(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    nnodes: int = 2,
    master_port: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    executor: str | None = None,
    model: str | None = None,
    python: str | None = None,
    timeout: float | None = None,
    extra_args: str | None = None,
) -> int:
    """Day 6: every node rank on this host, each on its own GPUs (cpu: its own cores); left running."""
    from lab.commands import run_cluster

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        startup_timeout_s=timeout,
        extra_args=extra_args,
    )
    layout = _layout(
        c, lab, nnodes, 0, "127.0.0.1", master_port, tp, pp, None, executor, running=False
    )
    return run_cluster(lab, layout, model)


@task(
    help={
        **COMMON_HELP,
        **_node_help("dp"),
        "python": "an existing vLLM interpreter",
        "extra_args": "more vLLM flags (the same on every node)",
    },
    auto_shortflags=False,
)
@_guard
def node(
    c: Context,
    node_rank: int,
    master_addr: str,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    nnodes: int = 2,
    master_port: int | None = None,
    tp: int = 1,
    pp: int | None = None,
    executor: str | None = None,
    model: str | None = None,
    python: str | None = None,
    extra_args: str | None = None,
) -> int:
    """Day 6: start this host's headless node rank (vLLM `serve --headless`); it waits for the head."""
    from lab.commands import run_step_task

    lab = _lab(c, profile=profile, lang=lang, port=port, python=python, extra_args=extra_args)
    layout = _layout(
        c, lab, nnodes, node_rank, master_addr, master_port, tp, pp, None, executor, running=False
    )
    return run_step_task(lab, "day6", "node", layout=layout, model=model)


@task(
    help={
        **COMMON_HELP,
        **BENCH_HELP,
        **_node_help("node_rank", "dp"),
        "keep_server": "leave the server running at the end",
        "python": "an existing vLLM interpreter",
        "api_key": "API key passed to vLLM (never stored)",
        "timeout": "startup timeout, s",
        "extra_args": 'more vLLM flags, e.g. "--enforce-eager"',
    },
    auto_shortflags=False,
)
@_guard
def day6(
    c: Context,
    profile: str | None = None,
    lang: str | None = None,
    port: int | None = None,
    keep_server: bool = False,
    nnodes: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    executor: str | None = None,
    model: str | None = None,
    python: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    extra_args: str | None = None,
    concurrency: str | None = None,
    num_requests: str | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    warmup: int | None = None,
    duration: float | None = None,
    latency_runs: int | None = None,
) -> int:
    """Day 6: nodes, serve across nodes, each node's share, API test, benchmark, one node vs several; logbook/day6.md."""
    from lab.commands import run_day6

    lab = _lab(
        c,
        profile=profile,
        lang=lang,
        port=port,
        python=python,
        api_key=api_key,
        startup_timeout_s=timeout,
        extra_args=extra_args,
        **_bench(concurrency, num_requests, input_len, output_len, warmup, duration, latency_runs),
    )
    layout = _layout(c, lab, nnodes, 0, master_addr, master_port, tp, pp, None, executor)
    return run_day6(lab, layout, keep_server=keep_server, model=model)


# Every @task above, with every config key defaulted (so INVOKE_LAB_* can override it).
ns = Collection.from_module(sys.modules[__name__], config={"lab": invoke_defaults()})
