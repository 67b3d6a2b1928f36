"""Day 6: one model across several nodes with vLLM's own multi-node launcher (or an existing
Ray cluster). Steps: `nodes` (each node's devices), `node` (a headless node rank on this
host: `invoke node`), `serve-nodes` (the head, and on a local cluster every rank),
`node-share` (each node holds its share), the API test and benchmark watched for a node
that dies, and `compare-nodes` (one node with TP against several with PP).

The node ranks of a local cluster each get their own devices (lab.vllm.nodes.node_env).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lab.core import units
from lab.core.errors import LabError, ServerDied, ServerTimeout
from lab.core.fmt import fixed, num
from lab.core.units import mib_to_gib
from lab.record.runner import Criterion, Outcome, StepContext, check, require, skip
from lab.record.session import Lab
from lab.record.values import (
    CompareNodesValues,
    LevelSummary,
    NodeGpu,
    NodeInfo,
    NodeLayout,
    NodeProc,
    NodeShare,
    NodeShareValues,
    NodesSide,
    NodesValues,
    NodeValues,
    ServeNodesValues,
    ServeValues,
)
from lab.vllm import launch, nodes
from lab.vllm import process as server
from lab.vllm.nodes import Layout

T = TypeVar("T")

#: Seconds `invoke node` waits for the headless rank to say it launched its executor.
NODE_START_TIMEOUT_S = 180.0


def recorded_layout(layout: Layout) -> NodeLayout:
    return NodeLayout(
        nnodes=layout.nnodes,
        node_rank=layout.node_rank,
        master_addr=layout.master_addr,
        master_port=layout.master_port,
        tp=layout.tp,
        pp=layout.pp,
        dp=layout.dp,
        executor=layout.executor,
        per_node=layout.per_node,
        local=layout.local,
    )


def _ray_on_cpu(lab: Lab, layout: Layout) -> bool:
    return layout.executor == "ray" and not lab.has_gpu


def _ray_skip(key: str, zh: str, en: str) -> Criterion:
    return skip(key, zh, en, nodes.CPU_NO_RAY)


def read_ray(lab: Lab, layout: Layout) -> dict:
    """The Ray cluster's nodes and resources (scripts/ray_cluster.py in the vLLM env); one
    line when none answers or it cannot hold the sizes."""
    found, _ = lab.env.run_json_script(
        "ray_cluster.py", [], what="reading the Ray cluster", timeout_s=120
    )
    why = nodes.ray_fit(found, layout)
    if why is not None:
        raise LabError(why, evidence=str(found)[:1500])
    return found


def _our_pids(lab: Lab) -> set[int]:
    """Every process of the lab's head and local node ranks (their memory is the cluster's)."""
    states = [server.load(lab.state_path), *nodes.local_nodes(lab.state_path).values()]
    return {
        p.pid
        for s in states
        if s is not None and server.is_alive(s)
        for p in server.tracked_processes(s)
    }


# ------------------------------------------------------------------------------ nodes
def nodes_step(lab: Lab, ctx: StepContext, layout: Layout) -> Outcome:
    """Each node's devices. A local cluster: NVML per node rank's GPUs (memory the lab's
    own node processes hold counts as available); cpu: the cores each rank gets. Remote
    ranks are not measured from here (their own `invoke node` records them); with Ray,
    Ray's view of the whole cluster."""
    th = lab.cfg["thresholds"]["gpu_free_gib"]
    values = NodesValues(
        layout=recorded_layout(layout),
        free_gib_threshold=th,
        cluster_running=server.is_alive(server.load(lab.state_path)),
    )
    if layout.executor == "ray":
        if not lab.has_gpu:
            return Outcome(
                [
                    _ray_skip(
                        "ray_cluster", "Ray 集群可容纳 TP × PP", "the Ray cluster holds TP × PP"
                    )
                ],
                f"skipped: {nodes.CPU_NO_RAY}",
                values,
            )
        found = read_ray(lab, layout)
        live = [n for n in found["nodes"] if n.get("alive")]
        values.nodes = [
            NodeInfo(
                rank=i, host=str(n.get("host")), source="ray", ready_gpus=int(n.get("gpus") or 0)
            )
            for i, n in enumerate(live)
        ]
        gpus = float(found.get("resources", {}).get("GPU", 0))
        crits = [
            check(
                "ray_nodes", "Ray 集群存活节点数", "live Ray nodes", len(live), ">=", layout.nnodes
            ),
            check("ray_gpus", "Ray 集群 GPU 数", "Ray cluster GPUs", gpus, ">=", layout.world_size),
        ]
        actual = "; ".join(f"{n.host}: {n.ready_gpus} GPU" for n in values.nodes)
        return Outcome(crits, f"Ray: {actual}", values, command="ray status")
    if lab.has_gpu:
        return _nodes_gpu(lab, layout, values, th)
    return _nodes_cpu(lab, layout, values)


