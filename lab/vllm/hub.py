"""Download a model repository from a hub — Hugging Face, a mirror of it (its endpoint, e.g.
the seed's `HF_ENDPOINT=https://hf-mirror.com`), or ModelScope — with a disk check, progress,
resume and SHA-256 verification.

Command line equivalent:
    HF_ENDPOINT=https://hf-mirror.com hf download Qwen/Qwen2.5-7B-Instruct --local-dir DIR

Pure functions with explicit parameters (no session, no logbook): `plan_download` reads the
file list with sizes and hashes, `check_disk` compares what is still to fetch with the free
space, `download` fetches what is missing, `verify` hashes every file against the hub's
SHA-256 (LFS files) or git blob id (the others), `is_present` says whether a verified copy is
already there. Client errors become the named LabErrors of lab.errors, one line each; a token
is passed to the client and never appears in a message, a result or a repr.

How resume works (huggingface_hub 2.4): within a run the client's `http_get` resumes a dropped
transfer itself with `Range: bytes=N-` (up to 5 tries while no byte arrives). Across runs its
`hf_hub_download` keeps completed files but deletes the partial one (a process-unique temp
file, huggingface_hub PR #4228). So large (LFS) files are fetched here with that same
`http_get`, given `resume_size`, into a partial file under `<local_dir>/.cache/vllm-lab/` that
survives an interrupted run; the next run continues it where it stopped. Small (git) files go
through `hf_hub_download` unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lab.core.errors import (
    ChecksumMismatch,
    DiskTooSmall,
    HubClientMissing,
    HubError,
    HubUnreachable,
    LabError,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
)

SOURCES = ("hf", "modelscope")
HF_ENDPOINT = "https://huggingface.co"
MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
TOKEN_ENV = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN"}
DEFAULT_REVISION = {"hf": "main", "modelscope": "master"}
GIB = 1024**3
STATE_DIR = Path(".cache") / "vllm-lab"  # inside local_dir: partial files, the verified stamp
HASH_CHUNK = 8 * 1024 * 1024

#: progress(bytes_done, bytes_total): called before the first byte (bytes_done then counts
#: what is already on disk) and as bytes arrive, from the download threads.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class RepoFile:
    path: str
    size_bytes: int
    sha256: str | None = None  # the hub's SHA-256 of the content (LFS files; all on ModelScope)
    blob_id: str | None = None  # git blob id: SHA-1 of b"blob <size>\0" + content

    @property
    def large(self) -> bool:
        """Stored in LFS (weights): resumable, verified by SHA-256."""
        return self.sha256 is not None


@dataclass(frozen=True)
class DownloadPlan:
    """What one repository at one revision holds, as the hub lists it."""

    repo_id: str
    revision: str
    commit: str  # what the revision resolved to
    source: str  # hf | modelscope
    endpoint: str
    files: tuple[RepoFile, ...] = field(default=())

    @property
    def bytes_total(self) -> int:
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class DownloadResult:
    repo_id: str
    revision: str
    commit: str
    source: str
    endpoint: str
    local_dir: str
    files: int  # in the repository
    files_fetched: int  # fetched (or continued) by this run
    bytes_total: int
    bytes_fetched: int  # received by this run
    bytes_resumed: int  # kept from an earlier run's partial files
    seconds: float  # wall time of the transfer
    mb_per_s: float | None  # bytes_fetched / seconds, MB = 10^6 bytes


@dataclass(frozen=True)
class Mismatch:
    path: str
    problem: str  # "missing", "size ...", "SHA-256 ..."


# -- endpoint, places, the manual command ------------------------------------------------
def resolve_endpoint(
    source: str,
    flag: str | None = None,
    configured: str | None = None,
    environ: dict[str, str] | None = None,
) -> str:
    """The endpoint to use: --endpoint, else the config's download.endpoint, else the
    client's own variable (HF_ENDPOINT; MODELSCOPE_ENDPOINT), else the public hub."""
    env = os.environ if environ is None else environ
    var = "HF_ENDPOINT" if source == "hf" else "MODELSCOPE_ENDPOINT"
    default = HF_ENDPOINT if source == "hf" else MODELSCOPE_ENDPOINT
    return (flag or configured or env.get(var) or default).rstrip("/")


