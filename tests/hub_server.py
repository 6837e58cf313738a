"""A local stand-in for the Hugging Face hub, on 127.0.0.1, for ``huggingface_hub`` and
``transformers`` (and so gpt2load) to download from with ``HF_ENDPOINT`` pointing at it.

It answers what those libraries ask (read from huggingface_hub 2.4's ``hf_api.py``,
``file_download.py`` and ``utils/_http.py``), as the real hub answers it:

- ``GET /api/models/<repo>`` and ``/api/models/<repo>/revision/<rev>``: the repo's ``sha``
  (its commit) and ``siblings``;
- ``GET /api/models/<repo>/tree/<rev>[/<folder>]?recursive=...``: ``{"type", "oid", "size",
  "path", "lfs": {"oid", "size", "pointerSize"}}`` per entry (folders too when recursive);
- ``HEAD``/``GET /<repo>/resolve/<rev>/<file>``: a small file with ``ETag`` (its git blob id)
  and ``X-Repo-Commit``; an LFS file (weights) as a 302 to ``/_cdn/<sha256>`` on another port (the CDN), carrying
  ``X-Linked-Etag`` (the sha256), ``X-Linked-Size`` and ``X-Repo-Commit``; ``Range`` served;
- errors as ``X-Error-Code`` says them: ``RepoNotFound`` (401 for a private repo asked without
  ``Authorization: Bearer <token>``, 404 for a missing one), ``GatedRepo`` (403),
  ``RevisionNotFound`` and ``EntryNotFound`` (404).

Every request is logged (``requests``), so a test can assert what was, or was not, fetched.

    with StandInHub() as hub:
        hub.add_repo("org/tiny", folder)                 # a save_pretrained folder
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
        assert not hub.fetched("org/tiny", "model.safetensors")
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files the real hub stores with git LFS (its default .gitattributes): their bytes live on a
# CDN, and their ETag is their sha256.
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ckpt", ".pt", ".pth")
TOKEN = "hf_standIn_s3cret_token_0123456789"


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's bytes: what the hub sends as a small file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    private: bool = False
    gated: bool = False

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorized: bool
    status: int


@dataclass
class StandInHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    token: str = TOKEN

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []  # the hub, then its CDN
        self.cdn: dict[str, bytes] = {}

    # -- content -------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: Path | dict[str, bytes],
        *,
        private: bool = False,
        gated: bool = False,
    ) -> str:
        """Serve a folder's files (or name -> bytes) as ``repo_id``'s main branch; the commit."""
        if isinstance(files, Path):
            files = {
                str(p.relative_to(files)): p.read_bytes() for p in files.rglob("*") if p.is_file()
            }
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        repo = Repo(dict(files), digest.hexdigest(), private, gated)
        with self._lock:
            self.repos[repo_id] = repo
            for name, data in files.items():
                if repo.is_lfs(name):
                    self.cdn[hashlib.sha256(data).hexdigest()] = data
        return repo.commit

    def fetched(self, repo_id: str, name: str) -> list[Request]:
        """The requests for a file's bytes (its resolve GET, and the CDN GET it leads to)."""
        data = self.repos[repo_id].files.get(name)
        cdn = f"/_cdn/{hashlib.sha256(data).hexdigest()}" if data is not None else None
        resolve = re.compile(rf"^/{re.escape(repo_id)}/resolve/[^/]+/{re.escape(name)}$")
        return [
            r
            for r in self.requests
            if r.method == "GET" and (resolve.match(r.path) or r.path == cdn)
        ]

    # -- server --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """Another origin, as the real CDN is: huggingface_hub follows a redirect that stays on
        the hub, and stops at one that leaves it (taking the file's facts from the 302)."""
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def __enter__(self) -> StandInHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        for _ in range(2):
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
            self._servers.append(httpd)
        return self

    def stop(self) -> None:
        """Shut the servers down: a client now gets "connection refused"."""
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree)/(?P<rest>.+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet: the log is ``hub.requests``
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(head=False)

    # -- routing -------------------------------------------------------------------------
    def _answer(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        authorized = self.headers.get("Authorization") == f"Bearer {self.hub.token}"
        status = self._route(path, parse_qs(url.query), authorized, head)
        with self.hub._lock:
            self.hub.requests.append(
                Request(self.command, path, self.headers.get("Range"), authorized, status)
            )

    def _route(self, path: str, query: dict[str, list[str]], authorized: bool, head: bool) -> int:
        if path.startswith("/_cdn/"):
            data = self.hub.cdn.get(path.removeprefix("/_cdn/"))
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            return self._bytes(data, f'"{path.removeprefix("/_cdn/")}"', {}, head)
        match = _API.match(path) or _RESOLVE.match(path)
        repo = self.hub.repos.get(match["repo"]) if match else None
        if match is None:
            return self._error(404, None, "Not Found")
        if repo is None or (repo.private and not authorized):
            # The hub says "not found" to a stranger asking for a private repo, with a 401.
            status = 401 if repo is not None or not authorized else 404
            return self._error(status, "RepoNotFound", "Repository not found")
        if repo.gated and not authorized and match.re is _RESOLVE:
            return self._error(403, "GatedRepo", "Access to this model is restricted")
        if match.re is _RESOLVE:
            return self._resolve(repo, match["repo"], match["rev"], match["file"], head)
        rev, _, folder = (match["rest"] or "main").partition("/")
        if rev not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if match["kind"] == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._json(self._tree(repo, folder, recursive))
        siblings = [{"rfilename": name} for name in sorted(repo.files)]
        info = {"id": match["repo"], "modelId": match["repo"], "sha": repo.commit}
        info |= {"private": repo.private, "gated": repo.gated, "siblings": siblings}
        return self._json(info)

    def _tree(self, repo: Repo, folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for name, data in sorted(repo.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                sub = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(sub, {"type": "directory", "oid": git_blob_id(sub.encode())})
                    entries[sub] |= {"size": 0, "path": sub}
            if len(parts) > 1 and not recursive:
                continue
            entry = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
            if repo.is_lfs(name):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries[name] = entry
        return list(entries.values())

    def _resolve(self, repo: Repo, repo_id: str, rev: str, name: str, head: bool) -> int:
        if rev not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        data = repo.files.get(name)
        headers = {"X-Repo-Commit": repo.commit}
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", headers)
        if repo.is_lfs(name):
            sha256 = hashlib.sha256(data).hexdigest()
            headers |= {"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))}
            headers |= {
                "ETag": f'"{git_blob_id(data)}"',
                "Location": f"{self.hub.cdn_url}/_cdn/{sha256}",
            }
            return self._send(302, b"", headers, head)
        return self._bytes(data, f'"{git_blob_id(data)}"', headers, head)

    # -- answers -------------------------------------------------------------------------
    def _bytes(self, data: bytes, etag: str, headers: dict[str, str], head: bool) -> int:
        headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if ranged is None:
            return self._send(200, data, headers, head)
        start = int(ranged[1] or 0)
        end = min(int(ranged[2]) + 1 if ranged[2] else len(data), len(data))
        if start >= len(data):
            headers["Content-Range"] = f"bytes */{len(data)}"
            return self._send(416, b"", headers, head)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return self._send(206, data[start:end], headers, head)

    def _json(self, value: object) -> int:
        body = json.dumps(value).encode()
        return self._send(200, body, {"Content-Type": "application/json"}, head=False)

    def _error(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None
    ) -> int:
        headers = {
            **(headers or {}),
            "X-Error-Message": message,
            "Content-Type": "application/json",
        }
        if code is not None:
            headers["X-Error-Code"] = code
        return self._send(
            status, json.dumps({"error": message}).encode(), headers, self.command == "HEAD"
        )

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> int:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return status
