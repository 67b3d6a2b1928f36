"""lab.measure.procstats on real child processes (Linux /proc), no vLLM needed.

A vLLM worker's title comes from setproctitle, which rewrites argv. The same is done here
without setproctitle: Popen's `executable=` runs python while argv[0] is the title.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lab.core.units import balance
from lab.measure import procstats

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

# The parent starts its children, waits until each has filled 32 MiB (written, so it is
# resident) and prints their pids; everyone then sleeps until killed.
_CHILD = "import sys, time; b = b'x' * (32 << 20); print('ready', flush=True); time.sleep(120)"
_PARENT = r"""
import subprocess, sys, time
kids = [subprocess.Popen([t or sys.executable, "-c", sys.argv[1]], executable=sys.executable,
                         stdout=subprocess.PIPE, text=True) for t in sys.argv[2:]]
for k in kids:
    assert k.stdout.readline().strip() == "ready"
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(120)
"""


@pytest.fixture
def tree():
    """Spawn parent -> children; yields spawn(*titles) -> (parent_pid, [child_pids]); kills them after."""
    procs = []

    def spawn(*titles: str):
        p = subprocess.Popen([sys.executable, "-c", _PARENT, _CHILD, *titles], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
        procs.append(p)
        kids = [int(x) for x in p.stdout.readline().split()]
        assert len(kids) == len(titles)
        return p.pid, kids

    yield spawn
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def test_process_tree_has_root_and_descendants(tree):
    parent, kids = tree("", "")
    pids = [p.pid for p in procstats.process_tree(parent)]
    assert pids[0] == parent
    assert sorted(pids[1:]) == sorted(kids)


def test_tree_rss_covers_every_process(tree):
    parent, kids = tree("", "")
    total = procstats.tree_rss_mib(parent)
    each = [psutil.Process(pid).memory_info().rss / 2**20 for pid in [parent, *kids]]
    assert total == pytest.approx(sum(each), rel=0.2)
    assert total > 64  # two children holding 32 MiB each


def test_gone_root_is_empty_not_an_error():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert procstats.process_tree(p.pid) == []
    assert procstats.tree_rss_mib(p.pid) is None
    assert procstats.vllm_workers(p.pid) == []
    assert procstats.sample_process(p.pid) == []


def test_vllm_workers_found_by_title_and_sorted(tree):
    parent, kids = tree("VLLM::Worker_TP1", "", "VLLM::Worker_TP0")
    workers = procstats.vllm_workers(parent)
    assert [w["title"] for w in workers] == ["VLLM::Worker_TP0", "VLLM::Worker_TP1"]
    assert [w["pid"] for w in workers] == [kids[2], kids[0]]
    assert all(w["rss_mib"] > 32 for w in workers)
    # The cpu profile's TP=2 balance check: equal workers, small spread.
    assert balance([w["rss_mib"] for w in workers])["spread_pct"] < 10


def test_worker_found_by_kernel_name_only():
    """prctl(PR_SET_NAME) alone (cmdline untouched): comm keeps 15 chars, so the pid is added."""
    code = ("import ctypes, sys, time; libc = ctypes.CDLL(None); "
            "libc.prctl(15, ctypes.c_char_p(b'VLLM::Worker_TP0'), 0, 0, 0); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1]]); "
                               "time.sleep(60)", code], start_new_session=True)
    try:
        deadline = time.time() + 10
        workers = []
        while time.time() < deadline and not workers:
            workers = procstats.vllm_workers(parent.pid)
            time.sleep(0.05)
        assert len(workers) == 1
        (w,) = workers
        assert w["title"] == f"VLLM::Worker_TP(pid {w['pid']})"
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)


@pytest.mark.parametrize("name, cmdline, title", [
    ("VLLM::Worker_TP0", ["VLLM::Worker_TP0"], "VLLM::Worker_TP0"),
    ("python3", ["VLLM::Worker_TP1"], "VLLM::Worker_TP1"),
    ("VLLM::Worker_TP", ["VLLM::Worker_TP1 extra"], "VLLM::Worker_TP1"),  # setproctitle, one argv entry
    ("VLLM::Worker_PP", ["VLLM::Worker_PP0_TP1"], "VLLM::Worker_PP0_TP1"),
    ("VLLM::Worker_TP", None, "VLLM::Worker_TP"),  # cmdline unreadable
    ("VLLM::EngineCor", ["VLLM::EngineCore"], None),
    ("python3", ["python3", "-m", "vllm.entrypoints.openai.api_server"], None),
    ("python3", ["python3", "VLLM::Worker_TP0"], None),  # an argument, not the title
    (None, [], None),
])
def test_worker_title_matcher(name, cmdline, title):
    assert procstats.worker_title(name, cmdline) == title


def test_sample_process_rows_and_cpu(tree):
    parent, _kids = tree("VLLM::Worker_TP0", "VLLM::Worker_TP1")
    first = procstats.sample_process(parent)
    assert [r["device"] for r in first] == ["tree", "VLLM::Worker_TP0", "VLLM::Worker_TP1"]
    for r in first:
        assert set(r) == {"t", "source", "device", "rss_mib", "cpu_pct"}
        assert r["source"] == "process"
        assert r["cpu_pct"] is None  # psutil needs a previous call: no figure yet, not a fake 0
        assert r["rss_mib"] > 0
    assert first[0]["rss_mib"] >= first[1]["rss_mib"] + first[2]["rss_mib"]
    time.sleep(0.1)
    second = procstats.sample_process(parent)
    assert all(isinstance(r["cpu_pct"], float) and r["cpu_pct"] >= 0 for r in second)
    assert second[0]["t"] >= first[0]["t"]


def test_sample_process_survives_a_worker_dying(tree):
    parent, kids = tree("VLLM::Worker_TP0", "VLLM::Worker_TP1")
    sampler = procstats.ProcessSampler(parent)
    sampler()
    os.kill(kids[1], signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        rows = sampler()
        if [r["device"] for r in rows] == ["tree", "VLLM::Worker_TP0"]:
            break
        time.sleep(0.05)
    assert [r["device"] for r in rows] == ["tree", "VLLM::Worker_TP0"]
    assert rows[1]["cpu_pct"] is not None  # the surviving worker kept its Process object
