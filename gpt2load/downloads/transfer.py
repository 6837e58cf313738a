"""Moving the bytes of one URL into ``FILE.part`` over as many attempts as it takes, each one
resuming where the last stopped. Redirects are followed by hand, so none leads from https to
http and every hop's digests are heard."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from tqdm.auto import tqdm
from urllib3.exceptions import InvalidHeader, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from .. import __version__
from ..errors import ChecksumError, DownloadError, RetriesExhaustedError, redact
from ..fileio import atomic_write_text, open_fd_nofollow, regular_size
from .digests import Claim, hash_file, header_claims
from .hosts import scheme_allowed, split_url
from .manifest import PART_INFO_SUFFIX, PART_SUFFIX

logger = logging.getLogger("gpt2load.download")

CHUNK_SIZE = 1 << 16  # small enough that a cut connection loses little of what it carried
DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds to connect, seconds of silence while reading
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 30.0
MAX_REDIRECTS = 10
BACKOFF_ENV = "GPT2LOAD_BACKOFF"
USER_AGENT = f"gpt2load/{__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})  # plus every 5xx
IDENTITY = {"Accept-Encoding": "identity"}  # Range offsets and digests count bytes as stored
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_NETWORK = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)

Timeout = float | tuple[float, float]


def make_note(progress: bool, always: bool = False) -> Callable[[str], None]:
    """Status lines go between progress bars, else to the log, or with ``always`` (what even
    ``--quiet`` must show, such as a busy lock) to stderr."""

    def note(message: str) -> None:
        message = redact(message)
        if progress:
            tqdm.write(message, file=sys.stderr)
        elif always:
            print(message, file=sys.stderr, flush=True)
        else:
            logger.info(message)

    return note


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


@dataclass
class Options:
    session: requests.Session
    mirror: str | None = None
    force: bool = False
    fast: bool = False
    progress: bool = True
    retries: int | None = None
    backoff: float | None = None  # None: $GPT2LOAD_BACKOFF, else 1 second
    timeout: Timeout | None = None
    record: bool = False  # for a folder's record: hash every file, prove by HEAD what is unvouched

    def __post_init__(self) -> None:
        self.note = make_note(self.progress)
        # Progress bars count bytes in binary units, fill the terminal, and are off when quiet.
        self.bar = dict(unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True)
        self.bar["disable"] = not self.progress
        self.retries = DEFAULT_RETRIES if self.retries is None else max(0, self.retries)
        self.timeout = DEFAULT_TIMEOUT if self.timeout is None else self.timeout
        self.reached = False  # once a host answered, a failed connection is a flaky network


def backoff_base(backoff: float | None) -> float:
    if backoff is None and (raw := os.environ.get(BACKOFF_ENV)):
        try:
            backoff = float(raw)
        except ValueError:
            raise ValueError(f"{BACKOFF_ENV} must be a number of seconds, got {raw!r}") from None
    return DEFAULT_BACKOFF if backoff is None else max(0.0, float(backoff))


def retry_delay(failures: int, backoff: float, retry_after: float | None = None) -> float:
    """Exponential: ``backoff``, 2x, 4x ... capped; a server's Retry-After is honoured up to the cap."""
    delay = backoff * 2 ** (failures - 1)
    return min(delay if retry_after is None else max(delay, retry_after), MAX_BACKOFF)