def _ranks_here(layout: Layout) -> list[int]:
    return list(range(layout.nnodes)) if layout.local else [layout.node_rank]


def _before_start(lab: Lab) -> dict[int, NodeInfo]:
    """The GPUs of each rank as the last `nodes` step measured them with no cluster running
    (`invoke cluster` records it before starting): used when NVML cannot tell which processes
    on a GPU are ours (their pids are not visible in this pid namespace)."""
    for row in reversed(lab.book.steps()):
        v = row["values"]
        if (
            row["key"] == "nodes"
            and isinstance(v, NodesValues)
            and not v.cluster_running
            and any(n.source == "nvml" for n in v.nodes)
        ):
            return {n.rank: n for n in v.nodes}
    return {}


def _nodes_gpu(lab: Lab, layout: Layout, values: NodesValues, th: float) -> Outcome:
    from lab.measure import nvml

    found = {g.index: g for g in nvml.query_gpus()}
    ours = _our_pids(lab)
    seen_ours = any(p.pid in ours for g in found.values() for p in g.processes)
    before = _before_start(lab) if values.cluster_running and not seen_ours else {}
    crits: list[Criterion] = []
    parts = []
    for rank in range(layout.nnodes):
        if rank not in _ranks_here(layout):
            values.nodes.append(NodeInfo(rank=rank, host="remote", source="remote"))
            crits.append(
                skip(
                    f"node{rank}_gpus",
                    f"节点 {rank} 的可用 GPU 数",
                    f"node {rank}: GPUs available",
                    "another host: run `invoke gpus` there (its `invoke node` records it)",
                    ">=",
                    layout.per_node,
                )
            )
            continue
        idx = nodes.devices(layout, rank) if layout.local else list(range(layout.per_node))
        gpus = []
        for i in idx:
            g = found.get(i)
            if g is None:
                gpus.append(NodeGpu(index=i))
                continue
            mine = sum(p.used_mib or 0 for p in g.processes if p.pid in ours)
            gpus.append(NodeGpu(i, g.name, g.memory_total_mib, g.memory_free_mib, mine))
        if rank in before:  # measured before the cluster started (see _before_start)
            gpus = before[rank].gpus
            values.before_start = True
        ready = sum(
            1
            for g in gpus
            if g.memory_free_mib is not None
            and mib_to_gib(g.memory_free_mib + (g.memory_ours_mib or 0)) > th
        )
        values.nodes.append(
            NodeInfo(
                rank=rank,
                host=layout.master_addr if rank == 0 else "this host",
                source="nvml",
                devices=idx,
                gpus=gpus,
                ready_gpus=ready,
            )
        )
        crits.append(
            check(
                f"node{rank}_gpus",
                f"节点 {rank} 空闲显存 > {th:g} GiB 的 GPU 数（本实验室节点进程占用的计为可用）",
                f"node {rank}: GPUs with > {th:g} GiB free (the lab's own node "
                "processes' memory counted as available)",
                ready,
                ">=",
                layout.per_node,
            )
        )
        parts.append(
            f"node {rank}: "
            + ", ".join(
                f"GPU{g.index} {fixed(mib_to_gib(g.memory_free_mib))} GiB free"
                + (
                    f" (+{fixed(mib_to_gib(g.memory_ours_mib))} GiB ours)"
                    if g.memory_ours_mib
                    else ""
                )
                for g in gpus
            )
        )
    note = " (measured before the cluster started)" if values.before_start else ""
    return Outcome(
        crits,
        "; ".join(parts) + note,
        values,
        command="nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv",
    )