def token_from_env(source: str, environ: dict[str, str] | None = None) -> str | None:
    """The hub token from the environment (HF_TOKEN; MODELSCOPE_API_TOKEN), or None."""
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV[source]) or None


def looks_local(model: str) -> bool:
    """A local folder rather than a hub id ("org/name")."""
    return model.startswith(("/", ".", "~")) or Path(os.path.expanduser(model)).exists()


def default_local_dir(models_dir: Path, repo_id: str) -> Path:
    """Where a repository goes by default: <models_dir>/<org>/<name>."""
    return Path(models_dir) / repo_id


def cli_name() -> str:
    """The download command the installed huggingface_hub provides: `hf` (1.0 and later)
    or `huggingface-cli` (before; the seed's)."""
    try:
        names = {
            ep.name
            for ep in importlib.metadata.distribution("huggingface_hub").entry_points
            if ep.group == "console_scripts"
        }
    except importlib.metadata.PackageNotFoundError:
        return "hf"
    return "hf" if "hf" in names or not names else "huggingface-cli"


def manual_command(
    repo_id: str,
    *,
    local_dir: str | Path,
    revision: str | None = None,
    source: str = "hf",
    endpoint: str | None = None,
) -> str:
    """The line a learner would type to do the same download by hand (no token in it:
    the client reads HF_TOKEN / MODELSCOPE_API_TOKEN from the environment)."""
    if source == "modelscope":
        argv = ["modelscope", "download", "--model", repo_id]
        argv += ["--revision", revision] if revision else []
        argv += ["--local_dir", str(local_dir)]
        prefix = (
            f"MODELSCOPE_ENDPOINT={endpoint} "
            if endpoint and endpoint != MODELSCOPE_ENDPOINT
            else ""
        )
        return prefix + shlex.join(argv)
    argv = [cli_name(), "download", repo_id]
    argv += ["--revision", revision] if revision and revision != "main" else []
    argv += ["--local-dir", str(local_dir)]
    prefix = f"HF_ENDPOINT={endpoint} " if endpoint and endpoint != HF_ENDPOINT else ""
    return prefix + shlex.join(argv)


# -- plan --------------------------------------------------------------------------------
def plan_download(
    repo_id: str,
    revision: str | None = None,
    *,
    endpoint: str,
    token: str | None = None,
    source: str = "hf",
) -> DownloadPlan:
    """The repository's file list with sizes and hashes, and the commit the revision
    resolves to (one hub call: the model info API with blobs).

    Command line equivalent: curl "$HF_ENDPOINT/api/models/REPO/revision/REV?blobs=true"
    """
    if source not in SOURCES:
        raise LabError(f"unknown download source {source!r}; choose one of {', '.join(SOURCES)}")
    revision = revision or DEFAULT_REVISION[source]
    if source == "modelscope":
        return _plan_modelscope(repo_id, revision, endpoint, token)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token, library_name="vllm-lab")
    with client_errors(repo_id, revision, endpoint, token):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        siblings = info.siblings or []
        if any(s.size is None for s in siblings):  # a mirror without blob sizes: ask the tree
            from huggingface_hub.hf_api import RepoFile as HfRepoFile

            tree = [
                e
                for e in api.list_repo_tree(repo_id, revision=info.sha, recursive=True)
                if isinstance(e, HfRepoFile)
            ]
            files = tuple(
                RepoFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None, e.blob_id)
                for e in tree
            )
        else:
            files = tuple(
                RepoFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None, s.blob_id)
                for s in siblings
            )
    if not info.sha:
        raise HubError(f"the hub at {endpoint} gave no commit for {repo_id}@{revision}")
    return DownloadPlan(repo_id, revision, info.sha, "hf", endpoint, files)


