"""A real HTTP file server on 127.0.0.1 with switches for the faults downloads must survive.

Tests point a download's mirror at ``server.url`` and never reach the internet.
The server is a genuine threaded ``http.server`` on an ephemeral port, so the
client's sockets, timeouts, redirects and Range requests all run for real.

    from tests.http_server import FileServer, Fault

    with FileServer() as server:
        server.add("/gpt-2/models/124M/hparams.json", b"{...}")
        server.add("/big.bin", data, Fault(cut_after=1000))   # drop the connection once
        server.add_url(release_file.url, data)                 # where a mirror finds it
        download_file("https://origin.invalid/big.bin", dest, mirror=server.url)
        assert server.count("/big.bin") == 2
        assert server.log("/big.bin")[1].range == "bytes=...-"
        assert server.log("/big.bin")[1].time > server.log("/big.bin")[0].time  # monotonic

Every path serves its bytes with ``Range: bytes=N-`` / ``bytes=N-M`` support
(206 with Content-Range, 416 past the end), HEAD and GET. A ``Fault`` changes
what one path does; see its fields. ``add_folder`` serves a whole directory
under a URL prefix (for real-looking release folders). ``serve_file_server`` is a
pytest-friendly generator: ``yield from`` it in a fixture, and ``isolate_downloads``
makes a test's downloads hermetic (see there).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Fault:
    """What one path does wrong. Counters (``*_times``) run down as requests arrive.

    status: answer every request with this status and no body (404, 403, 500 ...).
    fail_times / fail_status / retry_after: the first ``fail_times`` requests get
        ``fail_status`` (503 by default), with a Retry-After header if given.
    cut_after / cut_times: send the headers and ``cut_after`` body bytes, then drop
        the connection, on the first ``cut_times`` data responses.
    stall_after / stall_seconds / stall_times: send ``stall_after`` body bytes, then go
        silent for ``stall_seconds`` before dropping the connection (a read timeout).
    hang_seconds / hang_times: the first ``hang_times`` requests get no answer at all, not
        even a status line, for ``hang_seconds``; then the connection drops (logged as
        status 0). A client without a read timeout would wait forever.
    corrupt_at: flip the byte at this file offset in every response that carries it;
        digest headers still describe the true bytes, as after damage in transit.
    ignore_range: answer a Range request with 200 and the whole file.
    content_md5: send ``Content-MD5`` (base64 MD5 of the whole file) on full responses.
    sha256_etag: send ``ETag: "<sha256>"`` on data responses.
    hub_redirect: like the Hugging Face hub for LFS files: answer with a 302 carrying
        ``X-Linked-Etag: "<sha256>"`` and ``X-Linked-Size``, to ``/_cdn/<sha256>``.
    claimed_sha256: the sha256 that ``sha256_etag``/``hub_redirect`` announce instead of
        the true one (a server vouching for other bytes).
    headers: extra headers on every data response.
    etag / last_modified: the validators sent on data responses, as real hosts send them.
        ``AUTO`` (the default): an ETag from the bytes (an MD5, in quotes, as S3 and Azure
        send) and a Last-Modified that moves on whenever ``add`` replaces the path's bytes;
        None: not sent; any other string: sent as it is. ``sha256_etag`` takes precedence.
        A request's ``If-Range`` is honoured as HTTP says: the Range is served only when
        ``If-Range`` equals the current ETag or Last-Modified, else the whole file (200).
    ignore_if_range: serve the Range whatever ``If-Range`` says (a broken server).
    """

    status: int | None = None
    fail_times: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    cut_after: int | None = None
    cut_times: int = 1
    stall_after: int | None = None
    stall_seconds: float = 1.0
    stall_times: int = 1
    hang_seconds: float = 0.0
    hang_times: int = 0
    corrupt_at: int | None = None
    ignore_range: bool = False
    content_md5: bool = False
    sha256_etag: bool = False
    hub_redirect: bool = False
    claimed_sha256: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = "auto"
    last_modified: str | None = "auto"
    ignore_if_range: bool = False


AUTO = "auto"  # Fault.etag / Fault.last_modified: derived from the bytes and their version
EPOCH = 1_600_000_000  # Last-Modified of a path's first version; each replacement is 1 s later


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int
    headers: dict[str, str]
    time: float = 0.0  # time.monotonic() when the answer was decided, for timing retries


class FileServer:
    """A threaded HTTP server of in-memory files; use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.versions: dict[str, int] = {}  # how often each path's bytes were set
        self.faults: dict[str, Fault] = {}
        self.requests: list[Request] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ----------------------------------------------------------------------------
    def add(self, path: str, data: bytes, fault: Fault | None = None) -> str:
        """Serve ``data`` at ``path`` (leading '/'); returns the path."""
        if not path.startswith("/"):
            raise ValueError(f"paths start with '/': {path!r}")
        with self._lock:
            self.files[path] = bytes(data)
            self.versions[path] = self.versions.get(path, 0) + 1
            if fault is not None:
                self.faults[path] = fault
        return path

    def add_url(self, url: str, data: bytes, fault: Fault | None = None) -> str:
        """Serve ``data`` at the path of ``url``, where ``mirror=server.url`` will look for it.

        Hugging Face URLs get ``Fault(hub_redirect=True)`` by default, as the hub answers
        for weight files with a redirect carrying their sha256.
        """
        parts = urlsplit(url)
        if fault is None and parts.hostname == "huggingface.co":
            fault = Fault(hub_redirect=True)
        return self.add(parts.path, data, fault)

    def add_folder(self, prefix: str, folder: str | Path) -> list[str]:
        """Serve every file under ``folder`` at ``prefix/<relative path>``."""
        folder = Path(folder)
        paths = []
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            paths.append(self.add(f"{prefix.rstrip('/')}/{rel}", file.read_bytes()))
        return paths

    def set_fault(self, path: str, fault: Fault | None) -> None:
        with self._lock:
            if fault is None:
                self.faults.pop(path, None)
            else:
                self.faults[path] = fault

    # -- what happened ----------------------------------------------------------------------
    def log(self, path: str | None = None, method: str = "GET") -> list[Request]:
        with self._lock:
            return [
                r for r in self.requests if r.method == method and (path is None or r.path == path)
            ]

    def count(self, path: str | None = None, method: str = "GET") -> int:
        return len(self.log(path, method))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0

    # -- life cycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FileServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_file_server() -> Iterator[FileServer]:
    """For a pytest fixture: ``yield from serve_file_server()``."""
    with FileServer() as server:
        yield server


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    owner: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # keep test output clean

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client went away, as some tests make it do
            super().handle()

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -- helpers ----------------------------------------------------------------------------
    def _record(self, status: int) -> None:
        owner = self.owner
        with owner._lock:
            owner.requests.append(
                Request(
                    self.command,
                    self.path.split("?")[0],
                    self.headers.get("Range"),
                    status,
                    dict(self.headers.items()),
                    time.monotonic(),
                )
            )

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._record(status)
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, head: bool) -> None:
        owner = self.owner
        path = self.path.split("?")[0]
        with owner._lock:
            if path.startswith("/_cdn/"):
                wanted = path.removeprefix("/_cdn/")
                origin = next((p for p, d in owner.files.items() if _sha256(d) == wanted), None)
                data = owner.files.get(origin) if origin else None
                version = owner.versions.get(origin, 0) if origin else 0
                fault = owner.faults.get(origin, Fault()) if origin else Fault()
                redirected = True
            else:
                data = owner.files.get(path)
                version = owner.versions.get(path, 0)
                fault = owner.faults.get(path, Fault())
                redirected = False
            sends_data = redirected or not fault.hub_redirect
            action = self._next_action(fault, sends_data) if data is not None else "missing"
        if action == "missing":
            self._empty(404)
            return
        if action == "hang":
            self._record(0)
            time.sleep(fault.hang_seconds)
            self._drop()
            return
        assert data is not None
        true_sha = _sha256(data)
        announced_sha = fault.claimed_sha256 or true_sha
        if action == "status":
            self._empty(fault.status or 500)
            return
        if action == "fail":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._empty(fault.fail_status, extra)
            return
        if fault.hub_redirect and not redirected:
            self._empty(
                302,
                {
                    "Location": f"/_cdn/{true_sha}",
                    "X-Linked-Etag": f'"{announced_sha}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{announced_sha}"',
                },
            )
            return
        self._send_data(data, fault, announced_sha, head, action, version)

    def _next_action(self, fault: Fault, sends_data: bool) -> str:
        """Decide (under the owner's lock) what this request gets, running the counters down."""
        if fault.hang_times > 0:
            fault.hang_times -= 1
            return "hang"
        if fault.status is not None:
            return "status"
        if fault.fail_times > 0:
            fault.fail_times -= 1
            return "fail"
        if not sends_data or self.command != "GET":
            return "ok"
        if fault.cut_after is not None and fault.cut_times > 0:
            fault.cut_times -= 1
            return "cut"
        if fault.stall_after is not None and fault.stall_times > 0:
            fault.stall_times -= 1
            return "stall"
        return "ok"

    def _byte_range(
        self, size: int, fault: Fault, etag: str | None, last_modified: str | None
    ) -> tuple[int, int] | None | str:
        """(start, end exclusive) of a satisfiable Range, None for the whole file, 'bad' for 416."""
        header = self.headers.get("Range")
        if not header or fault.ignore_range or not header.startswith("bytes="):
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and not fault.ignore_if_range:
            current = {v for v in (etag, last_modified) if v}
            if if_range.strip() not in current or if_range.strip().startswith("W/"):
                return None  # another version (or no validator): the whole file
        spec = header.removeprefix("bytes=")
        if "," in spec:
            return None  # multiple ranges: answer with the whole file, as HTTP allows
        first, _, last = spec.partition("-")
        if not first.isdigit():
            return None
        start = int(first)
        end = min(int(last) + 1, size) if last.isdigit() else size
        if start >= size or end <= start:
            return "bad"
        return start, end

    def _send_data(
        self, data: bytes, fault: Fault, announced_sha: str, head: bool, action: str, version: int
    ) -> None:
        size = len(data)
        etag = fault.etag
        if fault.sha256_etag:
            etag = f'"{announced_sha}"'
        elif etag == AUTO:
            etag = f'"{hashlib.md5(data).hexdigest()}"'
        last_modified = fault.last_modified
        if last_modified == AUTO:
            last_modified = email.utils.formatdate(EPOCH + version, usegmt=True)
        byte_range = self._byte_range(size, fault, etag, last_modified)
        if byte_range == "bad":
            self._empty(416, {"Content-Range": f"bytes */{size}"})
            return
        start, end = byte_range if isinstance(byte_range, tuple) else (0, size)
        status = 206 if isinstance(byte_range, tuple) else 200
        body = bytearray(data[start:end])
        if fault.corrupt_at is not None and start <= fault.corrupt_at < end:
            body[fault.corrupt_at - start] ^= 0xFF
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if fault.content_md5 and status == 200:
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")
            self.send_header("Content-MD5", md5)
        if etag is not None:
            self.send_header("ETag", etag)
        if last_modified is not None:
            self.send_header("Last-Modified", last_modified)
        for key, value in fault.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if action == "cut":
            self._write(bytes(body[: fault.cut_after]))
            self._drop()
        elif action == "stall":
            self._write(bytes(body[: fault.stall_after]))
            time.sleep(fault.stall_seconds)
            self._drop()
        else:
            self._write(bytes(body))

    def _write(self, chunk: bytes) -> None:
        self.wfile.write(chunk)
        self.wfile.flush()
        with self.owner._lock:
            self.owner.bytes_sent += len(chunk)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# Where a download that forgot its mirror would go: port 9 (discard) on this machine, which
