"""Read an existing Ray cluster's nodes and resources (run in the vLLM env, which has ray
when vLLM was installed with it). Prints one JSON line:
{"ok": true, "nodes": [{"id", "host", "alive", "gpus", "cpus", "memory_gib"}],
 "resources": {"GPU": 4.0, "CPU": 64.0, …}}
or {"ok": false, "error": "…"} when ray is missing or no cluster answers.

Command line equivalent: `ray status`
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="auto")
    parser.add_argument("--deadline-s", type=float, default=60)
    args = parser.parse_args()
    try:
        import ray
    except ImportError as err:
        print(json.dumps({"ok": False, "error": f"ray is not installed in the vLLM env: {err}"}))
        return 0
    try:
        ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    except Exception as err:  # ConnectionError, RuntimeError: no cluster at that address
        print(json.dumps({"ok": False, "error": f"no Ray cluster at {args.address}: {err}"}))
        return 0
    try:
        nodes = [
            {
                "id": n.get("NodeID"),
                "host": n.get("NodeManagerAddress"),
                "alive": bool(n.get("Alive")),
                "gpus": float(n.get("Resources", {}).get("GPU", 0)),
                "cpus": float(n.get("Resources", {}).get("CPU", 0)),
                "memory_gib": float(n.get("Resources", {}).get("memory", 0)) / 2**30,
            }
            for n in ray.nodes()
        ]
        print(
            json.dumps(
                {
                    "ok": True,
                    "nodes": nodes,
                    "resources": {k: float(v) for k, v in ray.cluster_resources().items()},
                }
            )
        )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
