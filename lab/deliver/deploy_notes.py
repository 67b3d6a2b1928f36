"""部署命令笔记 (deployment notes): for every vLLM server the learner actually started (the
`servers` table), the exact command and what each flag and environment variable in it does
— its default, and its effect on memory and on speed — plus a reference of the flags in
seeds 001 and 002 that were not used.

The parameter knowledge is data, in Chinese and English (lab.explain.flags).

API keys never appear: argv is stored redacted, and is redacted again here (and any
secret-looking flag or environment value as well), in case a row holds one anyway.

Command line equivalent: `python -m vllm.entrypoints.openai.api_server --help`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.deliver.gather import LabData
from lab.deliver.jinja import fmt_ts, render_to
from lab.explain.flags import ALIASES, ENV_VARS, PARAMS, RECIPES, NoteText
from lab.record.queries import Server
from lab.record.values import DownloadValues, ServeValues
from lab.vllm.launch import redact_argv, redact_env, shell_line

# ------------------------------------------------------------------------------------ redaction
# Stored argv is redacted already; redacting again here guards rows written by older
# versions or by hand. One mechanism: lab.vllm.process's.


# ------------------------------------------------------------------------------------ parsing


def canonical(flag: str) -> tuple[str, bool]:
    """("--tensor-parallel-size", True) for "-tp", "--tensor_parallel_size"; a
    "--no-enable-x" flag gives ("--enable-x", False)."""
    flag = ALIASES.get(flag, flag)
    if flag.startswith("--"):
        flag = "--" + flag[2:].replace("_", "-")
    if flag.startswith("--no-") and ("--" + flag[5:]) in PARAMS:
        return "--" + flag[5:], False
    return flag, True


def parse_flags(argv: list[str]) -> list[dict]:
    """The flags of a vLLM command: [{flag, value, raw}] in order. The interpreter and
    `-m module` (or `vllm serve`) are skipped; a positional model counts as --model."""
    args = list(argv)
    i = 0
    if "-m" in args[:3]:
        i = args.index("-m") + 2
    elif "serve" in args[:3]:
        i = args.index("serve") + 1
    else:
        i = 1
    out = []
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            out.append({"flag": "--model", "value": arg, "raw": arg})
            i += 1
            continue
        raw = arg
        if "=" in arg:
            arg, value = arg.split("=", 1)
            i += 1
        elif (
            i + 1 < len(args)
            and not args[i + 1].startswith("--")
            and not (
                args[i + 1].startswith("-") and len(args[i + 1]) > 1 and args[i + 1][1].isalpha()
            )
        ):
            value = args[i + 1]
            i += 2
        else:
            value = None
            i += 1
        flag, positive = canonical(arg)
        if value is None:
            value = "true" if positive else "false"
        out.append({"flag": flag, "value": value, "raw": raw})
    return out


# ------------------------------------------------------------------------------------ render
@dataclass
class FlagRow:
    """One flag (or environment variable) of a started server, explained when known."""

    flag: str
    value: str
    alias: str | None  # the spelling used, when it is not the canonical one
    note: NoteText | None


@dataclass
class ServerNotes:
    id: int
    run_id: int | None
    profile: str | None
    model: str | None
    tp: int | None
    host: str | None
    port: int | None
    started_at: float | None
    ready_s: float | None
    command: str
    flags: list[FlagRow]
    envs: list[FlagRow]
    facts: ServeValues | None  # shown when the start recorded its KV-cache capacity
    block_size: int | None  # the block size in effect (from /metrics)
    #: The start's failure and the known fix it carried, when there was one (`--fix auto`).
    life: ServeValues | None = None
    #: Day 6 (issue 12): the node rank this command started, of how many (None: one node),
    #: and every node's command of the same multi-node server (on the head's entry).
    node_rank: int | None = None
    nnodes: int | None = None
    headless: bool = False
    node_commands: list[tuple[int, bool, str]] = field(default_factory=list)


def server_notes(server: Server, lang: str) -> ServerNotes:
    """One started server: its command, each flag explained, each env var explained."""
    argv = redact_argv(server.argv)
    env = redact_env(server.env)
    flags = []
    for f in parse_flags(argv):
        known = PARAMS.get(f["flag"])
        alias = (
            f["raw"].split("=")[0] if f["raw"] != f["flag"] and f["raw"].startswith("-") else None
        )
        flags.append(FlagRow(f["flag"], f["value"], alias, known.text(lang) if known else None))
    envs = [
        FlagRow(k, v, None, ENV_VARS[k].text(lang) if k in ENV_VARS else None)
        for k, v in sorted(env.items())
    ]
    facts = server.facts if server.facts and server.facts.kv_cache_tokens is not None else None
    given = {f.flag: f.value for f in flags}
    nnodes = int(given["--nnodes"]) if str(given.get("--nnodes", "")).isdigit() else None
    return ServerNotes(
        server.id,
        server.run_id,
        server.profile,
        server.model,
        server.tp,
        server.host,
        server.port,
        server.started_at,
        server.ready_s,
        shell_line(argv, server.env),
        flags,
        envs,
        facts,
        server.facts.block_size if server.facts else None,
        life=server.facts if server.facts and (server.facts.failure or server.facts.fix) else None,
        node_rank=int(given.get("--node-rank", 0)) if nnodes else None,
        nnodes=nnodes,
        headless=given.get("--headless") == "true",
    )


def downloads(data: LabData) -> list[DownloadValues]:
    """The latest download of each repository that reached the hub (a skipped download
    fetched nothing and has no command to repeat), oldest first: the deploy notes show the
    command a learner would type by hand beside what the lab did."""
    latest: dict[str, DownloadValues] = {}
    for step in data.records.steps:
        v = step.values
        if isinstance(v, DownloadValues) and v.repo_id and v.manual_command and v.commit:
            latest.pop(v.repo_id, None)
            latest[v.repo_id] = v
    return list(latest.values())


def _with_node_commands(servers: list[ServerNotes], rows: list[Server]) -> None:
    """On each multi-node head: the command of every node rank started with it (the rows of
    the same step), rank order."""
    step_of = {r.id: (r.run_id, r.step_id) for r in rows}
    for head in servers:
        if not head.nnodes or head.headless:
            continue
        same = [s for s in servers if s.nnodes and step_of.get(s.id) == step_of.get(head.id)]
        head.node_commands = sorted((s.node_rank or 0, s.headless, s.command) for s in same)


def deploy_view(data: LabData, lang: str) -> dict[str, Any]:
    """What templates/deploy-notes.md.j2 shows."""
    servers = [server_notes(s, lang) for s in data.records.servers]
    _with_node_commands(servers, data.records.servers)
    used = {f.flag for s in servers for f in s.flags}
    used_env = {e.flag for s in servers for e in s.envs}
    return {
        "lang": lang,
        "servers": servers,
        "downloads": downloads(data),
        "generated_at": fmt_ts(data.now),
        "reference": [(flag, note.text(lang), flag in used) for flag, note in PARAMS.items()],
        "env_reference": [
            (name, note.text(lang), name in used_env) for name, note in ENV_VARS.items()
        ],
        # the advanced features' commands (`invoke experiment lora|speculative|…`)
        "recipes": [r.text(lang) for r in RECIPES],
    }


def cell(text: Any) -> str:
    """Our own (trusted) note text inside a markdown table cell: only "|" and newlines
    would break the row. DB text goes through lab.core.escape.md_inline instead."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_deploy_notes(data: LabData, lang: str, out_dir: Path) -> Path:
    """Render `logbook/deploy-notes.md` (Command line equivalent: `invoke report`)."""
    return render_to(
        out_dir, "deploy-notes.md", "deploy-notes.md.j2", cell=cell, **deploy_view(data, lang)
    )