def _nodes_cpu(lab: Lab, layout: Layout, values: NodesValues) -> Outcome:
    from lab.measure import procstats

    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    running = nodes.local_nodes(lab.state_path)
    head = server.load(lab.state_path)
    parts = []
    for rank in _ranks_here(layout):
        state = head if rank == 0 else running.get(rank)
        rss = procstats.tree_rss_mib(state.pid) if state and server.is_alive(state) else None
        own = nodes.devices(layout, rank) if layout.local else list(range(layout.per_node))
        values.nodes.append(
            NodeInfo(
                rank=rank,
                host="this host",
                source="cores",
                devices=own,
                cores_available=cores,
                rss_mib=rss,
            )
        )
        parts.append(
            f"node {rank}: core(s) {','.join(map(str, own))}"
            + (f", process tree RSS {fixed(rss, 0)} MiB" if rss is not None else "")
        )
    needed = layout.per_node * len(_ranks_here(layout))
    crits = [
        check(
            "cores",
            "本机 CPU 核数（cpu 配置：每个节点 rank 用自己的核，不是 GPU）",
            "CPU cores on this host (cpu profile: each node rank its own cores, not GPUs)",
            cores,
            ">=",
            needed,
        ),
        skip(
            "node_gpus",
            "每个节点空闲显存足够的 GPU 数",
            "GPUs with enough free memory per node",
            lab.no_gpu_reason(),
            ">=",
            layout.per_node,
        ),
    ]
    return Outcome(
        crits,
        f"cpu profile ({cores} cores, not GPUs): " + "; ".join(parts),
        values,
        command="nproc; ps -o rss= -p PID  # per node rank",
    )


# ------------------------------------------------------------------------------ serve-nodes
def _proc(
    rank: int,
    state: server.ServerState | None,
    env: dict[str, str] | None = None,
    headless: bool = True,
) -> NodeProc:
    return NodeProc(
        rank=rank,
        pid=state.pid if state else None,
        alive=server.is_alive(state),
        headless=headless,
        command=launch.shell_line(state.argv, env, python_as="python") if state else "",
        log_path=state.log_path if state else None,
        env=dict(env or {}),
    )


def _local_node_check(lab: Lab, during: str) -> Callable[[], None]:
    """Raises ServerDied naming the first local node rank found dead."""
    ranks = nodes.local_nodes(lab.state_path)

    def check_nodes() -> None:
        for rank in nodes.dead_ranks(ranks):
            state = ranks[rank]
            from lab.core.text import tail_file

            raise ServerDied(
                f"node rank {rank} (pid {state.pid}) {nodes._how(state)} {during}; "
                "last log lines below",
                evidence=tail_file(state.log_path, 20),
            )

    return check_nodes


