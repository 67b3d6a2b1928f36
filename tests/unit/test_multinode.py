"""Day 6 (issue 12): one model across several nodes. The layout and its one-line errors, each
node rank's command and devices, the missing-rank line, the Ray fit, the node watch (a real
short-lived process dies and is seen), the watched step's one line, stop of every local
node, the deploy notes' node commands and the Day 6 data (seeds, types, template)."""
from __future__ import annotations

import sys
import time

import pytest

from lab.core.errors import ConfigError, LabError, ServerDied
from lab.vllm import nodes
from lab.vllm import process as server
from lab.vllm.nodes import Layout

PY = "/venv/bin/python"


def test_layout_defaults_pp_across_two_nodes():
    layout = Layout(nnodes=2, pp=2).validate()
    assert layout.world_size == 2 and layout.per_node == 1 and layout.local
    assert layout.flags(0) == ["--pipeline-parallel-size", "2", "--nnodes", "2", "--node-rank", "0",
                               "--master-addr", "127.0.0.1", "--master-port", "29555"]
    assert layout.flags(1)[-1] == "--headless" and layout.flags(1)[5] == "1"


def test_layout_tp_within_node_pp_across():
    layout = Layout(nnodes=2, tp=2, pp=2, master_addr="10.0.0.1").validate()
    assert layout.per_node == 2 and not layout.local
    assert nodes.devices(layout, 1) == [2, 3]
    # a real host uses its own first per_node GPUs
    assert nodes.node_env(layout.for_rank(1), 1, has_gpu=True) == {"CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.parametrize("kwargs, words", [
    ({"nnodes": 2, "node_rank": 2}, "--node-rank must be between 0 and 1"),
    ({"nnodes": 2, "pp": 3}, "cannot be split evenly over 2 nodes"),
    ({"nnodes": 2, "pp": 2, "executor": "ray", "node_rank": 1}, "only the head runs vLLM"),
    ({"nnodes": 2, "pp": 2, "dp": 2}, "--dp with --nnodes > 1"),
    ({"executor": "k8s"}, "--executor must be mp or ray"),
    ({"nnodes": 0}, "--nnodes must be at least 1"),
    ({"master_port": 70000}, "--master-port must be between 1 and 65535"),
])
def test_bad_layouts_are_one_line(kwargs, words):
    with pytest.raises(ConfigError, match=words) as err:
        Layout(**kwargs).validate()
    assert "\n" not in str(err.value)


def test_ray_flags_have_no_node_ranks():
    flags = Layout(nnodes=2, pp=2, executor="ray").validate().flags(0)
    assert flags == ["--pipeline-parallel-size", "2", "--distributed-executor-backend", "ray"]


def test_cli_argv_uses_vllm_serve_entry_and_headless_drops_api_flags():
    api = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--host", "127.0.0.1",
           "--port", "8000", "--max-model-len", "2048", "--api-key", "s3cret",
           "--served-model-name", "Qwen/X", "--nnodes", "2"]
    cli = nodes.cli_argv(api)
    assert cli[:4] == [PY, str(nodes.CLI_SCRIPT), "serve", "/m"]
    assert "--model" not in cli and "--port" in cli
    headless = nodes.headless_argv(cli)
    for gone in ("--host", "--port", "--api-key", "s3cret", "--served-model-name", "8000"):
        assert gone not in headless
    assert headless[-2:] == ["--nnodes", "2"] and "--max-model-len" in headless