def _plan_modelscope(repo_id: str, revision: str, endpoint: str, token: str | None) -> DownloadPlan:
    api = _modelscope().HubApi(endpoint=endpoint, token=token)
    with client_errors(repo_id, revision, endpoint, token, source="modelscope"):
        listed = api.list_repo_files(repo_id, "model", revision=revision, recursive=True)
    files = tuple(
        RepoFile(f.path, int(f.size), f.sha256 or None, None) for f in listed if not f.is_dir
    )
    # ModelScope's file list names no commit: the revision is recorded as given.
    return DownloadPlan(repo_id, revision, revision, "modelscope", endpoint, files)


def _modelscope():
    try:
        import modelscope_hub
    except ImportError:
        raise HubClientMissing(
            "--source modelscope needs the ModelScope client, which is not installed",
            fix="pip install 'vllm-lab[modelscope]'  (or: pip install modelscope)",
        ) from None
    return modelscope_hub


# -- disk --------------------------------------------------------------------------------
def bytes_missing(plan: DownloadPlan, local_dir: str | Path) -> int:
    """Bytes still to fetch: files not complete on disk, less their kept partial bytes."""
    local_dir = Path(local_dir)
    return sum(
        f.size_bytes - _partial_size(local_dir, f)
        for f in plan.files
        if not _complete(local_dir, f)
    )


def check_disk(plan: DownloadPlan, local_dir: str | Path, reserve_gib: float) -> int:
    """Fail, before any byte is fetched, when the disk under `local_dir` cannot hold what is
    still to download plus `reserve_gib`. Returns the free bytes seen."""
    where = _existing_parent(Path(local_dir))
    free = shutil.disk_usage(where).free
    missing = bytes_missing(plan, local_dir)
    needed = missing + int(reserve_gib * GIB)
    if missing and needed > free:
        raise DiskTooSmall(
            f"not enough disk for {plan.repo_id}: needs {needed / GIB:.1f} GiB "
            f"({missing / GIB:.1f} GiB to download + {reserve_gib:g} GiB reserve), "
            f"{free / GIB:.1f} GiB free at {where}",
            fix="free some space, pass --local-dir on a larger disk, or lower download.reserve_gib",
        )
    return free


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- download ----------------------------------------------------------------------------
class _Cancelled(Exception):
    """Raised inside a download thread once another thread failed or Ctrl-C was pressed."""


class _Counter:
    """Bytes done across threads, reported to `progress`."""

    def __init__(self, total: int, done: int, progress: ProgressFn | None):
        self.total, self.done, self.fetched = total, done, 0
        self.progress = progress
        self.cancel = threading.Event()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.cancel.is_set():
            raise _Cancelled()
        with self._lock:
            self.done += n
            self.fetched += max(n, 0)
            done = self.done
        if self.progress:
            self.progress(done, self.total)


def _bar_class(counter: _Counter) -> type:
    """A tqdm look-alike for the client's `tqdm_class`: it draws nothing and passes each
    update to `counter` (the client calls `cls(**kwargs)` for a class that is not its own
    tqdm, then `update(n)` per chunk)."""

    class Bar:
        def __init__(self, *args, **kwargs):
            self.n, self.total = 0, kwargs.get("total")

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            counter.add(int(n or 0))

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def close(self) -> None:
            pass

        def refresh(self, *args, **kwargs) -> None:
            pass

        def set_description(self, *args, **kwargs) -> None:
            pass

        set_description_str = set_postfix_str = set_postfix = reset = set_description

    return Bar