def serve_nodes(
    lab: Lab,
    ctx: StepContext,
    layout: Layout,
    model: str | None = None,
    start_local_ranks: bool = True,
    adopt: bool = True,
) -> Outcome:
    """Serve across nodes. A running local cluster with this layout is verified, not restarted
    (`invoke cluster` then `invoke day6`). Otherwise the head starts here; on a local cluster
    (`start_local_ranks`) every other rank first, each on its own devices. The head waits until
    the engine is up across all nodes (/health = 200)."""
    values = ServeNodesValues(layout=recorded_layout(layout))
    if _ray_on_cpu(lab, layout):
        values.skipped_reason = nodes.CPU_NO_RAY
        return Outcome(
            [_ray_skip("ray_serve", "用 Ray 跨节点部署", "served across nodes with Ray")],
            f"skipped: {nodes.CPU_NO_RAY}",
            values,
        )
    if adopt:
        found = _adopt(lab, ctx, layout, values)
        if found is not None:
            return found
    if layout.executor == "ray":
        read_ray(lab, layout)  # one line when the cluster cannot hold the sizes
    server.stop(lab.state_path)
    starts_ranks = start_local_ranks and layout.local and layout.executor == "mp"
    if starts_ranks:  # else ranks started by `invoke node` (maybe on this host) are kept
        nodes.stop_local(lab.state_path)
    from lab.checklist.steps.serve import start_and_wait

    prof = lab.profile("day4", tp=layout.tp, model=model)
    node_envs: dict[int, dict[str, str]] = {}
    if starts_ranks:
        from lab.vllm import models

        lab.env.probe()
        models.ensure_model(lab.env, prof)
        for rank in range(1, layout.nnodes):
            node_envs[rank] = _start_rank(lab, ctx, layout.for_rank(rank), prof)
    head_env = (
        nodes.node_env(layout.for_rank(0), 0, has_gpu=lab.has_gpu)
        if layout.executor == "mp"
        else {}
    )
    nodes.save_cluster(
        lab.state_path, layout, model=model, profile=lab.profile_name, local_ranks=sorted(node_envs)
    )
    try:
        out = start_and_wait(
            lab,
            ctx,
            "day4",
            layout.tp,
            model,
            extra=layout.flags(0),
            argv_of=nodes.cli_argv,
            env_of=lambda env: {**env, **head_env},
            while_waiting=_local_node_check(lab, "while the head was starting"),
        )
    except ServerTimeout as err:
        alive = nodes.local_nodes(lab.state_path)
        missing = [
            r for r in range(1, layout.nnodes) if r not in alive or not server.is_alive(alive[r])
        ]
        if starts_ranks:
            nodes.stop_local(lab.state_path)
        if layout.executor == "mp" and missing:
            err.args = (
                nodes.missing_ranks_message(
                    layout,
                    missing,
                    lab.cfg["startup_timeout_s"],
                    profile=lab.profile_name,
                    model=model,
                    python=lab.cfg["python"] or None,
                ),
            )
        raise
    except LabError:
        if starts_ranks:
            nodes.stop_local(lab.state_path)
        raise
    assert isinstance(out.values, ServeValues)
    values.serve = out.values
    head = server.require_running(lab.state_path)
    values.nodes = [
        _proc(0, head, {**launch.server_env(prof, layout.tp), **head_env}, headless=False)
    ]
    values.nodes += [
        _proc(r, s, node_envs.get(r)) for r, s in sorted(nodes.local_nodes(lab.state_path).items())
    ]
    out.criteria += _across_criteria(layout, values)
    out.values = values
    out.command = _commands(values, layout, lab)
    out.actual = f"across {layout.nnodes} node(s) ({_shape(layout)}): {out.actual}"
    return out


def _shape(layout: Layout) -> str:
    return (
        f"TP={layout.tp}, PP={layout.pp}"
        + (f", DP={layout.dp}" if layout.dp > 1 else "")
        + f", executor {layout.executor}"
    )


def _commands(values: ServeNodesValues, layout: Layout, lab: Lab) -> str:
    lines = [
        f"# node {p.rank}{' (headless)' if p.headless else ' (API server)'}\n{p.command}"
        for p in values.nodes
    ]
    if not layout.local:
        lines += [
            f"# node {r} (another host)\n"
            + nodes.node_command(
                layout, r, profile=lab.profile_name, python=lab.cfg["python"] or None
            )
            for r in range(1, layout.nnodes)
        ]
    return "\n".join(lines)


def _across_criteria(layout: Layout, values: ServeNodesValues) -> list[Criterion]:
    local = [p for p in values.nodes if p.headless]
    crits = [
        require(
            "engine_across_nodes",
            f"引擎在 {layout.nnodes} 个节点上就绪（/health = 200）",
            f"the engine is up across {layout.nnodes} node(s) (/health = 200)",
            values.serve is not None and values.serve.ready_s is not None,
            layout.nnodes,
        )
    ]
    if local:
        alive = sum(1 for p in local if p.alive)
        crits.append(
            check(
                "local_ranks_alive",
                "本机启动的其他节点 rank 仍在运行",
                "node ranks started on this host still running",
                alive,
                ">=",
                len(local),
            )
        )
    return crits


