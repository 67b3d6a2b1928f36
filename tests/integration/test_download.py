"""`invoke download` as a user runs it, against a real local hub on 127.0.0.1 with the real
huggingface_hub client; asserts on the logbook row, the rendered day log and the exit code.
No vLLM is started (not marked vllm), and none is needed: the download step runs on the gpu
profile without NVML."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from fakes.local_hub import LocalHub, small_model

from integration.conftest import invoke
from lab.record.session import Lab

REPO = "lab-test/tiny-model"
GATED = "lab-test/gated-model"
TOKEN = "hf_s3cret-token-for-integration"


@pytest.fixture
def srv():
    with LocalHub([small_model(REPO), small_model(GATED, lfs_mib=1, token=TOKEN)]) as server:
        yield server


@pytest.fixture
def env(tmp_path, srv) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    out.update(INVOKE_LAB_LOGBOOK_DIR=str(tmp_path / "logbook"),
               INVOKE_LAB_DATA_DIR=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf-home"),
               HF_ENDPOINT=srv.endpoint, COLUMNS="200")
    return out


def download_rows(env: dict) -> list[sqlite3.Row]:
    db = sqlite3.connect(Path(env["INVOKE_LAB_LOGBOOK_DIR"]) / "lab.db")
    db.row_factory = sqlite3.Row
    return list(db.execute("select * from steps where key = 'download' order by id"))


def run(env: dict, *args: str):
    return invoke(["download", "--profile", "gpu", *args], env, timeout_s=300)


def test_download_records_what_it_fetched_then_a_rerun_skips_it(env, srv, tmp_path):
    proc = run(env, "--model", REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = download_rows(env)[-1]
    assert row["status"] == "pass"
    v = json.loads(row["values"])
    repo = srv.repos[REPO]
    local = tmp_path / "data" / "models" / REPO
    assert v["repo_id"] == REPO and v["revision"] == "main" and v["commit"] == repo.commit
    assert v["files"] == len(repo.files) and v["bytes_total"] == sum(map(len, repo.files.values()))
    assert v["bytes_fetched"] == v["bytes_total"] and v["seconds"] > 0 and v["mb_per_s"] > 0
    assert v["endpoint"] == srv.endpoint and v["source"] == "hf" and v["local_dir"] == str(local)
    assert v["served_model_name"] == REPO and v["verify_s"] is not None
    manual = f"HF_ENDPOINT={srv.endpoint} hf download {REPO} --local-dir {local}"
    assert v["manual_command"] == manual and row["command"] == manual
    assert (local / "config.json").exists()
    md = (tmp_path / "logbook" / "day3.md").read_text()
    assert "步骤 4：下载模型（如果本地没有）" in md and manual in md
    assert f"--served-model-name {REPO}" in md

    # serve on the gpu profile would now be given the local copy, named as the repo
    lab = Lab.from_config({"profile": "gpu", "data_dir": str(tmp_path / "data")})
    prof = lab.profile("day3", model=REPO)
    assert (prof.model, prof.served_model_name) == (str(local), REPO)

    before = len(srv.requests)
    again = run(env, "--model", REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    row = download_rows(env)[-1]
    assert row["status"] == "skipped" and row["reason"] == "already present, verified"
    assert json.loads(row["values"])["already_present"] is True
    asked = [r.path for r in srv.requests[before:] if r.path != "/api/agent-harnesses"]
    assert asked == [f"/api/models/{REPO}/revision/main"]     # the file list; not a byte of a file


def test_a_gated_repository_fails_in_one_line_and_works_with_hf_token(env, srv, tmp_path):
    proc = run(env, "--model", GATED)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    row = download_rows(env)[-1]
    assert row["status"] == "fail" and "\n" not in row["reason"]
    assert row["reason"].startswith(f"{GATED} at {srv.endpoint} is gated or private (HTTP 401)")
    assert "set HF_TOKEN" in row["reason"] and "set HF_TOKEN" in out
    assert json.loads(row["values"])["endpoint"] == srv.endpoint

    ok = run({**env, "HF_TOKEN": TOKEN}, "--model", GATED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert download_rows(env)[-1]["status"] == "pass"
    secrets = [ok.stdout, ok.stderr, (tmp_path / "logbook" / "lab.db").read_bytes().decode("latin-1")]
    secrets += [p.read_text() for p in (tmp_path / "logbook").glob("*.md")]
    assert not [s for s in secrets if TOKEN in s]


@pytest.mark.parametrize("args, text", [
    (["--model", "lab-test/no-such-model"], "repository lab-test/no-such-model not found at "),
    (["--model", REPO, "--revision", "v9"], f"revision 'v9' not found in {REPO}"),
    (["--model", REPO, "--reserve", "10000000"], f"not enough disk for {REPO}: needs "),
])
def test_failures_give_one_line_a_failed_step_and_a_nonzero_exit(env, srv, args, text):
    proc = run(env, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert text in out
    row = download_rows(env)[-1]
    assert row["status"] == "fail" and text in row["reason"] and "\n" not in row["reason"]
    assert not [r for r in srv.requests if r.path.startswith("/cdn/") or "/resolve/" in r.path]


def test_an_unreachable_hub_says_how_to_use_a_local_path(env, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proc = run(env, "--model", REPO, "--endpoint", f"http://127.0.0.1:{closed}")
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    row = download_rows(env)[-1]
    assert row["status"] == "fail"
    assert row["reason"].startswith(f"the hub could not be reached at http://127.0.0.1:{closed}")
    assert "--model /path/to/model" in row["reason"]


@pytest.mark.parametrize("profile, why", [
    ("cpu", "cpu profile builds its model offline (tiny-qwen2, random weights): no download"),
    ("rehearsal", "rehearsal profile builds its model offline"),
])
def test_cpu_and_rehearsal_profiles_skip_the_download(env, srv, profile, why):
    proc = invoke(["download", "--profile", profile], env, timeout_s=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = download_rows(env)[-1]
    assert row["status"] == "skipped" and row["reason"].startswith(why)
    assert not srv.requests           # the hub is not even asked


def test_a_local_path_skips_the_download(env, srv, tmp_path):
    (tmp_path / "mine").mkdir()
    proc = run(env, "--model", str(tmp_path / "mine"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = download_rows(env)[-1]
    assert row["status"] == "skipped"
    assert row["reason"] == f"local model path given ({tmp_path / 'mine'}): no download"
    assert not srv.requests