def download(
    plan: DownloadPlan,
    local_dir: str | Path,
    *,
    token: str | None = None,
    progress: ProgressFn | None = None,
    max_workers: int = 8,
) -> DownloadResult:
    """Fetch every file of `plan` not complete in `local_dir` (large files continue from a
    kept partial file), `max_workers` files at a time. It does not verify: call `verify`.

    Command line equivalent: hf download REPO --revision COMMIT --local-dir LOCAL_DIR
    """
    local_dir = Path(local_dir).expanduser().absolute()
    local_dir.mkdir(parents=True, exist_ok=True)
    todo = [f for f in plan.files if not _complete(local_dir, f)]
    resumed = sum(_partial_size(local_dir, f) for f in todo)
    counter = _Counter(
        plan.bytes_total, plan.bytes_total - sum(f.size_bytes for f in todo) + resumed, progress
    )
    if progress:
        progress(counter.done, counter.total)
    started = time.monotonic()
    if todo and plan.source == "modelscope":
        _download_modelscope(plan, local_dir, token, counter, max_workers)
    elif todo:
        bar = _bar_class(counter)
        with client_errors(plan.repo_id, plan.revision, plan.endpoint, token):
            _run_all(todo, lambda f: _fetch(plan, f, local_dir, token, bar), counter, max_workers)
    seconds = time.monotonic() - started
    return DownloadResult(
        plan.repo_id,
        plan.revision,
        plan.commit,
        plan.source,
        plan.endpoint,
        str(local_dir),
        files=len(plan.files),
        files_fetched=len(todo),
        bytes_total=plan.bytes_total,
        bytes_fetched=counter.fetched,
        bytes_resumed=resumed,
        seconds=round(seconds, 3),
        mb_per_s=round(counter.fetched / seconds / 1e6, 2)
        if counter.fetched and seconds > 0
        else None,
    )


def _run_all(
    todo: list[RepoFile], fetch: Callable[[RepoFile], None], counter: _Counter, max_workers: int
) -> None:
    """Run `fetch` over `todo` in threads; on the first error (or Ctrl-C) stop the others
    at their next chunk (their partial files stay) and raise it."""
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(max_workers, len(todo))), thread_name_prefix="vllm-lab-download"
    )
    try:
        for fut in as_completed([pool.submit(fetch, f) for f in todo]):
            fut.result()
    except BaseException:
        counter.cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _fetch(plan: DownloadPlan, f: RepoFile, local_dir: Path, token: str | None, bar: type) -> None:
    dest = local_dir / f.path
    if f.large:
        return _fetch_resumable(plan, f, dest, _partial_path(local_dir, f), token, bar)
    from huggingface_hub import hf_hub_download

    dest.unlink(missing_ok=True)  # a wrong-sized copy: the client would keep it
    hf_hub_download(
        plan.repo_id,
        f.path,
        revision=plan.commit,
        local_dir=str(local_dir),
        endpoint=plan.endpoint,
        token=token,
        tqdm_class=bar,
        library_name="vllm-lab",
    )


def _fetch_resumable(
    plan: DownloadPlan, f: RepoFile, dest: Path, part: Path, token: str | None, bar: type
) -> None:
    """One large file through the client's HEAD (`get_hf_file_metadata`: redirect, size)
    and GET (`http_get` with `resume_size`: a `Range` request when bytes are kept)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(plan.repo_id, f.path, revision=plan.commit, endpoint=plan.endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=plan.endpoint, library_name="vllm-lab")
    headers = build_hf_headers(token=token, library_name="vllm-lab")
    if urlsplit(meta.location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # a CDN: the token stays with the hub
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as fh:
        kept = fh.tell()
        if kept > f.size_bytes:  # not this file's bytes
            fh.truncate(0)
            kept = 0
        http_get(
            meta.location,
            fh,
            resume_size=kept,
            headers=headers,
            expected_size=f.size_bytes,
            displayed_filename=f.path,
            tqdm_class=bar,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)


def _download_modelscope(
    plan: DownloadPlan, local_dir: Path, token: str | None, counter: _Counter, max_workers: int
) -> None:
    """ModelScope's own snapshot download (its resume and retries), reporting bytes."""
    ms = _modelscope()
    from modelscope_hub.compat.snapshot_download import snapshot_download

    base: type = ms.ProgressCallback

    class Callback(base):  # per file: Callback(filename, file_size), then update(n)
        def update(self, size: int) -> None:
            counter.add(int(size))

    with client_errors(plan.repo_id, plan.revision, plan.endpoint, token, source="modelscope"):
        snapshot_download(
            repo_id=plan.repo_id,
            revision=plan.revision,
            local_dir=str(local_dir),
            token=token,
            endpoint=plan.endpoint,
            max_workers=max_workers,
            progress_callbacks=[Callback],
        )