def _adopt(lab: Lab, ctx: StepContext, layout: Layout, values: ServeNodesValues) -> Outcome | None:
    """The running local cluster, verified, when it has this layout; else None."""
    from lab.vllm import api

    saved = nodes.load_cluster(lab.state_path)
    head = server.load(lab.state_path)
    if saved is None or head is None or not server.is_alive(head) or saved[0] != layout:
        return None
    try:
        healthy = (
            api.request("GET", f"{lab.url}/health", api_key=lab.api_key, timeout_s=10).status_code
            == 200
        )
    except LabError:
        healthy = False
    facts = next((s["facts"] for s in lab.book.servers() if s["id"] == head.server_id), None)
    rows = {s["id"]: s for s in lab.book.servers()}
    head_row = rows.get(head.server_id)
    values.adopted = True
    values.serve = facts if isinstance(facts, ServeValues) else None
    values.nodes = [_proc(0, head, head_row["env"] if head_row else None, headless=False)]
    for rank, state in sorted(nodes.local_nodes(lab.state_path).items()):
        row = rows.get(state.server_id or -1)
        values.nodes.append(_proc(rank, state, row["env"] if row else None))
    crits = [
        require(
            "health",
            "头节点 /health 返回 200",
            "the head's /health answers 200",
            healthy,
            200 if healthy else None,
            reason="/health did not answer 200",
        ),
        *_across_criteria(layout, values),
    ]
    ready = values.serve.ready_s if values.serve else None
    actual = (
        f"the running cluster (started by `invoke cluster`, ready after {fixed(ready)} s) "
        f"across {layout.nnodes} node(s), {_shape(layout)}: "
        + ", ".join(
            f"node {p.rank} pid {p.pid} {'alive' if p.alive else 'DEAD'}" for p in values.nodes
        )
    )
    return Outcome(crits, actual, values, command=_commands(values, layout, lab))


def _start_rank(lab: Lab, ctx: StepContext, layout: Layout, prof: launch.Profile) -> dict[str, str]:
    """Start headless node rank `layout.node_rank` on this host; return the variables set."""
    rank = layout.node_rank
    argv = nodes.headless_argv(nodes.cli_argv(lab.serve_argv(prof, layout.tp, layout.flags(rank))))
    env = {
        **launch.server_env(prof, layout.tp),
        **nodes.node_env(layout, rank, has_gpu=lab.has_gpu),
    }
    log_path = lab.logbook_dir / "logs" / f"node{rank}-{ctx.run_id}-{ctx.step_id}.log"
    server_id = lab.book.add_server(
        run_id=ctx.run_id,
        step_id=ctx.step_id,
        profile=prof.name,
        model=prof.served_model_name or prof.model,
        tp=layout.tp,
        argv=launch.redact_argv(argv),
        env=launch.redact_env(env),
        host=layout.master_addr,
        port=0,
        log_path=str(log_path),
        started_at=time.time(),
    )
    state = nodes.start_node(
        argv,
        state_path=lab.state_path,
        rank=rank,
        log_path=log_path,
        model=prof.model,
        tp=layout.tp,
        profile=prof.name,
        env=lab.env.child_environ({**os.environ, **env}),
        run_id=ctx.run_id,
        server_id=server_id,
    )
    lab.book.update_server(server_id, pid=state.pid)
    lab.console.print(
        f"node rank {rank}: pid {state.pid}, "
        f"{' '.join(f'{k}={v}' for k, v in env.items())} (log: {log_path})"
    )
    return env