def _retry_after(value: str | None) -> float | None:
    try:  # seconds, or an HTTP date
        return float(Retry().parse_retry_after(value or ""))
    except InvalidHeader:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or unknown."""
    match = _CONTENT_RANGE.match(value or "")
    start, total = match.group(1, 3) if match else (None, "*")
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _never_connected(exc: Exception) -> Exception | None:
    """urllib3's account of a connection that was never made: a host name that does not
    resolve (no network, or no such host) or a connection refused or unroutable; else None."""
    cause = getattr(exc.args[0], "reason", None) if exc.args else None
    return cause if isinstance(cause, NewConnectionError) else None


def _reason(exc: Exception) -> str:
    """A short account of a failed attempt (requests' own messages nest several layers)."""
    if isinstance(exc, _Retryable):
        return str(exc)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke mid-file"
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower():
        return "timed out"
    cause = _ERRNO.search(text)  # the operating system's words, under urllib3's layers
    said = cause.group(1).strip() if cause else text[:200]
    if isinstance(_never_connected(exc), NameResolutionError):
        return f"its host name does not resolve ({said})"
    return f"connection failed ({said})"


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def open_url(
    opts: Options, method: str, url: str, allow_http: bool, headers: dict[str, str], label: str
) -> tuple[requests.Response, list[Claim]]:
    """The response to ``method`` on ``url`` after any redirects, and every hop's digests."""
    claims: list[Claim] = []
    target, send = url, dict(headers=headers, stream=True, timeout=opts.timeout)
    for hop in range(MAX_REDIRECTS + 1):
        response = opts.session.request(method, target, allow_redirects=False, **send)
        opts.reached = True
        full = response.status_code == 200
        if response.is_redirect or full or response.status_code == 206:
            claims += header_claims(response.headers, first_hop=hop == 0, full_body=full)
        if not response.is_redirect:
            return response, claims
        here, target = target, urljoin(target, response.headers["Location"])
        response.close()
        try:
            split_url(target, f"the redirect target of {here}")
        except ValueError as exc:
            raise DownloadError(f"{label}: {exc}") from None
        if not scheme_allowed(target, allow_http):
            raise DownloadError(f"{label}: {here} redirects to {target}; refusing to leave https")
    raise DownloadError(f"{label}: more than {MAX_REDIRECTS} redirects from {url}")


@dataclass(frozen=True)
class Validator:
    """A strong ETag, else a Last-Modified: one version of the server's file. Kept for
    ``FILE.part`` in ``FILE.part.json`` and sent back as ``If-Range`` when resuming, so a changed
    file comes back whole (200), never as the rest of another version (206): no file is
    stitched from two."""

    url: str  # redacted: the record beside the part must hold no credentials
    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, url: str, headers: Mapping[str, str]) -> Validator | None:
        etag = headers.get("ETag", "").strip()
        etag = etag if etag.startswith('"') else ""  # If-Range takes only a strong (not W/) tag
        last_modified = headers.get("Last-Modified", "").strip()
        if not (etag or last_modified):
            return None
        return cls(redact(url), etag or None, last_modified or None)

    def contradicts(self, other: Validator | None) -> bool:
        if other is None:
            return False
        if self.etag and other.etag:
            return self.etag != other.etag
        both = self.last_modified and other.last_modified
        return bool(both) and self.last_modified != other.last_modified


def part_info_path(part: Path) -> Path:
    return part.with_name(part.name.removesuffix(PART_SUFFIX) + PART_INFO_SUFFIX)