def _complete(local_dir: Path, f: RepoFile) -> bool:
    path = local_dir / f.path
    return path.is_file() and path.stat().st_size == f.size_bytes


def _partial_path(local_dir: Path, f: RepoFile) -> Path:
    return local_dir / STATE_DIR / "partial" / f"{f.path}.{(f.sha256 or '')[:16]}.part"


def _partial_size(local_dir: Path, f: RepoFile) -> int:
    if not f.large:
        return 0
    part = _partial_path(local_dir, f)
    size = part.stat().st_size if part.is_file() else 0
    return size if size <= f.size_bytes else 0


# -- verify ------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _expected(f: RepoFile) -> str | None:
    return f.sha256 or f.blob_id


def _check_one(local_dir: Path, f: RepoFile) -> Mismatch | None:
    path = local_dir / f.path
    if not path.is_file():
        return Mismatch(f.path, "missing")
    size = path.stat().st_size
    if size != f.size_bytes:
        return Mismatch(f.path, f"size {size} bytes, the hub says {f.size_bytes}")
    if f.sha256:
        got = file_sha256(path)
        if got != f.sha256:
            return Mismatch(f.path, f"SHA-256 {got[:12]}…, the hub says {f.sha256[:12]}…")
    elif f.blob_id:
        got = git_blob_id(path)
        if got != f.blob_id:
            return Mismatch(f.path, f"git blob id {got[:12]}…, the hub says {f.blob_id[:12]}…")
    return None


def mismatches(plan: DownloadPlan, local_dir: str | Path, workers: int = 4) -> list[Mismatch]:
    """Every file of `plan` whose bytes in `local_dir` differ from the hub's hash."""
    local_dir = Path(local_dir)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # hashlib releases the GIL
        found = list(pool.map(lambda f: _check_one(local_dir, f), plan.files))
    return [m for m in found if m is not None]


def verify(plan: DownloadPlan, local_dir: str | Path) -> float:
    """Hash every file against the hub (SHA-256 of LFS files, git blob id of the others).
    A mismatch raises ChecksumMismatch naming the file, which is removed so the next run
    fetches it anew. On success a stamp (size, mtime, hash) lets `is_present` skip the
    hashing next time. Returns the seconds spent.

    Command line equivalent: sha256sum LOCAL_DIR/*.safetensors
    """
    local_dir = Path(local_dir)
    started = time.monotonic()
    bad = mismatches(plan, local_dir)
    if bad:
        for m in bad:
            if m.problem != "missing":
                (local_dir / m.path).unlink(missing_ok=True)
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        raise ChecksumMismatch(
            f"checksum mismatch: {bad[0].path}: {bad[0].problem}{more}; removed, run the "
            "download again to fetch it anew",
            evidence="\n".join(f"{m.path}: {m.problem}" for m in bad),
        )
    _write_stamp(plan, local_dir)
    return round(time.monotonic() - started, 3)


def _stamp_path(local_dir: Path) -> Path:
    return local_dir / STATE_DIR / "verified.json"


def _write_stamp(plan: DownloadPlan, local_dir: Path) -> None:
    files = {}
    for f in plan.files:
        st = (local_dir / f.path).stat()
        files[f.path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": _expected(f)}
    path = _stamp_path(local_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"repo_id": plan.repo_id, "commit": plan.commit, "files": files}))
    os.replace(tmp, path)