# ------------------------------------------------------------------------------ node
def node_step(lab: Lab, ctx: StepContext, layout: Layout, model: str | None = None) -> Outcome:
    """`invoke node`: start this host's headless node rank; it waits for the head. Passes when
    it launched its executor and still runs."""
    if layout.node_rank == 0:
        raise LabError(
            "node rank 0 is the head: run `invoke serve --nnodes N --node-rank 0 "
            "--master-addr ADDR` (or `invoke day6`) there"
        )
    if _ray_on_cpu(lab, layout):
        return Outcome(
            [_ray_skip("node", "启动节点", "node started")],
            f"skipped: {nodes.CPU_NO_RAY}",
            NodeValues(layout=recorded_layout(layout)),
        )
    if layout.executor == "ray":
        raise LabError(
            "with --executor ray the other nodes join Ray, not vLLM: run "
            f"`ray start --address={layout.master_addr}:6379` there"
        )
    from lab.vllm import models

    prof = lab.profile("day4", tp=layout.tp, model=model)
    lab.env.probe()
    models.ensure_model(lab.env, prof)
    models.check_model(prof)
    rank = layout.node_rank
    server.stop(nodes.node_state_path(lab.state_path, rank))
    started = time.monotonic()
    env = _start_rank(lab, ctx, layout, prof)
    state = nodes.local_nodes(lab.state_path)[rank]
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    check_alive = _local_node_check(lab, "while starting")
    with lab.console.status(f"starting node rank {rank} (headless) …"):
        while not nodes.node_started(state) and time.monotonic() < deadline:
            check_alive()
            time.sleep(1.0)
    check_alive()
    launched = nodes.node_started(state)
    values = NodeValues(
        layout=recorded_layout(layout),
        node=_proc(rank, state, env),
        started_s=round(time.monotonic() - started, 2),
        head_command=(
            f"invoke serve --nnodes {layout.nnodes} --node-rank 0 "
            f"--master-addr {layout.master_addr} --master-port "
            f"{layout.master_port} --tp {layout.tp} --pp {layout.pp}"
        ),
    )
    crits = [
        require(
            "launched",
            "headless 节点已启动执行器（等待头节点）",
            "the headless rank launched its executor (waiting for the head)",
            launched,
            f"{values.started_s} s",
            reason="no 'headless multiproc executor' line in its log",
        ),
        require(
            "alive",
            "节点进程仍在运行",
            "the node's process still runs",
            server.is_alive(state),
            state.pid,
        ),
    ]
    actual = (
        f"node rank {rank} headless, pid {state.pid}, launched after {values.started_s} s; "
        f"waiting for the head at {layout.master_addr}:{layout.master_port}: "
        f"run `{values.head_command}` there"
    )
    return Outcome(crits, actual, values, command=values.node.command if values.node else None)


# ------------------------------------------------------------------------------ node-share
def node_share(lab: Lab, ctx: StepContext) -> Outcome:
    """Each node rank holds its share: GPU — NVML used memory on each rank's GPUs; cpu — the
    RSS of each rank's `VLLM::Worker_*` processes (labelled: process memory, not GPU
    memory). Passes when (max − min) / max < thresholds.tp_balance_pct."""
    from lab.measure import procstats

    head = server.require_running(lab.state_path)
    saved = nodes.load_cluster(lab.state_path)
    if saved is None:
        raise LabError(
            "no multi-node server is running: run `invoke cluster --nnodes 2` "
            "(or `invoke serve --nnodes N …`) first"
        )
    layout = saved[0]
    if _ray_on_cpu(lab, layout):
        return Outcome(
            [_ray_skip("spread_pct", "各节点显存占用差异", "spread of memory over nodes")],
            f"skipped: {nodes.CPU_NO_RAY}",
            NodeShareValues(),
        )
    th = lab.cfg["thresholds"]["tp_balance_pct"]
    shares: list[NodeShare] = []
    states = {0: head, **nodes.local_nodes(lab.state_path)}
    if lab.has_gpu:
        from lab.measure import nvml

        used = {g.index: g.memory_used_mib for g in nvml.query_gpus()}
        for rank in _ranks_here(layout):
            idx = nodes.devices(layout, rank) if layout.local else list(range(layout.per_node))
            vals = [used.get(i) for i in idx]
            total = None if any(v is None for v in vals) else sum(v or 0 for v in vals)
            shares.append(NodeShare(rank, total, devices=idx))
        source = "nvml"
    else:
        for rank, state in sorted(states.items()):
            workers = procstats.vllm_workers(state.pid) if server.is_alive(state) else []
            shares.append(
                NodeShare(
                    rank,
                    sum(w["rss_mib"] for w in workers) if workers else None,
                    pids=[w["pid"] for w in workers],
                    titles=[w["title"] for w in workers],
                )
            )
        source = "process_rss"
    figures = units.balance([s.used_mib for s in shares])
    spread = figures["spread_pct"]
    measured = None if spread is None else round(spread, 2)
    values = NodeShareValues(
        source=source,
        nodes=shares,
        threshold_pct=th,
        max_mib=figures["max"],
        min_mib=figures["min"],
        spread_pct=spread,
    )
    crits = [
        check(
            "nodes_measured",
            "测到的节点数",
            "nodes measured",
            figures["n"],
            ">=",
            len(_ranks_here(layout)) if layout.local else 1,
        )
    ]
    if not layout.local:
        crits.append(
            skip(
                "spread_pct",
                "各节点显存占用差异",
                "spread of memory over nodes",
                "other nodes are other hosts: compare their `nvidia-smi` by hand",
                "<",
                th,
                "%",
            )
        )
    elif lab.has_gpu:
        crits.append(
            check(
                "spread_pct",
                "各节点显存占用差异",
                "spread of GPU memory over nodes",
                measured,
                "<",
                th,
                "%",
            )
        )
    else:
        crits += [
            check(
                "worker_rss_spread_pct",
                "各节点 worker 进程 RSS 差异（cpu 配置：进程内存，不是显存）",
                "spread of the nodes' worker RSS (cpu profile: process memory, not GPU memory)",
                measured,
                "<",
                th,
                "%",
            ),
            skip(
                "spread_pct",
                "各节点显存占用差异",
                "spread of GPU memory over nodes",
                lab.no_gpu_reason(),
                "<",
                th,
                "%",
            ),
        ]
    label = "GPU memory used" if lab.has_gpu else "cpu profile, worker RSS (not GPU memory)"
    actual = (
        f"{label}: "
        + ", ".join(f"node {s.rank} {fixed(s.used_mib, 0)} MiB" for s in shares)
        + f"; spread {'n/a' if spread is None else f'{spread:.2f} %'} (threshold {th:g} %)"
    )
    command = (
        "nvidia-smi --query-gpu=index,memory.used --format=csv  # on every node"
        if lab.has_gpu
        else "ps -eo pid,rss,args | grep 'VLLM::Worker_PP'"
    )
    return Outcome(crits, actual, values, command=command)


