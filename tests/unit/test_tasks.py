"""The Invoke surface: `invoke --list` is fast and light; every option has help; bad input
gives one line and a non-zero exit, never a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(args, env_extra=None, tmp_path=None):
    env = dict(os.environ, COLUMNS="200")
    if tmp_path is not None:
        env["INVOKE_LAB_LOGBOOK_DIR"] = str(tmp_path / "logbook")
        env["INVOKE_LAB_DATA_DIR"] = str(tmp_path / "data")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_list_reads_like_the_checklist_without_heavy_imports():
    code = ("import sys, runpy; sys.argv=['invoke','--list']\n"
            "from invoke.main import program\n"
            "try:\n    program.run()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('vllm','torch','transformers','matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    assert "HEAVY []" in out
    for line in ("1. Check GPU resources", "2. Install vLLM", "4. Download the model", "5. Serve",
                 "8. Read /metrics"):
        assert line in out


def test_every_task_has_a_docstring_and_help_for_every_option():
    sys.path.insert(0, str(ROOT))
    import tasks
    for name in tasks.ns.task_names:
        t = tasks.ns[name]
        assert t.__doc__, name
        import inspect
        params = [p for p in inspect.signature(t.body).parameters if p != "c"]
        assert set(params) <= set(t.help), (name, set(params) - set(t.help))


@pytest.mark.parametrize("args,env,message", [
    (["gpus"], {"INVOKE_LAB_PORT": "abc"}, "error: port must be a whole number, got 'abc'"),
    (["monitor"], {"INVOKE_LAB_THRESHOLDS_GPU_UTIL_PCT": "150"}, "threshold gpu_util_pct must be between 0 and 100"),
    (["log", "--day", "day9"], {}, "unknown day 'day9'"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, env, message, tmp_path):
    proc = run(args, env, tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_gpu_profile_without_nvml_fails_the_step_with_one_line(tmp_path):
    proc = run(["gpus", "--profile", "gpu"], {}, tmp_path)
    assert proc.returncode == 1
    assert "NVML unavailable" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    import sqlite3
    db = sqlite3.connect(tmp_path / "logbook" / "lab.db")
    status, reason = db.execute("select status, reason from steps where key='gpus'").fetchone()
    assert status == "fail" and "NVML unavailable" in reason


def test_cpu_profile_skips_gpu_check_never_passes(tmp_path):
    proc = run(["gpus", "--profile", "cpu"], {}, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import sqlite3
    db = sqlite3.connect(tmp_path / "logbook" / "lab.db")
    status, reason = db.execute("select status, reason from steps where key='gpus'").fetchone()
    assert (status, reason) == ("skipped", "no NVIDIA GPU: CPU profile")


def test_missing_vllm_env_fails_install_with_one_line(tmp_path):
    proc = run(["serve", "--profile", "cpu", "--python", str(tmp_path / "nope" / "python")], {}, tmp_path)
    assert proc.returncode == 1
    assert "vLLM env missing" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout


def test_api_test_without_a_server_says_so(tmp_path):
    proc = run(["api-test", "--profile", "cpu"], {}, tmp_path)
    assert proc.returncode == 1
    assert "no vLLM server is running" in proc.stdout


def _flag(task_name, flag):
    sys.path.insert(0, str(ROOT))
    import tasks
    return next(a for a in tasks.ns[task_name].get_arguments() if flag in a.names)


def test_flags_arrive_typed_from_the_annotations():
    tp = _flag("serve", "tp")
    tp.value = "2"
    assert tp.value == 2 and type(tp.value) is int
    duration = _flag("monitor", "duration")   # `float | None = None`: a float, not a string
    duration.value = "2.5"
    assert duration.value == 2.5
    assert _flag("monitor", "duration").value is None  # not given: None, left to the config
    concurrency = _flag("bench", "concurrency")  # a list of levels: parsed by the config
    concurrency.value = "1,4"
    assert concurrency.value == "1,4"


@pytest.mark.parametrize("args,message", [
    (["serve", "--tp", "abc"], "error: --tp must be a whole number, got 'abc'"),
    (["serve", "--tp", "0"], "error: --tp must be at least 1, got 0"),
    (["monitor", "--duration", "soon"], "error: --duration must be a number, got 'soon'"),
    (["bench", "--input-len", "1.5"], "error: --input-len must be a whole number, got '1.5'"),
    (["gpus", "--min-gpus", "x"], "error: --min-gpus must be a whole number, got 'x'"),
    (["compare-runs", "1", "x"], "error: run B must be a whole number, got 'x'"),
    (["report", "--run", "latest"], "error: --run must be a whole number, got 'latest'"),
])
def test_a_flag_that_does_not_parse_is_one_line(args, message, tmp_path):
    proc = run(args, {"INVOKE_LAB_PROFILE": "cpu"}, tmp_path)
    assert proc.returncode == 2  # like every other bad option
    assert proc.stderr.strip() == message
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "logbook" / "lab.db").exists()  # rejected before any work started


def test_list_imports_nothing_heavy():
    """`invoke --list` imports no vllm, torch, transformers, matplotlib or numpy (a test on
    imports, not on time: bench/list_speed.py prints the time)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from list_speed import HEAVY, imported_by_list
    modules = imported_by_list()
    assert "tasks" in modules and "invoke" in modules     # it did load the collection
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_after_a_task_with_a_positional_argument_is_help_not_a_name(flag, tmp_path):
    """`invoke experiment --help` once answered "unknown experiment '--help'": Invoke hands the
    token to the waiting positional argument before it looks at its own flags."""
    proc = run(["experiment", flag], {"INVOKE_LAB_PROFILE": "cpu"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: invoke experiment [--options] [NAME]")
    assert "--num-requests" in proc.stdout and "measured requests per arm" in proc.stdout
    assert "unknown experiment" not in proc.stderr
    assert not (tmp_path / "logbook" / "lab.db").exists()