def test_each_local_rank_gets_its_own_cores_or_gpus():
    layout = Layout(nnodes=2, pp=2)
    assert nodes.node_env(layout, 0, has_gpu=False, cores=2) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert nodes.node_env(layout, 1, has_gpu=False, cores=2) == {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    assert nodes.node_env(layout, 1, has_gpu=True) == {"CUDA_VISIBLE_DEVICES": "1"}
    four = Layout(nnodes=2, tp=2, pp=2)
    assert nodes.node_env(four, 1, has_gpu=False, cores=4) == {"VLLM_CPU_OMP_THREADS_BIND": "2|3"}


def test_missing_rank_line_names_the_rank_and_its_command():
    layout = Layout(nnodes=2, pp=2, master_addr="10.0.0.1")
    line = nodes.missing_ranks_message(layout, [1], 600, profile="gpu", python="python3")
    assert line.startswith("node rank 1 did not join within 600 s")
    assert ("`invoke node --node-rank 1 --nnodes 2 --master-addr 10.0.0.1 --master-port 29555 "
            "--tp 1 --pp 2 --profile gpu --python python3`") in line
    assert "\n" not in line


@pytest.mark.parametrize("found, words", [
    ({"nodes": [{"alive": True}], "resources": {"GPU": 4}}, "1 live node(s), 2 asked for"),
    ({"nodes": [{"alive": True}, {"alive": True}], "resources": {"GPU": 1}}, "1 GPU(s), TP × PP = 2"),
    ({"nodes": [{"alive": True}, {"alive": False}], "resources": {"GPU": 8}}, "1 live node(s)"),
])
def test_ray_cluster_too_small_is_one_line(found, words):
    assert words in nodes.ray_fit(found, Layout(nnodes=2, pp=2, executor="ray"))


def test_ray_cluster_that_fits():
    found = {"nodes": [{"alive": True}, {"alive": True}], "resources": {"GPU": 2.0}}
    assert nodes.ray_fit(found, Layout(nnodes=2, pp=2, executor="ray")) is None


def _sleeper(tmp_path, rank: int, seconds: float) -> server.ServerState:
    return nodes.start_node([sys.executable, "-c", f"import time; time.sleep({seconds})"],
                            state_path=tmp_path / "server.json", rank=rank,
                            log_path=tmp_path / f"node{rank}.log", model="m", tp=1,
                            profile="cpu", env={"PATH": "/usr/bin:/bin"})


def test_watch_sees_a_node_die_and_calls_back_once(tmp_path):
    state = _sleeper(tmp_path, 1, 0.3)
    seen = []
    begun = time.monotonic()
    with nodes.NodeWatch(nodes.local_nodes(tmp_path / "server.json"), seen.append,
                         interval_s=0.1) as watch:
        while watch.death is None and time.monotonic() - begun < 10:
            time.sleep(0.05)
    assert watch.death is not None and watch.death.rank == 1 and watch.death.pid == state.pid
    assert time.monotonic() - begun < 5
    assert seen == [watch.death]
    line = nodes.death_line(watch.death, "during the benchmark")
    assert line.startswith(f"node rank 1 (pid {state.pid}) exited with code 0 during the benchmark")
    nodes.stop_local(tmp_path / "server.json")


def test_stop_local_ends_every_node_rank(tmp_path):
    states = [_sleeper(tmp_path, r, 60) for r in (1, 2)]
    nodes.save_cluster(tmp_path / "server.json", Layout(nnodes=3, pp=3))
    assert all(server.is_alive(s) for s in states)
    ended = nodes.stop_local(tmp_path / "server.json", grace_s=5)
    assert {s.pid for s in states} <= set(ended)
    assert not any(server.is_alive(s) for s in states)
    assert nodes.local_nodes(tmp_path / "server.json") == {}
    assert nodes.load_cluster(tmp_path / "server.json") is None


def test_watched_step_fails_with_the_dead_rank(tmp_path):
    from lab.checklist.steps import multinode

    class FakeLab:
        state_path = tmp_path / "server.json"

    _sleeper(tmp_path, 1, 0.2)

    def step(lab, ctx):
        time.sleep(1.5)  # the node dies meanwhile; the head's requests would fail
        raise ServerDied("vLLM server was killed by signal 15 during the benchmark")

    with pytest.raises(LabError) as err:
        multinode.watched(step)(FakeLab(), None)
    assert str(err.value).startswith("node rank 1 (pid ")
    assert "the head was stopped" in str(err.value)
    nodes.stop_local(tmp_path / "server.json")


def test_watched_step_passes_through_when_every_node_lives(tmp_path):
    from lab.checklist.steps import multinode

    class FakeLab:
        state_path = tmp_path / "server.json"

    _sleeper(tmp_path, 1, 30)
    assert multinode.watched(lambda lab, ctx: "ok")(FakeLab(), None) == "ok"
    nodes.stop_local(tmp_path / "server.json", grace_s=5)


def test_cluster_file_round_trip(tmp_path):
    layout = Layout(nnodes=2, tp=2, pp=2, master_port=29600)
    nodes.save_cluster(tmp_path / "server.json", layout, model="m")
    loaded, extra = nodes.load_cluster(tmp_path / "server.json")
    assert loaded == layout and extra["model"] == "m"


def test_day6_is_a_lab_defined_day_citing_seeds_001_and_003():
    from lab.checklist import days, seeds
    from lab.record.values import TYPES
    day = seeds.day("day6")
    assert "001" in day.title_zh and "003" in day.title_zh and "lab-defined" in day.title_en
    for key in day.plan:
        assert key in days.FUNCS["day6"]
    for key in ("nodes", "node", "serve-nodes", "node-share", "compare-nodes"):
        assert key in TYPES and key == TYPES[key].KEY
    assert {a.step for a in day.acceptance} <= {s.key for s in day.steps}


def test_layout_from_flags_and_defaults(tmp_path):
    from lab.commands import layout_from
    from lab.record.session import Lab
    lab = Lab.from_config({"profile": "cpu", "logbook_dir": str(tmp_path)})
    assert layout_from(lab) == Layout(nnodes=2, pp=2)
    assert layout_from(lab, nnodes=4, tp=2, pp=4, master_addr="10.1.1.1") == Layout(
        nnodes=4, tp=2, pp=4, master_addr="10.1.1.1")
    nodes.save_cluster(lab.state_path, Layout(nnodes=2, tp=2, pp=2))
    assert layout_from(lab).tp == 2  # the running cluster's layout
    assert layout_from(lab, nnodes=3) == Layout(nnodes=3, pp=3)  # new sizes: PP = nnodes, TP 1
    with pytest.raises(ConfigError, match="cannot be split evenly"):
        layout_from(lab, nnodes=2, pp=3)


def test_deploy_notes_list_every_node_command(fresh_db, tmp_path):
    from lab.deliver import deploy_notes as dn
    from lab.deliver.gather import gather
    run = fresh_db.start_run("day6", task="cluster", profile="cpu", lang="en", options={})
    step = fresh_db.start_step(run, "serve-nodes", title="t", command="c", expected="")
    base = [PY, str(nodes.CLI_SCRIPT), "serve", "/m", "--pipeline-parallel-size", "2",
            "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", "29555"]
    fresh_db.add_server(run_id=run, step_id=step, profile="cpu", model="/m", tp=1,
                        argv=[*base, "--node-rank", "1", "--headless"],
                        env={"VLLM_CPU_OMP_THREADS_BIND": "1"}, host="127.0.0.1", port=0,
                        log_path="n1.log", started_at=1.0)
    fresh_db.add_server(run_id=run, step_id=step, profile="cpu", model="/m", tp=1,
                        argv=[*base, "--node-rank", "0", "--port", "8000"],
                        env={"VLLM_CPU_OMP_THREADS_BIND": "0"}, host="127.0.0.1", port=8000,
                        log_path="n0.log", started_at=2.0)
    text = dn.render_deploy_notes(gather(fresh_db, now=1e9, measurements=False), "en",
                                  tmp_path).read_text()
    assert "**Multi-node**: node rank 0 / 2" in text and "node rank 1 / 2" in text
    assert "- node 0 (head):" in text and "- node 1 (headless):" in text
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless"):
        assert f"| `{flag}` |" in text, flag


def _gpu(index: int, free_mib: float, used_mib: float, pids=()):
    from lab.measure.nvml import GpuInfo, GpuProcess
    return GpuInfo(index=index, name="NVIDIA H200", uuid=None, memory_total_mib=143771,
                   memory_used_mib=used_mib, memory_free_mib=free_mib, utilization_gpu_pct=0,
                   utilization_memory_pct=0, driver_version="580",
                   processes=[GpuProcess(pid, "python3", 120000) for pid in pids])


def _gpu_lab(tmp_path):
    from lab.record.session import Lab
    return Lab.from_config({"profile": "rehearsal", "logbook_dir": str(tmp_path), "lang": "en"})


def test_nodes_on_a_local_two_gpu_cluster_check_each_ranks_gpu(tmp_path, monkeypatch):
    from lab.checklist.steps import multinode
    from lab.measure import nvml
    from lab.record.runner import verdict
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 130000, 1000), _gpu(1, 2000, 1000)])
    out = multinode.nodes_step(_gpu_lab(tmp_path), None, Layout(nnodes=2, pp=2))
    assert [(n.rank, n.source, n.devices, n.ready_gpus) for n in out.values.nodes] == [
        (0, "nvml", [0], 1), (1, "nvml", [1], 0)]
    assert [c.status for c in out.criteria] == ["pass", "fail"]   # GPU1 has 2 GB free
    assert verdict(out.criteria)[0] == "fail"