# ------------------------------------------------------------------------------ the watch
def watched(fn: Callable[..., T]) -> Callable[..., T]:
    """Run step `fn` while the local node ranks are watched: when one dies the head is
    stopped at once (its requests would hang: a pipeline with a missing stage never answers)
    and the step fails with one line naming the rank."""

    @functools.wraps(fn)
    def run(lab: Lab, ctx: StepContext, *args: Any, **kwargs: Any) -> T:
        def on_death(_death: nodes.NodeDeath) -> None:
            server.stop(lab.state_path, grace_s=5)

        with nodes.watching(lab.state_path, on_death) as watch:
            try:
                out = fn(lab, ctx, *args, **kwargs)
            except LabError as err:
                death = watch.check()
                if death is None:
                    raise
                err.args = (nodes.death_line(death, "during the step") + f" ({err})",)
                err.evidence = death.log_tail or err.evidence
                raise
            death = watch.check()
        if death is not None:
            raise ServerDied(nodes.death_line(death, "during the step"), evidence=death.log_tail)
        return out

    return run


# ------------------------------------------------------------------------------ compare-nodes
def compare_nodes(lab: Lab, ctx: StepContext, concurrency: int | None = None) -> Outcome:
    """The same model across nodes (the running cluster, PP) and on one node (TP = TP × PP of
    the cluster, this host's devices), one benchmark level each: startup, TTFT, TPOT,
    throughput. The one-node server is left running (the day stops it)."""
    from lab.checklist.steps.bench import sweep_plan
    from lab.measure import bench

    saved = nodes.load_cluster(lab.state_path)
    head = server.require_running(lab.state_path)
    if saved is None:
        raise LabError("no multi-node server is running: run `invoke cluster --nnodes 2` first")
    layout, extra = saved
    c = concurrency or lab.cfg["bench"]["compare_tp_concurrency"]
    plan = bench.BenchPlan.from_cfg(lab.cfg)
    values = CompareNodesValues(concurrency=c, plan=sweep_plan(plan), profile=lab.profile_name)
    facts = next((s["facts"] for s in lab.book.servers() if s["id"] == head.server_id), None)
    across = NodesSide(
        f"PP={layout.pp} × TP={layout.tp}, {layout.nnodes} nodes",
        layout.tp,
        layout.pp,
        layout.nnodes,
        ready_s=facts.ready_s if isinstance(facts, ServeValues) else None,
        command=launch.shell_line(head.argv, None, python_as="python"),
    )
    across.summary = watched(_level)(lab, ctx, c, plan, f"nodes{layout.nnodes}")
    values.sides.append(across)
    world = layout.world_size
    if not layout.local:
        return _one_side_skipped(
            values,
            f"the other nodes are other hosts: TP={world} on this "
            "host alone is compared on a host with that many GPUs",
        )
    server.stop(lab.state_path)
    nodes.stop_local(lab.state_path)
    from lab.checklist.steps.serve import start_and_wait

    try:
        one = start_and_wait(lab, ctx, "day4", world, extra.get("model"))
    except LabError as err:
        err.values = values
        raise
    one_state = server.require_running(lab.state_path)
    side = NodesSide(
        f"TP={world}, 1 node",
        world,
        1,
        1,
        ready_s=one.values.ready_s if isinstance(one.values, ServeValues) else None,
        command=one.command,
    )
    side.summary = _level(lab, ctx, c, plan, "node1")
    values.sides.append(side)
    if not server.is_alive(one_state):
        raise ServerDied("the one-node server died during its level")
    crits = [
        require(
            f"{key}_measured",
            f"{s.label} 的档位测得且无失败",
            f"{s.label}: level measured with no failure",
            (s.summary.completed or 0) > 0 and not s.summary.failed,
            f"{s.summary.completed} ok, {s.summary.failed} failed",
            reason="requests failed",
        )
        for key, s in (("nodes", across), ("one_node", side))
    ]
    actual = "; ".join(
        f"{s.label}: ready {fixed(s.ready_s)} s, TTFT p50 {fixed(s.summary.ttft_ms.median)} ms, "
        f"TPOT p50 {fixed(s.summary.tpot_ms.median, 2)} ms, {fixed(s.summary.output_tok_s)} out tok/s"
        for s in values.sides
    )
    actual += (
        f"; across nodes ÷ one node (c={c}): throughput ×{num(values.throughput_ratio)}, "
        f"TPOT ×{num(values.tpot_ratio)}"
    )
    return Outcome(crits, actual, values, command=f"{across.command}\n{side.command}")


