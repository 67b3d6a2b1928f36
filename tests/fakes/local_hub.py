"""A real HTTP model hub on 127.0.0.1 that the real huggingface_hub client talks to (stdlib
only). It serves small model repositories through the endpoints the client calls (read from
huggingface_hub 2.4.0's source):

- `GET /api/models/{repo}/revision/{rev}[?blobs=true]` (`HfApi.model_info`): `id`, `sha` (the
  commit) and `siblings`; with `blobs=true` each sibling has `size`, `blobId` and, for LFS
  files, `lfs: {size, sha256, pointerSize}`.
- `GET /api/models/{repo}/tree/{rev}?recursive=...` (`HfApi.list_repo_tree`, which
  `snapshot_download` and so `hf download` call): `type`, `path`, `size`, `oid`, `lfs`.
- `HEAD|GET /{repo}/resolve/{rev}/{file}` (`get_hf_file_metadata`, `hf_hub_download`):
  `X-Repo-Commit`, `ETag` (the git blob id), and `Content-Length`. An LFS file answers
  `302` with `X-Linked-Etag` (its SHA-256), `X-Linked-Size` and a `Location` on a "CDN"
  host (`localhost` instead of `127.0.0.1`: another host to the client, as the real hub's CDN
  is, so the client drops the Authorization header there).
- `GET /cdn/{sha256}`: the LFS bytes, with `Range: bytes=N-` answered `206` +
  `Content-Range` (how the client resumes).
- `GET /api/agent-harnesses`: an empty registry (the client's user-agent telemetry, fetched
  once a day per HF_HOME).
Errors carry the headers the client maps to its exceptions: `X-Error-Code: RepoNotFound`
(404), `RevisionNotFound` (404), `EntryNotFound` (404), `GatedRepo` (401, unless the request
has `Authorization: Bearer <the repo's token>`).

Fault switches (on `LocalHub.faults`): `cut_once` (paths: send half the body, then drop the
connection, once), `fail_after_cut` (paths: after that cut, answer 503 to the next GET, so the
client gives up and a later run must resume), `corrupt` (paths: flip one byte of the body,
headers unchanged). Every request is logged in `LocalHub.requests` (method, path, Range,
status, body bytes sent) for tests to assert on.

Run alone: `python tests/fakes/local_hub.py --port 8899 --repo Qwen/Qwen2.5-7B-Instruct`
prints its endpoint; point `HF_ENDPOINT` (or `--endpoint`) at it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MIB = 1024 * 1024


def git_blob_id(data: bytes) -> str:
    """The git SHA-1 of a blob (what the hub calls a file's `oid`/`blobId`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One repository at one commit: path -> bytes; `lfs` names the files stored in LFS."""
    repo_id: str
    files: dict[str, bytes]
    lfs: set[str]
    token: str | None = None          # gated: requests need `Authorization: Bearer <token>`
    branches: tuple[str, ...] = ("main",)
    commit: str = ""

    def __post_init__(self) -> None:
        # Hashed once: a request must not cost the server a pass over the bytes.
        self.blob_ids = {p: git_blob_id(data) for p, data in self.files.items()}
        self.sha256s = {p: hashlib.sha256(self.files[p]).hexdigest() for p in self.lfs}
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                h.update(path.encode() + self.blob_ids[path].encode())
            self.commit = h.hexdigest()

    def sha256(self, path: str) -> str:
        return self.sha256s.get(path) or hashlib.sha256(self.files[path]).hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out: dict = {"size": len(data), "blobId": self.blob_ids[path]}
        if path in self.lfs:
            out["lfs"] = {"size": len(data), "sha256": self.sha256(path), "pointerSize": 134}
        return out


def small_model(repo_id: str = "lab-test/tiny-model", lfs_mib: float = 3,
                shards: int = 2, token: str | None = None) -> Repo:
    """A few files as a model repository has them: config and tokenizer (git) and `shards`
    safetensors files of `lfs_mib` MiB each (LFS), with bytes that differ per shard."""
    files = {
        "config.json": json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                                   "hidden_size": 64}, indent=2).encode(),
        "generation_config.json": b'{"do_sample": true}\n',
        "tokenizer_config.json": b'{"model_max_length": 2048}\n',
        "README.md": f"# {repo_id}\n\nA test repository served by tests/fakes/local_hub.py.\n".encode(),
    }
    size = int(lfs_mib * MIB)
    for i in range(shards):
        seed = hashlib.sha256(f"{repo_id}:{i}".encode()).digest()
        block = seed * (MIB // len(seed))
        data = (block * (size // len(block) + 1))[:size]
        files[f"model-{i + 1:05d}-of-{shards:05d}.safetensors"] = data
    lfs = {p for p in files if p.endswith(".safetensors")}
    return Repo(repo_id, files, lfs, token=token)


@dataclass
class Faults:
    cut_once: set[str] = field(default_factory=set)
    fail_after_cut: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    _cut_done: set[str] = field(default_factory=set)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int
    authorized: bool


class LocalHub:
    """`with LocalHub([small_model()]) as hub:` serves on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, repos: list[Repo] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.repos = {r.repo_id: r for r in (repos or [small_model()])}
        self.faults = Faults()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def cdn(self) -> str:
        # Another host name for the same loopback server: the client treats it as a CDN.
        return f"http://localhost:{self.port}"

    def start(self) -> LocalHub:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def body_gets(self) -> list[Request]:
        """GETs that sent file bytes (resolve or CDN), i.e. downloads."""
        return [r for r in self.requests if r.method == "GET" and not r.path.startswith("/api/")
                and r.body_bytes > 0]

    def find_sha(self, sha: str) -> tuple[Repo, str] | None:
        for repo in self.repos.values():
            for path, digest in repo.sha256s.items():
                if digest == sha:
                    return repo, path
        return None


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    api_re = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+))?$")
    resolve_re = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # -- plumbing ----------------------------------------------------------------
        def _auth(self, repo: Repo) -> bool:
            return repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                  repo: Repo | None = None, length: int | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            if repo is not None:
                self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            sent = len(body) if self.command != "HEAD" else 0
            # Logged before the client can see the answer, so tests never race the log.
            hub.log(Request(self.command, urlsplit(self.path).path, self.headers.get("Range"),
                            status, sent, bool(self.headers.get("Authorization"))))
            self.end_headers()
            if sent:
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, repo: Repo | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                      "Content-Type": "application/json"}, repo=repo)

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if not self._auth(repo):
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must "
                            "have access to it and be authenticated to access it. Please log in.")
                return None
            return repo

        def _revision_ok(self, repo: Repo, rev: str) -> bool:
            if rev in repo.branches or rev == repo.commit:
                return True
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", repo=repo)
            return False

        # -- routes ------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _route(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            if m := api_re.match(url.path):
                repo = self._repo(unquote(m["repo"]))
                if repo is None:
                    return
                rev = unquote(m["rev"] or "main")
                if not self._revision_ok(repo, rev):
                    return
                if m["kind"] == "tree":
                    return self._tree(repo)
                return self._model_info(repo, "true" in query.get("blobs", []))
            if m := resolve_re.match(url.path):
                repo = self._repo(unquote(m["repo"]))
                if repo is None or not self._revision_ok(repo, unquote(m["rev"])):
                    return
                return self._resolve(repo, unquote(m["file"]))
            if path == "/api/agent-harnesses":  # the client's user-agent telemetry, once a day
                return self._send(200, json.dumps({"standardEnvVars": [], "harnesses": {}}).encode(),
                                  {"Content-Type": "application/json"})
            if path.startswith("/cdn/"):
                found = hub.find_sha(path[len("/cdn/"):])
                if found is None:
                    return self._error(404, "EntryNotFound", "blob not found")
                return self._body(*found)
            self._error(404, "NotFound", f"no route for {path}")

        def _model_info(self, repo: Repo, blobs: bool) -> None:
            siblings = []
            for path in sorted(repo.files):
                sib = {"rfilename": path}
                if blobs:
                    sib.update(repo.entry(path))
                siblings.append(sib)
            body = json.dumps({"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id,
                               "sha": repo.commit, "private": False,
                               "gated": "auto" if repo.token else False, "disabled": False,
                               "tags": ["safetensors"], "siblings": siblings}).encode()
            self._send(200, body, {"Content-Type": "application/json"}, repo=repo)

        def _tree(self, repo: Repo) -> None:
            entries = []
            for path in sorted(repo.files):
                e = repo.entry(path)
                item = {"type": "file", "path": path, "size": e["size"], "oid": e["blobId"]}
                if "lfs" in e:
                    item["lfs"] = {"oid": e["lfs"]["sha256"], "size": e["size"],
                                   "pointerSize": e["lfs"]["pointerSize"]}
                entries.append(item)
            self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"},
                       repo=repo)

        def _resolve(self, repo: Repo, filename: str) -> None:
            if filename not in repo.files:
                return self._error(404, "EntryNotFound", f"{filename} does not exist", repo=repo)
            data = repo.files[filename]
            if filename in repo.lfs:
                sha = repo.sha256(filename)
                return self._send(302, b"", {"Location": f"{hub.cdn}/cdn/{sha}",
                                             "X-Linked-Etag": f'"{sha}"',
                                             "X-Linked-Size": len(data),
                                             "ETag": f'"{repo.blob_ids[filename]}"'}, repo=repo)
            return self._body(repo, filename, etag=repo.blob_ids[filename])

        def _body(self, repo: Repo, filename: str, etag: str | None = None) -> None:
            data = repo.files[filename]
            faults = hub.faults
            headers = {"ETag": f'"{etag or repo.sha256(filename)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if self.command == "GET" and filename in faults.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            if rng := re.match(r"bytes=(\d+)-$", self.headers.get("Range") or ""):
                start = int(rng[1])
                if start >= len(data):
                    return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if self.command == "GET" and filename in faults.fail_after_cut and filename in faults._cut_done:
                faults.fail_after_cut.discard(filename)
                return self._error(503, "ServiceUnavailable", "temporarily unavailable")
            if self.command == "GET" and filename in faults.cut_once and len(body) > 1:
                faults.cut_once.discard(filename)
                faults._cut_done.add(filename)
                return self._cut(status, headers, body)
            self._send(status, body, headers, repo=repo)

        def _cut(self, status: int, headers: dict, body: bytes) -> None:
            """Promise the whole body, send half of it, and drop the connection."""
            half = len(body) // 2
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            hub.log(Request("GET", urlsplit(self.path).path, self.headers.get("Range"), status,
                            half, bool(self.headers.get("Authorization"))))
            self.end_headers()
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.close_connection = True
            try:
                import socket
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--repo", action="append", default=None,
                   help="repository id to serve (repeatable; default lab-test/tiny-model)")
    p.add_argument("--lfs-mib", type=float, default=3, help="size of each LFS shard, MiB")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--token", default=None, help="gate the repositories behind this token")
    args = p.parse_args()
    repos = [small_model(r, args.lfs_mib, args.shards, args.token)
             for r in (args.repo or ["lab-test/tiny-model"])]
    hub = LocalHub(repos, args.host, args.port)
    print(f"local hub: {hub.endpoint} serving {', '.join(hub.repos)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        hub.server.serve_forever()


if __name__ == "__main__":
    main()
