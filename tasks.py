"""vllm-lab: the vLLM learning checklist as Invoke tasks.

    invoke day3                 # steps 1-8, verified and recorded, then logbook/day3.md
    invoke serve --port 8001    # one step on its own
    invoke log --lang en        # re-render from the logbook

Thin on purpose: each task parses options and calls lab/. Heavy imports happen inside
the tasks, so `invoke --list` stays fast (it never imports vllm, torch or transformers).
"""
from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task

from lab.core.config import invoke_defaults

COMMON_HELP = {
    "profile": "gpu | cpu | rehearsal (default: gpu when NVML finds a GPU, else cpu)",
    "lang": "language of the rendered log: zh (default) or en",
    "port": "server port (default 8000)",
}


def _lab(c, **overrides):
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


def _guard(fn):
    """LabError -> one line and a non-zero exit; never a traceback."""
    @functools.wraps(fn)
    def wrapper(c, *args, **kwargs):
        from lab.core.errors import LabError
        try:
            code = fn(c, *args, **kwargs)
        except LabError as err:
            msg = f"error: {err}"
            if err.fix:
                msg += f"\n  fix: {err.fix}"
            raise Exit(msg, 2)
        except KeyboardInterrupt:
            raise Exit("interrupted: the server was stopped and the step marked interrupted", 130)
        except Exception as err:  # a bug of ours: one line here, the traceback in a file
            from lab.commands import save_traceback
            raise Exit(f"internal error: {type(err).__name__}: {err} "
                       f"(traceback: {save_traceback(c)})", 1)
        if code:
            raise Exit(code=code)
    return wrapper


def _step(c, key, day="day3", profile=None, lang=None, port=None, **kwargs):
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port)
    return run_step_task(lab, day, key, **kwargs)


@task(help={**COMMON_HELP, "min_gpus": "GPUs needed with enough free memory (day 3: 1, day 4: 2)",
            "free_gib": "free memory each GPU needs, GiB (seed: 16)"})
@_guard
def gpus(c, profile=None, lang=None, port=None, min_gpus=1, free_gib=None):
    """1. Check GPU resources (nvidia-smi): a GPU with > 16 GB free."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port, **{"thresholds.gpu_free_gib": free_gib})
    return run_step_task(lab, "day3", "gpus", min_gpus=int(min_gpus))


@task(help={**COMMON_HELP, "python": "use this existing vLLM interpreter instead of the managed env",
            "reinstall": "pip-install into the managed env again"})
@_guard
def install(c, profile=None, lang=None, port=None, python=None, reinstall=False):
    """2. Install vLLM into its own env and check `import vllm` prints the version."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port, python=python)
    return run_step_task(lab, "day3", "install", reinstall=reinstall)


@task(help=COMMON_HELP)
@_guard
def tools(c, profile=None, lang=None, port=None):
    """3. Install monitoring tools (nvitop, gpustat) and check nvitop answers."""
    return _step(c, "tools", profile=profile, lang=lang, port=port)


@task(help={**COMMON_HELP,
            "model": "hub repository id (default: the day's model, e.g. Qwen/Qwen2.5-7B-Instruct); "
                     "a local path skips the download",
            "revision": "branch, tag or commit (default main; ModelScope: master)",
            "source": "hf (Hugging Face or a mirror) | modelscope (needs vllm-lab[modelscope])",
            "endpoint": "hub URL (default $HF_ENDPOINT, else https://huggingface.co; "
                        "the seed's mirror: https://hf-mirror.com)",
            "local_dir": "where the files go (default <data_dir>/models/<repo id>)",
            "reserve": "GiB of disk to keep free beyond the files (default 2)",
            "day": "day3 (the 7B model) | day4 (the 14B model): whose log records it"})
@_guard
def download(c, profile=None, lang=None, port=None, model=None, revision=None, source=None,
             endpoint=None, local_dir=None, reserve=None, day="day3"):
    """4. Download the model (hub, mirror or ModelScope): disk check, progress, resume, SHA-256.

    The token of a gated repository is read from HF_TOKEN (MODELSCOPE_API_TOKEN), never stored.
    """
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port,
               **{"download.source": source, "download.endpoint": endpoint,
                  "download.reserve_gib": reserve})
    return run_step_task(lab, day, "download", model=model, revision=revision,
                         local_dir=local_dir)


@task(help={**COMMON_HELP, "tp": "tensor-parallel size (day 4: 2)", "model": "model id or local path",
            "host": "bind address (default 127.0.0.1; 0.0.0.0 warns without --api-key)",
            "api_key": "API key passed to vLLM (never stored)",
            "python": "an existing vLLM interpreter", "timeout": "startup timeout, s",
            "extra_args": "more vLLM flags, e.g. \"--enforce-eager\""})
