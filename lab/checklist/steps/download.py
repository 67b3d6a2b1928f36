"""The `download` step: seed 000's "下载模型（如果本地没有）" before serving (Day 3: the 7B
model, Day 4: the 14B one), done with the hub's own client: the file list first, a disk
check, a progress bar, resume of an interrupted run, SHA-256 verification.

Command line equivalent (the seed's):
    HF_ENDPOINT=https://hf-mirror.com huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir …

The gpu profile downloads; the cpu and rehearsal profiles build their models offline (a tiny
random model; a shipped config with dummy weights) and skip it, as does a local path given
with --model. Serve then takes the local path, with --served-model-name set to the repo id
(`Lab.profile` finds the verified copy through `Lab.downloaded`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lab.core.errors import HubUnreachable, LabError
from lab.record.runner import Outcome, StepContext, require, skip
from lab.record.session import Lab
from lab.record.values import DownloadValues
from lab.vllm import hub

LABEL = ("模型文件齐全且 SHA-256 校验通过", "model files present and SHA-256 verified")
FETCH_LABEL = ("下载缺少的文件", "download the missing files")
OFFLINE = {
    "cpu": "cpu profile builds its model offline (tiny-qwen2, random weights): no download",
    "rehearsal": (
        "rehearsal profile builds its model offline (the shipped config, "
        "--load-format dummy): no download"
    ),
}


@dataclass(frozen=True)
class Options:
    repo_id: str
    revision: str | None
    source: str
    endpoint: str
    local_dir: Path
    reserve_gib: float


def options(
    lab: Lab,
    day: str = "day3",
    model: str | None = None,
    revision: str | None = None,
    source: str | None = None,
    endpoint: str | None = None,
    local_dir: str | None = None,
) -> Options:
    """The download's options: flags, then the config (download.*), then the environment."""
    cfg = lab.cfg["download"]
    src = source or cfg["source"]
    repo_id = model or lab.cfg["models"][day]
    target = Path(local_dir).expanduser().absolute() if local_dir else lab.download_dir(repo_id)
    return Options(
        repo_id,
        revision or cfg["revision"] or None,
        src,
        hub.resolve_endpoint(src, endpoint, cfg["endpoint"]),
        target,
        cfg["reserve_gib"],
    )


def download(
    lab: Lab,
    ctx: StepContext,
    model: str | None = None,
    revision: str | None = None,
    source: str | None = None,
    endpoint: str | None = None,
    local_dir: str | None = None,
    day: str = "day3",
) -> Outcome:
    """Download the day's model (or `model`) unless a verified copy is there."""
    wanted = model or lab.cfg["models"][day]
    if lab.profile_name in OFFLINE:
        reason = OFFLINE[lab.profile_name]
        return Outcome(
            [skip("files_verified", *LABEL, reason)],
            reason,
            DownloadValues(model=wanted, profile=lab.profile_name, skipped_reason=reason),
        )
    if hub.looks_local(wanted):
        reason = f"local model path given ({wanted}): no download"
        return Outcome(
            [skip("files_verified", *LABEL, reason)],
            reason,
            DownloadValues(model=wanted, profile=lab.profile_name, skipped_reason=reason),
        )
    opts = options(lab, day, model, revision, source, endpoint, local_dir)
    manual = hub.manual_command(
        opts.repo_id,
        local_dir=opts.local_dir,
        revision=opts.revision,
        source=opts.source,
        endpoint=opts.endpoint,
    )
    token = hub.token_from_env(opts.source)
    known = DownloadValues(
        model=wanted,
        profile=lab.profile_name,
        repo_id=opts.repo_id,
        revision=opts.revision,
        source=opts.source,
        endpoint=opts.endpoint,
        local_dir=str(opts.local_dir),
        manual_command=manual,
    )
    try:
        plan = hub.plan_download(
            opts.repo_id, opts.revision, endpoint=opts.endpoint, token=token, source=opts.source
        )
        if hub.is_present(plan, opts.local_dir):
            return _present(plan, opts, manual, wanted, lab.profile_name)
        hub.check_disk(plan, opts.local_dir, opts.reserve_gib)
        from lab.ui.progress import byte_progress

        with byte_progress(lab.console, opts.repo_id) as update:
            result = hub.download(plan, opts.local_dir, token=token, progress=update)
        with lab.console.status(f"verifying SHA-256 of {len(plan.files)} files …"):
            verify_s = hub.verify(plan, opts.local_dir)
    except HubUnreachable as err:
        if hub.has_stamp(opts.local_dir, opts.repo_id):
            err.fix = (
                f"a verified copy is already at {opts.local_dir}: pass --model {opts.local_dir}"
            )
        err.values = known
        raise
    except LabError as err:
        err.values = known
        raise
    values = DownloadValues(
        model=wanted,
        profile=lab.profile_name,
        **dataclasses.asdict(result),
        verify_s=verify_s,
        already_present=False,
        manual_command=manual,
        served_model_name=opts.repo_id,
    )
    rate = f" ({result.mb_per_s:g} MB/s)" if result.mb_per_s else ""
    resumed = (
        f", {_size(result.bytes_resumed)} kept from an earlier run" if result.bytes_resumed else ""
    )
    actual = (
        f"downloaded {_size(result.bytes_fetched)} of {_size(result.bytes_total)} "
        f"({result.files_fetched}/{result.files} files) in {result.seconds:g} s{rate}"
        f"{resumed} from {result.endpoint}; {opts.repo_id}@{result.revision} = commit "
        f"{result.commit[:12]}; SHA-256 verified in {verify_s:g} s; {result.local_dir}"
    )
    crit = require(
        "files_verified", *LABEL, True, f"{result.files} files, {result.bytes_total} bytes"
    )
    return Outcome([crit], actual, values, command=manual)


def _present(
    plan: hub.DownloadPlan, opts: Options, manual: str, wanted: str, profile: str
) -> Outcome:
    nothing = hub.DownloadResult(
        plan.repo_id,
        plan.revision,
        plan.commit,
        plan.source,
        plan.endpoint,
        str(opts.local_dir),
        files=len(plan.files),
        files_fetched=0,
        bytes_total=plan.bytes_total,
        bytes_fetched=0,
        bytes_resumed=0,
        seconds=0.0,
        mb_per_s=None,
    )
    values = DownloadValues(
        model=wanted,
        profile=profile,
        **dataclasses.asdict(nothing),
        verify_s=None,
        already_present=True,
        manual_command=manual,
        served_model_name=plan.repo_id,
    )
    actual = (
        f"already present, verified: {len(plan.files)} files, {_size(plan.bytes_total)} "
        f"at {opts.local_dir} ({plan.repo_id}@{plan.revision} = commit {plan.commit[:12]}); "
        "nothing downloaded"
    )
    crits = [
        require(
            "files_verified", *LABEL, True, f"{len(plan.files)} files, {plan.bytes_total} bytes"
        ),
        skip("fetched", *FETCH_LABEL, "already present, verified"),
    ]
    return Outcome(crits, actual, values, command=manual)


def _size(n: int) -> str:
    """Bytes in decimal units, as the rate (MB/s) is."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