def test_nodes_on_a_real_host_leave_the_other_ranks_to_their_hosts(tmp_path, monkeypatch):
    from lab.checklist.steps import multinode
    from lab.measure import nvml
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 130000, 1000)])
    out = multinode.nodes_step(_gpu_lab(tmp_path), None,
                               Layout(nnodes=2, pp=2, master_addr="10.0.0.1"))
    assert [(n.rank, n.source) for n in out.values.nodes] == [(0, "nvml"), (1, "remote")]
    assert [c.status for c in out.criteria] == ["pass", "skipped"]


def test_node_share_on_gpus_is_the_spread_of_each_ranks_memory(tmp_path, monkeypatch):
    from lab.checklist.steps import multinode
    from lab.measure import nvml
    lab = _gpu_lab(tmp_path)
    head = server.ServerState(pid=__import__("os").getpid(), pgid=0, host="127.0.0.1", port=8000,
                              model="m", log_path="x", started_at=time.time(), argv=[])
    monkeypatch.setattr(server, "require_running", lambda path: head)
    nodes.save_cluster(lab.state_path, Layout(nnodes=2, pp=2))
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 10000, 123405), _gpu(1, 8000, 126947)])
    out = multinode.node_share(lab, None)
    assert [(n.rank, n.used_mib, n.devices) for n in out.values.nodes] == [
        (0, 123405, [0]), (1, 126947, [1])]
    spread = next(c for c in out.criteria if c.key == "spread_pct")
    assert spread.status == "pass" and spread.measured == pytest.approx(2.79, abs=0.01)
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 10000, 60000), _gpu(1, 8000, 126947)])
    assert next(c for c in multinode.node_share(lab, None).criteria
                if c.key == "spread_pct").status == "fail"