@_guard
def serve(c, profile=None, lang=None, port=None, tp=1, model=None, host=None, api_key=None,
          python=None, timeout=None, extra_args=None):
    """5. Serve the model in the background and wait for /health (stop it with `invoke stop`)."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port, host=host, api_key=api_key,
               python=python, startup_timeout_s=timeout, extra_args=extra_args)
    day = "day4" if int(tp) > 1 else "day3"  # TP>1 is Day 4's step (recorded in day4.md)
    return run_step_task(lab, day, "serve", tp=int(tp), model_of=day, model=model)


@task(help={**COMMON_HELP, "duration": "seconds to sample while the load runs",
            "concurrency": "concurrent requests of the load"})
@_guard
def monitor(c, profile=None, lang=None, port=None, duration=None, concurrency=None):
    """6. Monitor the GPU (nvitop) under load: memory used > 90 %, utilisation > 80 %."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port,
               **{"monitor.duration_s": duration, "monitor.concurrency": concurrency})
    return run_step_task(lab, "day3", "monitor")


@task(name="api-test", help=COMMON_HELP)
@_guard
def api_test(c, profile=None, lang=None, port=None):
    """7. API test: the seed's chat prompt, /v1/models and a streamed reply."""
    return _step(c, "api-test", profile=profile, lang=lang, port=port)


@task(help=COMMON_HELP)
@_guard
def metrics(c, profile=None, lang=None, port=None):
    """8. Read /metrics: the key vllm: series, with meanings (old names mapped)."""
    return _step(c, "metrics", profile=profile, lang=lang, port=port)


@task(help={"all": "also end untracked vLLM servers found on this machine"})
@_guard
def stop(c, all=False):
    """Stop the vLLM server and all its children (no orphan keeps GPU memory)."""
    from lab.commands import stop as stop_server
    ended = stop_server(_lab(c, profile="cpu"), all_orphans=all)
    print(f"stopped {len(ended)} process(es)" + (f": {', '.join(map(str, ended))}" if ended else ""))


@task(help={**COMMON_HELP, "keep_server": "leave the server running at the end",
            "reinstall": "pip-install the managed vLLM env again",
            "python": "an existing vLLM interpreter", "api_key": "API key passed to vLLM (never stored)",
            "duration": "monitor: seconds of load"})
@_guard
def day3(c, profile=None, lang=None, port=None, keep_server=False, reinstall=False,
         python=None, api_key=None, duration=None):
    """Day 3: steps 1-8 in order, stop the server, render logbook/day3.md."""
    from lab.commands import run_day
    lab = _lab(c, profile=profile, lang=lang, port=port, python=python, api_key=api_key,
               **{"monitor.duration_s": duration})
    return run_day(lab, "day3", keep_server=keep_server,
                   kwargs={"install": {"reinstall": reinstall}}, options={"reinstall": reinstall})


BENCH_HELP = {
    "concurrency": "concurrency levels of the sweep, comma-separated (default 1,4,16,64)",
    "num_requests": "measured requests per level (default 64)",
    "input_len": "prompt length, tokens (exact; default 128)",
    "output_len": "reply length, tokens (ignore_eos; default 128)",
    "warmup": "warm-up requests before each level (default 4)",
    "duration": "optional time limit per level, s",
    "latency_runs": "the seed's latency loop: sequential chat requests (default 10)",
}


def _bench(concurrency=None, num_requests=None, input_len=None, output_len=None, warmup=None,
           duration=None, latency_runs=None) -> dict:
    """Bench flags as config overrides (validated with the rest, before any work starts)."""
    return {"bench.concurrency": concurrency, "bench.num_requests": num_requests,
            "bench.input_len": input_len, "bench.output_len": output_len,
            "bench.warmup": warmup, "bench.duration_s": duration,
            "bench.latency_runs": latency_runs}


@task(help=COMMON_HELP)
@_guard
def balance(c, profile=None, lang=None, port=None):
    """Day 4: check the TP=2 server's two GPUs use memory within 10 % (CPU: TP worker RSS)."""
    return _step(c, "balance", day="day4", profile=profile, lang=lang, port=port)