def _read_stamp(local_dir: Path) -> dict | None:
    try:
        stamp = json.loads(_stamp_path(local_dir).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else None


def _unchanged(local_dir: Path, path: str, seen: dict) -> bool:
    try:
        st = (local_dir / path).stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (seen.get("size"), seen.get("mtime_ns"))


def is_present(plan: DownloadPlan, local_dir: str | Path) -> bool:
    """Every file of `plan` is in `local_dir`, unchanged since `verify` hashed it (same size,
    modification time and expected hash in the stamp). No file is read."""
    local_dir = Path(local_dir)
    stamp = _read_stamp(local_dir)
    if stamp is None:
        return False
    for f in plan.files:
        seen = stamp["files"].get(f.path)
        if (
            not seen
            or (seen.get("hash"), seen.get("size")) != (_expected(f), f.size_bytes)
            or not _unchanged(local_dir, f.path, seen)
        ):
            return False
    return True


def has_stamp(local_dir: str | Path, repo_id: str) -> bool:
    """A verified copy of `repo_id` is in `local_dir`, unchanged since (no hub call, no file
    read): what serve can use when the hub cannot be asked."""
    local_dir = Path(local_dir)
    stamp = _read_stamp(local_dir)
    return bool(
        stamp
        and stamp.get("repo_id") == repo_id
        and stamp["files"]
        and all(_unchanged(local_dir, path, seen) for path, seen in stamp["files"].items())
    )


# -- client errors -> one line -----------------------------------------------------------
def _connection_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx", "requests"):
        try:
            m = __import__(mod)
        except ImportError:
            continue
        for name in ("ConnectError", "ConnectionError", "TimeoutException", "Timeout"):
            cls = getattr(m, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


@contextmanager
def client_errors(
    repo_id: str, revision: str, endpoint: str, token: str | None, source: str = "hf"
) -> Iterator[None]:
    """Turn the hub client's exceptions into one-line LabErrors. The token is never put in
    a message; only whether one was given."""
    var = TOKEN_ENV[source]
    local_hint = (
        "to serve a model you already have, pass its folder: "
        "--model /path/to/model (a folder with config.json)"
    )
    try:
        yield
    except (LabError, _Cancelled, KeyboardInterrupt):
        raise
    except Exception as err:
        status, code = _status(err)
        name = type(err).__name__
        evidence = (
            f"{name}: HTTP {status} {code or ''}".strip()
            if status
            else f"{name}: {_first_line(err)}"
        )
        if name in ("GatedRepoError", "AuthenticationError", "PermissionDeniedError") or (
            status in (401, 403) and name != "RepositoryNotFoundError"
        ):
            why = (
                f"{var} is set but its token has no access (accept the model's terms on the "
                "hub, or use a token that can read it)"
                if token
                else f"set {var} to a token that can read it (read from the environment, never stored)"
            )
            raise RepoGated(
                f"{repo_id} at {endpoint} is gated or private (HTTP {status or 401}): {why}",
                evidence=evidence,
            ) from None
        if name == "RevisionNotFoundError":
            raise RevisionNotFound(
                f"revision {revision!r} not found in {repo_id} at {endpoint}", evidence=evidence
            ) from None
        if name in ("RepositoryNotFoundError", "NotExistError"):
            private = "" if token else f" (if it is private, set {var})"
            raise RepoNotFound(
                f"repository {repo_id} not found at {endpoint}{private}", evidence=evidence
            ) from None
        if name in (
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "NetworkError",
            "RequestTimeoutError",
        ) or isinstance(err, _connection_errors()):
            raise HubUnreachable(
                f"the hub could not be reached at {endpoint} ({name}); {local_hint}",
                fix=local_hint,
                evidence=evidence,
            ) from None
        if status:
            raise HubError(
                f"the hub at {endpoint} answered HTTP {status} for {repo_id}: {_first_line(err)}",
                evidence=evidence,
            ) from None
        raise HubError(
            f"download of {repo_id} from {endpoint} failed: {name}: {_first_line(err)}",
            evidence=evidence,
        ) from None


def _status(err: BaseException) -> tuple[int | None, str | None]:
    response = getattr(err, "response", None)
    if response is None:
        return getattr(err, "status_code", None), None
    headers = getattr(response, "headers", {}) or {}
    return getattr(response, "status_code", None), headers.get("X-Error-Code")