def test_ray_on_the_cpu_profile_is_skipped_with_vllms_reason(tmp_path):
    from lab.checklist.steps import multinode
    from lab.record.runner import verdict
    from lab.record.session import Lab
    lab = Lab.from_config({"profile": "cpu", "logbook_dir": str(tmp_path)})
    layout = Layout(nnodes=2, pp=2, executor="ray").validate()
    for out in (multinode.nodes_step(lab, None, layout), multinode.serve_nodes(lab, None, layout)):
        assert verdict(out.criteria) == ("skipped", "current platform cpu does not support ray")


def test_nodes_under_a_running_cluster_use_the_figures_measured_before_it(tmp_path, monkeypatch):
    """NVML may not show the cluster's pids (another pid namespace): then the free memory
    recorded by `invoke cluster` before it started is used, and said so."""
    from lab.checklist.steps import multinode
    from lab.measure import nvml
    from lab.record.runner import StepContext, StepSpec
    lab = _gpu_lab(tmp_path)
    run = lab.book.start_run("day6", task="cluster", profile="rehearsal", lang="en", options={})
    step = lab.book.start_step(run, "nodes", title="t", command="c", expected="")
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 130000, 1000), _gpu(1, 130000, 1000)])
    before = multinode.nodes_step(lab, StepContext(lab.book, run, step, StepSpec("nodes", 1, "", "", "")),
                                  Layout(nnodes=2, pp=2))
    lab.book.end_step(step, status="pass", values=before.values)
    monkeypatch.setattr(multinode.server, "is_alive", lambda state: True)
    monkeypatch.setattr(multinode.server, "load", lambda path: object())
    monkeypatch.setattr(multinode, "_our_pids", lambda lab: {4242})
    monkeypatch.setattr(nvml, "query_gpus", lambda: [_gpu(0, 9000, 125000, pids=[77]),
                                                     _gpu(1, 9000, 125000, pids=[78])])
    out = multinode.nodes_step(lab, None, Layout(nnodes=2, pp=2))
    assert out.values.cluster_running and out.values.before_start
    assert [c.status for c in out.criteria] == ["pass", "pass"]
    assert out.actual.endswith("(measured before the cluster started)")