@task(help={**COMMON_HELP, **BENCH_HELP})
@_guard
def bench(c, profile=None, lang=None, port=None, concurrency=None, num_requests=None,
          input_len=None, output_len=None, warmup=None, duration=None, latency_runs=None):
    """Day 4: benchmark the running server: the seed's latency loop, then a concurrency sweep."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port,
               **_bench(concurrency, num_requests, input_len, output_len, warmup, duration,
                        latency_runs))
    return run_step_task(lab, "day4", "bench")


@task(help={**COMMON_HELP, **BENCH_HELP, "keep_server": "leave the server running at the end",
            "compare_tp": "also run one benchmark level on TP=2 and TP=1, side by side",
            "python": "an existing vLLM interpreter", "api_key": "API key passed to vLLM (never stored)",
            "extra_args": "more vLLM flags, e.g. \"--enforce-eager\" (TP=2 on some GPUs needs it)"},
      auto_shortflags=False)  # too many options for one letter each
@_guard
def day4(c, profile=None, lang=None, port=None, keep_server=False, compare_tp=False, python=None,
         api_key=None, extra_args=None, concurrency=None, num_requests=None, input_len=None,
         output_len=None, warmup=None, duration=None, latency_runs=None):
    """Day 4: GPUs, download, serve TP=2, balance, API test, benchmark, metrics; renders logbook/day4.md."""
    from lab.checklist.seeds import day4_plan
    from lab.commands import run_day
    lab = _lab(c, profile=profile, lang=lang, port=port, python=python, api_key=api_key,
               extra_args=extra_args,
               **_bench(concurrency, num_requests, input_len, output_len, warmup, duration,
                        latency_runs))
    return run_day(lab, "day4", keep_server=keep_server, keys=day4_plan(compare_tp),
                   options={"compare_tp": compare_tp})


@task(help={**COMMON_HELP, "num_prompts": "chat prompts sent to both sides (default 16)",
            "max_new_tokens": "tokens generated per prompt, greedy, EOS ignored (default 64)",
            "batch_size": "HF: prompts per generate() call (default 8)",
            "source": "vLLM side: auto (the running server, else offline) | server | offline",
            "python": "an existing vLLM interpreter (it runs both sides' scripts)"})
@_guard
def compare(c, profile=None, lang=None, port=None, num_prompts=None, max_new_tokens=None,
            batch_size=None, source=None, python=None):
    """Day 4: vLLM vs a HuggingFace transformers baseline on the same prompts (speedup, cost)."""
    from lab.commands import run_step_task
    lab = _lab(c, profile=profile, lang=lang, port=port, python=python,
               **{"compare.num_prompts": num_prompts, "compare.max_new_tokens": max_new_tokens,
                  "compare.batch_size": batch_size, "compare.source": source})
    opts = lab.cfg["compare"]
    return run_step_task(lab, "day4", "compare", num_prompts=opts["num_prompts"],
                         max_new_tokens=opts["max_new_tokens"], batch_size=opts["batch_size"],
                         source=opts["source"])


@task(help={**COMMON_HELP, "batch_sizes": "the benchmark's batch sizes, comma-separated (default 1,4,8,16)",
            "max_tokens": "tokens generated per prompt (default 100, the seed's)",
            "python": "an existing vLLM interpreter"})
@_guard
def day5(c, profile=None, lang=None, port=None, batch_sizes=None, max_tokens=None, python=None):
    """Day 5: offline LLM.generate (example, batch sizes), KV blocks, key parameters; logbook/day5.md."""
    from lab.commands import run_day
    lab = _lab(c, profile=profile, lang=lang, port=port, python=python,
               **{"day5.batch_sizes": batch_sizes, "day5.max_tokens": max_tokens})
    # Day 5 starts no server: keep_server leaves alone one the user left running.
    return run_day(lab, "day5", keep_server=True,
                   options={"batch_sizes": lab.cfg["day5"]["batch_sizes"],
                            "max_tokens": lab.cfg["day5"]["max_tokens"]})


@task(help={"day": "day3 | day4 | day5", "run": "render only this run id (default: latest record of each step)",
            "lang": COMMON_HELP["lang"]})
@_guard
def log(c, day="day3", run=None, lang=None):
    """Re-render a day's execution log from the logbook (any past run)."""
    from lab.commands import render_log
    path = render_log(_lab(c, lang=lang, profile="cpu"), day, int(run) if run else None)
    print(path)


@task(help={"lang": COMMON_HELP["lang"],
            "run": "a day4 run id: report that run's bench and compare (default: the latest recorded)"})
@_guard
def report(c, lang=None, run=None):
    """Render the deliverables: report.md (+ PNG plots), deploy-notes.md, dashboard.html, prometheus.yml."""
    from lab.commands import run_report
    for path in run_report(_lab(c, lang=lang, profile="cpu"), run):
        print(path)


@task(help={"lang": COMMON_HELP["lang"]})
@_guard
def status(c, lang=None):
    """The whole roadmap as a checklist, ticked from the logbook; renders logbook/progress.md."""
    from lab.commands import run_status
    print(run_status(_lab(c, lang=lang, profile="cpu")))


@task(help={"item": "the checklist item id (`invoke status` lists them), e.g. q1",
            "note": "your answer or note, kept with the tick",
            "undo": "untick the item instead", "lang": COMMON_HELP["lang"]})
@_guard
def done(c, item, note="", undo=False, lang=None):
    """Tick a theory item by hand (e.g. the self-test Q1-Q3): invoke done q1 --note "..."."""
    from lab.commands import run_done
    print(run_done(_lab(c, lang=lang, profile="cpu"), item, note=note, undo=undo))


@task(name="compare-runs", help={"a": "the earlier run id", "b": "the later run id",
                                 "lang": COMMON_HELP["lang"]})
@_guard
def compare_runs(c, a, b, lang=None):
    """What changed between two runs of the same day: status, timings, key figures."""
    from lab.commands import run_compare_runs
    run_compare_runs(_lab(c, lang=lang, profile="cpu"), a, b)


# Every @task above, with every config key defaulted (so INVOKE_LAB_* can override it).
ns = Collection.from_module(sys.modules[__name__], config={"lab": invoke_defaults()})