def _one_side_skipped(values: CompareNodesValues, reason: str) -> Outcome:
    s = values.sides[0]
    return Outcome(
        [
            require(
                "nodes_measured",
                f"{s.label} 的档位测得",
                f"{s.label}: level measured",
                (s.summary.completed or 0) > 0 and not s.summary.failed,
                s.summary.completed,
            ),
            skip("one_node_measured", "单节点的档位测得", "one node: level measured", reason),
        ],
        f"{s.label}: {fixed(s.summary.output_tok_s)} out tok/s; one node: {reason}",
        values,
    )


def _level(lab: Lab, ctx: StepContext, c: int, plan: Any, tag: str) -> LevelSummary:
    from lab.measure import bench, prompts
    from lab.ui.progress import progress_bar

    state = server.require_running(lab.state_path)
    model = state.served_model_name or state.model
    pool = prompts.token_pool(lab.url, model, api_key=lab.api_key)
    book = lab.book
    with progress_bar(lab.console) as progress:
        task = progress.add_task(f"{tag}, c={c}", total=plan.num_requests)
        row = bench.run_level(
            lab.url,
            model,
            plan,
            c,
            pool,
            phase="compare-nodes",
            level=f"{tag}-c{c}",
            seed=ctx.step_id,
            api_key=lab.api_key,
            record=lambda phase, rec: book.add_request(
                ctx.run_id, ctx.step_id, phase, rec.to_dict()
            ),
            advance=lambda: progress.advance(task),
        )
    if not server.is_alive(state):
        raise ServerDied(f"the server died during the {tag} level", evidence=None)
    return LevelSummary.from_summary(row)