def read_part_info(part: Path, url: str) -> Validator | None:
    """The validator recorded for ``part`` when it was started from ``url``; None if unknown."""
    try:
        if regular_size(info := part_info_path(part)) is None:
            return None
        data = json.loads(info.read_text(encoding="utf-8"))
        found = Validator(data["url"], data.get("etag"), data.get("last_modified"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, a link, another layout: as good as none
    strings = all(isinstance(v, str | None) for v in (found.etag, found.last_modified))
    usable = strings and found.url == redact(url) and (found.etag or found.last_modified)
    return found if usable else None


def write_part_info(part: Path, validator: Validator | None) -> None:
    """Record (atomically, replacing any link) the version ``part`` holds; None removes it."""
    if validator is None:
        part_info_path(part).unlink(missing_ok=True)
    else:
        atomic_write_text(part_info_path(part), json.dumps(asdict(validator)) + "\n")


def discard(part: Path) -> None:
    """Remove a part and the record of its version (a link is removed, never followed)."""
    part.unlink(missing_ok=True)
    part_info_path(part).unlink(missing_ok=True)


@dataclass
class Transfer:
    """Fills ``part`` with the file at ``url``. A known ``sha256`` (it will check the finished
    file) lets a part whose version is not recorded be resumed: a stitched file would fail it."""

    url: str
    part: Path
    label: str
    allow_http: bool
    size: int | None
    sha256: str | None
    opts: Options

    def __post_init__(self) -> None:
        self.backoff = backoff_base(self.opts.backoff)
        self.claims: set[Claim] = set()
        self.bar: tqdm | None = None
        self.total, self.total_source = self.size, "the expected size"
        self.resumed_from_disk = self.have() > 0  # also refuses a link or FIFO at the part
        self.validator = read_part_info(self.part, self.url) if self.resumed_from_disk else None

    def have(self) -> int:
        return regular_size(self.part) or 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def run(self) -> None:
        """Fill the part, retrying with backoff; each attempt that adds bytes resets the count."""
        failures, best = 0, self.have()
        while True:
            try:
                if self._attempt():
                    return
                raise _Retryable("the connection closed before the whole file arrived")
            except requests.exceptions.SSLError as exc:
                raise DownloadError(f"{self.label}: TLS failure for {self.url}: {exc}") from exc
            except (_Retryable, *_NETWORK) as exc:
                if (have := self.have()) > best:
                    best, failures = have, 0
                failures += 1
                what, reason, retries = self.label, _reason(exc), self.opts.retries
                if not self.opts.reached and _never_connected(exc):  # absent, not flaky
                    message = f"{what}: giving up on {self.url} at once: {reason}"
                    raise RetriesExhaustedError(message) from exc
                if failures > retries:
                    kept = f"; {have} bytes are kept in {self.part} for the next run"
                    raise RetriesExhaustedError(
                        f"{what}: giving up on {self.url} after {failures} failed attempts "
                        f"({reason}){kept if have else ''}"
                    ) from exc
                delay = retry_delay(failures, self.backoff, getattr(exc, "retry_after", None))
                self.opts.note(f"{what}: {reason}; retry {failures} of {retries} in {delay:.1f}s")
                time.sleep(delay)

    def check(self) -> str | None:
        """The finished part's sha256 if hashed; ChecksumError unless every digest agrees."""
        expected = [Claim("sha256", self.sha256, "")] if self.sha256 else []
        checks = expected + sorted(self.claims, key=lambda c: (c.algorithm, c.source))
        wanted = {c.algorithm for c in checks} | ({"sha256"} if self.opts.record else set())
        digests = hash_file(self.part, wanted)
        for claim in checks:
            if (got := digests[claim.algorithm]) != claim.value:
                said = f"the server's {claim.source} says" if claim.source else "expected"
                raise self._mismatch(f"{claim.algorithm} mismatch: {said} {claim.value}, got {got}")
        return digests.get("sha256")

    def _learn_total(self, total: int, source: str) -> None:
        if self.total is None:
            self.total, self.total_source = total, source
        elif self.total != total:
            raise self._mismatch(
                f"size mismatch: {self.total_source} is {self.total} bytes, "
                f"but {source} says {total} bytes"
            )

    def _mismatch(self, what: str) -> ChecksumError:
        """Bytes other than the expected ones: the host answered, so the network is not what
        to fix; whether a mirror (``allow_http``: one was chosen) served them says what is."""
        host = urlsplit(self.url).hostname
        fix = (
            f"the mirror {host} serves other bytes than the published ones: download from "
            f"another mirror (or none) and tell whoever runs {host}"
            if self.allow_http
            else f"try again; if it recurs, something between here and {host} changes the "
            f"files: download them elsewhere and copy the folder here"
        )
        return ChecksumError(f"{self.label}: {what}, from {self.url}; nothing was kept. {fix}")

    def _claim(self, claims: list[Claim]) -> None:
        for claim in claims:
            if claim.algorithm == "size":
                self._learn_total(int(claim.value), claim.source)
            else:
                self.claims.add(claim)

    def _restart(self, why: str) -> None:
        """Drop the part and all that was learnt from the server about its version."""
        self.opts.note(f"{self.label}: {why}; downloading it from the start")
        discard(self.part)
        self.validator = None
        self.claims.clear()
        self.total, self.total_source = self.size, "the expected size"

    def _receive(self, response: requests.Response, offset: int) -> None:
        """Append the body to the part (from ``offset``; 0 empties it first), durably."""
        if self.bar is None:
            self.bar = tqdm(total=self.total, initial=offset, desc=self.label, **self.opts.bar)
        elif self.bar.n != offset or self.bar.total != self.total:
            self.bar.reset(total=self.total)
            self.bar.update(offset)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC)
        try:
            with os.fdopen(open_fd_nofollow(self.part, flags), "ab" if offset else "wb") as fh:
                received = offset
                for chunk in response.iter_content(CHUNK_SIZE):
                    fh.write(chunk)
                    received += len(chunk)
                    self.bar.update(len(chunk))
                    if self.total is not None and received > self.total:
                        raise self._mismatch(
                            f"the server sent more than the expected {self.total} bytes"
                        )
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.filename is not None or exc.errno is None:
                raise
            # A write that failed (disk full, size limit) says no file: name the part.
            raise type(exc)(exc.errno, exc.strerror, str(self.part)) from exc

    def _attempt(self) -> bool:
        """One request; True when the part file holds the whole file."""
        have = self.have()
        if self.total is not None and have > self.total:
            self._restart(f"{self.part.name} is longer than the file")
            have = 0
        # Resumable only if the bytes' version is recorded (and sent as If-Range), or a digest
        # will catch a file stitched from two versions.
        digest_known = self.sha256 is not None or any(c.algorithm != "size" for c in self.claims)
        if have and self.validator is None and not digest_known:
            self._restart(
                f"no record says which version of the file the {have} bytes in "
                f"{self.part.name} belong to, and no sha256 is known to check a resumed file"
            )
            have = 0
        if self.total is not None and have == self.total:
            return True
        headers = {**IDENTITY, "Range": f"bytes={have}-"} if have else dict(IDENTITY)
        if have and self.validator is not None:
            headers["If-Range"] = self.validator.etag or self.validator.last_modified or ""
        response, claims = open_url(
            self.opts, "GET", self.url, self.allow_http, headers, self.label
        )
        with response:
            status, reason, got = response.status_code, response.reason, response.headers
            if status == 416 and have:
                if _content_range(got.get("Content-Range"))[1] == have:
                    self._claim(claims)
                    self._learn_total(have, "Content-Range")
                    return True
                self._restart(f"the server cannot resume at byte {have}")
                raise _Retryable("resume refused (HTTP 416)", retry_after=0.0)
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(f"HTTP {status} {reason}", _retry_after(got.get("Retry-After")))
            if status not in (200, 206):
                raise DownloadError(f"{self.label}: HTTP {status} {reason} for {response.url}")
            encoding = got.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise DownloadError(
                    f"{self.label}: {response.url} sent the file compressed (Content-Encoding: "
                    f"{encoding}) although asked for its bytes as stored (Accept-Encoding: "
                    f"identity); such a body cannot be checked against the file's size and "
                    f"digests nor resumed, so nothing was kept: use a mirror that serves "
                    f"files as they are"
                )
            offset, total = _content_range(got.get("Content-Range")) if status == 206 else (0, None)
            if offset != have and status == 206:
                self._restart(f"the server resumed at byte {offset}, not {have}")
                raise _Retryable("resumed at the wrong offset", retry_after=0.0)
            validator = Validator.of(self.url, got)
            changed = self.validator is not None and self.validator.contradicts(validator)
            news = "the file on the server changed since the part began"
            if changed and status == 206:  # a server that ignored If-Range: the rest is another's
                self._restart(news)
                raise _Retryable("the file changed on the server", retry_after=0.0)
            if have and status == 200:
                ignored = "the server ignored the Range request"
                self._restart(f"{news} (it sent the whole new file)" if changed else ignored)
            if not offset:  # a 200, or a 206 from byte 0: the part starts with this version
                self.validator = validator
                write_part_info(self.part, validator)  # before the part's first byte
            self._claim(claims)
            length = got.get("Content-Length", "").strip()
            if total is None and length.isdigit():
                total = offset + int(length)
            if total is not None:
                self._learn_total(total, "the server's Content-Length")
            self._receive(response, offset)
        return self.total is None or self.have() == self.total