# refuses connections at once, so a mistake fails fast instead of reaching the internet.
UNREACHABLE_MIRROR = "http://127.0.0.1:9"


def isolate_downloads(monkeypatch: Any, workdir: Path) -> None:
    """Make gpt2load downloads in a test hermetic: no real hosts, no waiting, files in ``workdir``.

    Points ``$GPT2LOAD_MIRROR`` at a closed local port (pass ``mirror=server.url`` to
    reach a ``FileServer``), sets the retry backoff to zero, clears the variables
    that could redirect or forbid downloads, and makes ``workdir`` the working
    directory so default folders (``weights/...``) land there.
    """
    monkeypatch.setenv("GPT2LOAD_MIRROR", UNREACHABLE_MIRROR)
    monkeypatch.setenv("GPT2LOAD_BACKOFF", "0")
    for name in ("HF_ENDPOINT", "GPT2LOAD_OFFLINE", "HF_HUB_OFFLINE", "GPT2LOAD_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    # Published names look in the Hugging Face cache too: never the developer's own.
    monkeypatch.setenv("HF_HUB_CACHE", str(Path(workdir) / "hf-cache"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(workdir)


# Stand-ins for OpenAI's tokenizer files: the real ones are 1.5 MB and may be absent here.
FAKE_TOKENIZER = {"encoder.json": b'{"!": 0, "<|endoftext|>": 50256}', "vocab.bpe": b"#v\nh e\n"}


def fake_tokenizer_facts(monkeypatch: Any) -> None:
    """Make the published sizes and sha256 of the tokenizer files those of ``FAKE_TOKENIZER``."""
    from gpt2load import releases

    for name, data in FAKE_TOKENIZER.items():
        facts = (len(data), hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(releases.TOKENIZER_FACTS, name, facts)


def serve_release(
    server: FileServer,
    model: str,
    source: str,
    *,
    first: int = 2_000,
    step: int = 10_000,
    hub: bool = True,
) -> dict[str, bytes]:
    """Serve every file of a built-in release at its real path (random bytes of growing sizes,
    ``FAKE_TOKENIZER`` for the tokenizer); returns path -> bytes. ``hub=False`` leaves out the
    headers a hub sends (digests, linked size)."""
    from gpt2load import releases

    contents: dict[str, bytes] = {}
    for spec in releases.release(model, source).files:
        data = FAKE_TOKENIZER.get(spec.path) or os.urandom(first + len(contents) * step)
        server.add_url(spec.url, data, None if hub else Fault())
        contents[spec.path] = data
    return contents
