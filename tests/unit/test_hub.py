"""lab.vllm.hub with the real huggingface_hub client against a real local hub on 127.0.0.1
(tests/fakes/local_hub.py): nothing in the client is patched."""
from __future__ import annotations

import socket

import pytest
from fakes.local_hub import LocalHub, small_model

from lab.core.errors import (
    ChecksumMismatch,
    DiskTooSmall,
    HubClientMissing,
    HubError,
    HubUnreachable,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
)
from lab.vllm import hub

REPO = "lab-test/tiny-model"
GATED = "lab-test/gated-model"
BIG = "lab-test/big-model"      # shards over the client's 10 MiB read chunk, to see resume
TOKEN = "hf_s3cret-token-for-tests"


@pytest.fixture(autouse=True)
def _isolated_client(tmp_path, monkeypatch):
    """The client's own cache and token file under tmp, and no token from the environment."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="module")
def repos():
    """Built (and hashed) once; each test gets its own server, so faults do not leak."""
    return [small_model(REPO), small_model(GATED, lfs_mib=1, token=TOKEN), small_model(BIG, lfs_mib=24)]


@pytest.fixture
def srv(repos):
    with LocalHub(repos) as server:
        yield server


def _plan(srv, repo=REPO, revision=None, token=None):
    return hub.plan_download(repo, revision, endpoint=srv.endpoint, token=token)


def _shard(n: int) -> str:
    return f"model-0000{n}-of-00002.safetensors"


def test_plan_lists_files_with_sizes_hashes_and_the_commit(srv):
    plan = _plan(srv)
    repo = srv.repos[REPO]
    assert plan.commit == repo.commit and plan.revision == "main"
    assert {f.path for f in plan.files} == set(repo.files)
    assert plan.bytes_total == sum(len(b) for b in repo.files.values())
    large = {f.path: f.sha256 for f in plan.files if f.large}
    assert large == {p: repo.sha256(p) for p in repo.lfs}
    assert all(f.blob_id for f in plan.files)


def test_first_download_fetches_everything_and_verifies(srv, tmp_path):
    plan = _plan(srv)
    seen = []
    result = hub.download(plan, tmp_path / "m", progress=lambda done, total: seen.append((done, total)))
    assert result.files == result.files_fetched == len(plan.files)
    assert result.bytes_fetched == result.bytes_total == plan.bytes_total
    assert result.bytes_resumed == 0 and result.commit == plan.commit
    assert result.mb_per_s and result.mb_per_s > 0 and result.seconds > 0
    assert seen[0] == (0, plan.bytes_total) and seen[-1] == (plan.bytes_total, plan.bytes_total)
    for path, data in srv.repos[REPO].files.items():
        assert (tmp_path / "m" / path).read_bytes() == data
    assert hub.verify(plan, tmp_path / "m") >= 0
    assert hub.is_present(plan, tmp_path / "m")
    assert hub.has_stamp(tmp_path / "m", REPO) and not hub.has_stamp(tmp_path / "m", GATED)


def test_second_run_downloads_nothing(srv, tmp_path):
    plan = _plan(srv)
    hub.download(plan, tmp_path / "m")
    hub.verify(plan, tmp_path / "m")
    before = len(srv.requests)
    again = _plan(srv)
    assert hub.is_present(again, tmp_path / "m")
    result = hub.download(again, tmp_path / "m")
    assert result.files_fetched == 0 and result.bytes_fetched == 0
    after = srv.requests[before:]
    assert [r.path for r in after if r.path != "/api/agent-harnesses"] == [
        f"/api/models/{REPO}/revision/main"]  # only the file list
    assert not [r for r in after if r.method == "GET" and r.body_bytes and "/api/" not in r.path]


def _kept(size: int) -> int:
    """What the client has written when a transfer drops at size // 2: it reads in
    DOWNLOAD_CHUNK_SIZE (10 MiB) chunks and writes whole chunks, so resume starts there."""
    from huggingface_hub import constants
    kept = size // 2 // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE
    assert kept > 0
    return kept


def test_a_transfer_cut_mid_file_is_resumed_by_the_client_in_the_same_run(srv, tmp_path):
    plan = _plan(srv, BIG)
    name = _shard(1)
    size = len(srv.repos[BIG].files[name])
    srv.faults.cut_once = {name}
    result = hub.download(plan, tmp_path / "m")
    hub.verify(plan, tmp_path / "m")
    gets = [r for r in srv.requests if r.path == f"/cdn/{srv.repos[BIG].sha256(name)}"]
    assert len(gets) == 2 and gets[0].range is None and gets[0].body_bytes == size // 2
    assert gets[1].range == f"bytes={_kept(size)}-" and gets[1].status == 206
    assert gets[1].body_bytes == size - _kept(size)     # the rest, not the whole file again
    assert result.bytes_fetched == plan.bytes_total


def test_an_interrupted_run_is_resumed_where_it_stopped_by_the_next_run(srv, tmp_path):
    plan = _plan(srv, BIG)
    name = _shard(2)
    size = len(srv.repos[BIG].files[name])
    srv.faults.cut_once = {name}
    srv.faults.fail_after_cut = {name}    # the client's own retry gets 503: this run gives up
    with pytest.raises(HubError) as info:
        hub.download(plan, tmp_path / "m")
    assert "HTTP 503" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "m" / name).exists()
    before = len(srv.requests)
    result = hub.download(plan, tmp_path / "m")
    hub.verify(plan, tmp_path / "m")
    resumed = [r for r in srv.requests[before:] if r.path == f"/cdn/{srv.repos[BIG].sha256(name)}"]
    assert [r.range for r in resumed] == [f"bytes={_kept(size)}-"]
    assert resumed[0].status == 206 and resumed[0].body_bytes == size - _kept(size)
    assert result.bytes_resumed >= _kept(size)


def test_a_corrupted_file_is_caught_by_its_sha256_named_removed_and_fetched_anew(srv, tmp_path):
    plan = _plan(srv)
    name = _shard(2)
    srv.faults.corrupt = {name}
    hub.download(plan, tmp_path / "m")
    with pytest.raises(ChecksumMismatch) as info:
        hub.verify(plan, tmp_path / "m")
    message = str(info.value)
    assert name in message and "SHA-256" in message and "\n" not in message
    assert not (tmp_path / "m" / name).exists() and not hub.is_present(plan, tmp_path / "m")
    srv.faults.corrupt = set()
    result = hub.download(plan, tmp_path / "m")
    assert result.files_fetched == 1
    hub.verify(plan, tmp_path / "m")


def test_a_changed_small_file_fails_its_git_blob_id(srv, tmp_path):
    plan = _plan(srv)
    hub.download(plan, tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(b"{}" + b" " * (len(srv.repos[REPO].files["config.json"]) - 2))
    with pytest.raises(ChecksumMismatch, match=r"config\.json: git blob id"):
        hub.verify(plan, tmp_path / "m")


def test_too_little_disk_fails_before_any_byte_is_fetched(srv, tmp_path):
    plan = _plan(srv)
    with pytest.raises(DiskTooSmall) as info:
        hub.check_disk(plan, tmp_path / "not-yet" / "m", reserve_gib=10 ** 7)
    message = str(info.value)
    assert message.startswith(f"not enough disk for {REPO}: needs ")
    assert "GiB free at " in message and "\n" not in message
    assert not [r for r in srv.requests if not r.path.startswith("/api/")]
    assert hub.check_disk(plan, tmp_path / "m", reserve_gib=0) > 0


def test_nothing_missing_needs_no_disk(srv, tmp_path):
    plan = _plan(srv)
    hub.download(plan, tmp_path / "m")
    assert hub.bytes_missing(plan, tmp_path / "m") == 0
    hub.check_disk(plan, tmp_path / "m", reserve_gib=10 ** 7)   # nothing to fetch: no failure


def test_unknown_repository_and_revision_are_one_line_each(srv):
    with pytest.raises(RepoNotFound) as info:
        _plan(srv, "lab-test/no-such-model")
    assert str(info.value) == (f"repository lab-test/no-such-model not found at {srv.endpoint} "
                               "(if it is private, set HF_TOKEN)")
    with pytest.raises(RevisionNotFound) as info:
        _plan(srv, revision="v9.9")
    assert str(info.value) == f"revision 'v9.9' not found in {REPO} at {srv.endpoint}"


def test_a_gated_repository_asks_for_hf_token_and_works_with_it(srv, tmp_path):
    with pytest.raises(RepoGated) as info:
        _plan(srv, GATED)
    assert "HTTP 401" in str(info.value) and "set HF_TOKEN" in str(info.value)
    with pytest.raises(RepoGated, match="HF_TOKEN is set but its token has no access"):
        _plan(srv, GATED, token="hf_wrong")
    plan = _plan(srv, GATED, token=TOKEN)
    hub.download(plan, tmp_path / "g", token=TOKEN)
    hub.verify(plan, tmp_path / "g")
    heads = [r for r in srv.requests if r.method == "HEAD" and GATED in r.path]
    cdn = [r for r in srv.requests if r.path.startswith("/cdn/") and r.body_bytes]
    assert heads and all(r.authorized for r in heads)
    assert cdn and not any(r.authorized for r in cdn)    # the token never leaves the hub


def test_the_token_never_appears_in_a_message_repr_or_file(srv, tmp_path):
    errors = []
    for call in (lambda: _plan(srv, GATED, token="hf_wrong-" + TOKEN),
                 lambda: _plan(srv, "lab-test/nope", token=TOKEN),
                 lambda: _plan(srv, GATED, revision="nope", token=TOKEN),
                 lambda: hub.plan_download(REPO, endpoint=f"http://127.0.0.1:{_closed_port()}",
                                           token=TOKEN)):
        with pytest.raises(HubError) as info:
            call()
        errors.append(info.value)
    plan = _plan(srv, GATED, token=TOKEN)
    result = hub.download(plan, tmp_path / "g", token=TOKEN)
    hub.verify(plan, tmp_path / "g")
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + \
            [str(e.fix) for e in errors] + [str(e.evidence) for e in errors] + \
            [repr(plan), repr(result), hub.manual_command(GATED, local_dir=tmp_path / "g")]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "g" / ".cache").rglob("*") if p.is_file()]
    assert not [t for t in texts if TOKEN in t]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_says_the_hub_could_not_be_reached_and_how_to_use_a_local_path():
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(HubUnreachable) as info:
        hub.plan_download(REPO, endpoint=endpoint)
    message = str(info.value)
    assert message.startswith(f"the hub could not be reached at {endpoint}")
    assert "--model /path/to/model" in message and "\n" not in message


def test_endpoint_comes_from_the_flag_then_the_config_then_hf_endpoint():
    env = {"HF_ENDPOINT": "https://hf-mirror.com/"}
    assert hub.resolve_endpoint("hf", None, "", env) == "https://hf-mirror.com"
    assert hub.resolve_endpoint("hf", None, "http://cfg", env) == "http://cfg"
    assert hub.resolve_endpoint("hf", "http://flag", "http://cfg", env) == "http://flag"
    assert hub.resolve_endpoint("hf", None, "", {}) == "https://huggingface.co"
    assert hub.resolve_endpoint("modelscope", None, "", env) == "https://www.modelscope.cn"


def test_manual_command_is_what_a_learner_types():
    assert hub.cli_name() == "hf"   # huggingface_hub >= 1.0 ships `hf`, not `huggingface-cli`
    assert hub.manual_command("Qwen/Qwen2.5-7B-Instruct", local_dir="/m/Qwen",
                              endpoint="https://hf-mirror.com") == (
        "HF_ENDPOINT=https://hf-mirror.com hf download Qwen/Qwen2.5-7B-Instruct --local-dir /m/Qwen")
    assert hub.manual_command("Qwen/Qwen2.5-7B-Instruct", local_dir="/m/Qwen", revision="v1",
                              endpoint="https://huggingface.co") == (
        "hf download Qwen/Qwen2.5-7B-Instruct --revision v1 --local-dir /m/Qwen")
    assert hub.manual_command("Qwen/Qwen2.5-7B-Instruct", local_dir="/m/Qwen",
                              source="modelscope") == (
        "modelscope download --model Qwen/Qwen2.5-7B-Instruct --local_dir /m/Qwen")


def test_modelscope_without_its_client_is_one_line():
    pytest.importorskip("huggingface_hub")
    try:
        import modelscope_hub  # noqa: F401
        pytest.skip("the modelscope client is installed here")
    except ImportError:
        pass
    with pytest.raises(HubClientMissing) as info:
        hub.plan_download("Qwen/Qwen2.5-7B-Instruct", endpoint=hub.MODELSCOPE_ENDPOINT,
                          source="modelscope")
    assert "not installed" in str(info.value) and "vllm-lab[modelscope]" in info.value.fix


def test_the_manual_command_does_the_same_download_by_hand(srv, tmp_path):
    """The line shown to the learner, run as they would (the real `hf` CLI), gets the same
    files that `download` + `verify` accept."""
    import os
    import shlex
    import shutil
    import subprocess
    if not shutil.which("hf"):
        pytest.skip("the `hf` command of huggingface_hub is not on PATH")
    line = hub.manual_command(REPO, local_dir=tmp_path / "by-hand", endpoint=srv.endpoint)
    words = shlex.split(line)
    env = dict(os.environ, **dict(w.split("=", 1) for w in words if "=" in w.split("/")[0]))
    argv = [w for w in words if "=" not in w.split("/")[0]]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = _plan(srv)
    assert not hub.mismatches(plan, tmp_path / "by-hand")
