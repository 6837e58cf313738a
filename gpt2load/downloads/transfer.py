"""Fetching one URL into one file: resumed, retried, verified, and only then put in place.

Bytes arrive in ``FILE.part``. A dropped connection keeps them, and the next
attempt asks for the rest with an HTTP Range request, made conditional with
``If-Range`` on the ETag (or Last-Modified) of the response that started the part,
recorded beside it in ``FILE.part.json``: a server whose file changed meanwhile
answers with the whole new file, which is read from the start, so a file is never
stitched from two versions. A part with no such record is resumed only when a
known sha256 will check the result. When every byte is there,
the part is checked against the expected size and sha256 and against every digest
the server sent, and renamed onto ``FILE`` only if all agree, so a reader never
sees a half-written or wrong file under the real name.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ChecksumError, DownloadError, RetriesExhaustedError
from ..fileio import atomic_write_text, open_nofollow_for_writing, regular_size
from .digests import Claim, hash_file, header_claims, normalise_sha256, sha256_file
from .hosts import effective_url, redact, scheme_allowed
from .manifest import PART_INFO_SUFFIX, PART_SUFFIX

logger = logging.getLogger("gpt2load.download")

CHUNK_SIZE = 1 << 16  # small enough that a cut connection loses little of what it carried
DEFAULT_TIMEOUT = (10.0, 60.0)  # seconds to connect, seconds of silence while reading
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 30.0
MAX_REDIRECTS = 10
BACKOFF_ENV = "GPT2LOAD_BACKOFF"
OFFLINE_ENVS = ("GPT2LOAD_OFFLINE", "HF_HUB_OFFLINE")
USER_AGENT = f"gpt2load/{__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})  # plus every 5xx

Timeout = float | tuple[float, float]
Note = Callable[[str], None]


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str | None  # None only when nothing required hashing
    fetched: bool  # False: an existing file was reused without any network access


def offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in OFFLINE_ENVS
    )


def make_note(progress: bool, always: bool = False) -> Note:
    """Status lines go between the progress bars when bars are shown, else to the log.

    ``always``: the line goes to stderr even without bars (``--quiet``), for what a user
    must see whatever they asked, such as waiting for another download's lock.
    """

    def note(message: str) -> None:
        message = redact(message)
        if progress:
            tqdm.write(message, file=sys.stderr)
        elif always:
            print(message, file=sys.stderr, flush=True)
        else:
            logger.info(message)

    return note


def backoff_base(backoff: float | None) -> float:
    if backoff is not None:
        return max(0.0, float(backoff))
    raw = os.environ.get(BACKOFF_ENV)
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            raise ValueError(f"{BACKOFF_ENV} must be a number of seconds, got {raw!r}") from None
    return DEFAULT_BACKOFF


def retry_delay(failures: int, backoff: float, retry_after: float | None = None) -> float:
    """Exponential: ``backoff``, 2x, 4x ... capped; a server's Retry-After is honoured up to the cap."""
    delay = backoff * 2 ** (failures - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_BACKOFF)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or unknown."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


@dataclass(frozen=True)
class Validator:
    """What identifies one version of the server's file: a strong ETag, else Last-Modified.

    Sent back as ``If-Range`` when resuming, so that a server whose file changed answers
    with the whole new file (200) instead of the rest of a different one (206).
    """

    url: str  # redacted: the record beside the part must hold no credentials
    etag: str | None
    last_modified: str | None

    @property
    def if_range(self) -> str:
        return self.etag or self.last_modified or ""

    def contradicts(self, other: Validator) -> bool:
        """Whether ``other`` (from a later response) names another version of the file."""
        if self.etag and other.etag:
            return self.etag != other.etag
        if self.last_modified and other.last_modified:
            return self.last_modified != other.last_modified
        return False


def response_validator(url: str, headers: Mapping[str, str]) -> Validator | None:
    """The validator of a response; None without a strong ETag or a Last-Modified."""
    etag = headers.get("ETag", "").strip() or None
    if etag is not None and (etag.startswith("W/") or not etag.startswith('"')):
        etag = None  # If-Range takes only a strong (quoted, not W/) entity tag
    last_modified = headers.get("Last-Modified", "").strip() or None
    if etag is None and last_modified is None:
        return None
    return Validator(redact(url), etag, last_modified)


def part_info_path(part: Path) -> Path:
    """Where the validator of ``FILE.part`` is recorded: ``FILE.part.json`` beside it."""
    return part.with_name(part.name[: -len(PART_SUFFIX)] + PART_INFO_SUFFIX)


def read_part_info(part: Path, url: str) -> Validator | None:
    """The validator recorded for ``part`` when it was started from ``url``; None if unknown."""
    info = part_info_path(part)
    try:
        if regular_size(info) is None:
            return None
        data = json.loads(info.read_text(encoding="utf-8"))
        validator = Validator(str(data["url"]), data.get("etag"), data.get("last_modified"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable, a link, another layout: as good as none
    if validator.url != redact(url) or not validator.if_range:
        return None
    if not all(isinstance(v, str | None) for v in (validator.etag, validator.last_modified)):
        return None
    return validator


def write_part_info(part: Path, validator: Validator | None) -> None:
    """Record (atomically, replacing rather than following any link) which version of the
    file ``part`` holds; with None, remove any record."""
    info = part_info_path(part)
    if validator is None:
        info.unlink(missing_ok=True)
        return
    data = {"url": validator.url, "etag": validator.etag, "last_modified": validator.last_modified}
    atomic_write_text(info, json.dumps(data) + "\n")


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
    if cause:
        return f"connection failed ({cause.group(1).strip()})"
    return f"connection failed ({text[:200]})"


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")


def check_existing(
    path: Path, size: int | None, sha256: str | None, fast: bool
) -> tuple[bool, str | None, str]:
    """Whether a file already in place is the expected one: (usable, sha256 if hashed, why not)."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return False, None, f"has {actual} bytes, expected {size}"
    if sha256 is None or fast:
        return True, None, ""
    digest = sha256_file(path)
    if digest != sha256:
        return False, digest, f"has sha256 {digest}, expected {sha256}"
    return True, digest, ""


class Transfer:
    """Moves the bytes of one URL into a ``.part`` file, across as many attempts as it takes.

    ``trust_resume``: a sha256 will check the finished file, so a part whose version is not
    recorded may still be resumed (a stitched file would fail that check). Otherwise such
    a part is started again from zero.
    """

    def __init__(
        self,
        url: str,
        part: Path,
        *,
        label: str,
        allow_http: bool,
        size: int | None,
        session: requests.Session,
        timeout: Timeout,
        retries: int,
        backoff: float,
        progress: bool,
        note: Note,
        trust_resume: bool = False,
    ) -> None:
        self.url = url
        self.part = part
        self.label = label
        self.allow_http = allow_http
        self.expected = size
        self.total = size
        self.total_source = "the expected size"
        self.session = session
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self.note = note
        self.trust_resume = trust_resume
        self.claims: set[Claim] = set()
        self.bar: tqdm | None = None
        self.resumed_from_disk = self.have() > 0  # also refuses a link or FIFO at the part
        self.validator = read_part_info(part, url) if self.resumed_from_disk else None

    def have(self) -> int:
        """Bytes in the part file; a link or non-regular file there raises UnsafePathError."""
        return regular_size(self.part) or 0

    def discard(self) -> None:
        """Remove the part and the record of its version (a link is removed, never followed)."""
        self.part.unlink(missing_ok=True)
        part_info_path(self.part).unlink(missing_ok=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def run(self) -> None:
        """Fill the part file, retrying with backoff; each attempt that adds bytes resets the count."""
        failures = 0
        best = self.have()
        while True:
            try:
                if self._attempt():
                    return
                raise _Retryable("the connection closed before the whole file arrived")
            except requests.exceptions.SSLError as exc:
                raise DownloadError(f"{self.label}: TLS failure for {self.url}: {exc}") from exc
            except (
                _Retryable,
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                have = self.have()
                if have > best:
                    best, failures = have, 0
                failures += 1
                reason = _reason(exc)
                if failures > self.retries:
                    kept = (
                        f"; {have} bytes are kept in {self.part} for the next run" if have else ""
                    )
                    raise RetriesExhaustedError(
                        f"{self.label}: giving up on {self.url} after {failures} failed "
                        f"attempts ({reason}){kept}"
                    ) from exc
                delay = retry_delay(failures, self.backoff, getattr(exc, "retry_after", None))
                self.note(
                    f"{self.label}: {reason}; retry {failures} of {self.retries} in {delay:.1f}s"
                )
                time.sleep(delay)

    def _learn_total(self, total: int, source: str) -> None:
        if self.total is None:
            self.total, self.total_source = total, source
        elif self.total != total:
            raise ChecksumError(
                f"{self.label}: size mismatch: {self.total_source} is {self.total} bytes, "
                f"but {source} says {total} bytes, from {self.url}"
            )

    def _claim(self, claims: list[Claim]) -> None:
        for claim in claims:
            if claim.algorithm == "size":
                self._learn_total(int(claim.value), claim.source)
            else:
                self.claims.add(claim)

    def _get(self, headers: dict[str, str]) -> tuple[requests.Response, list[Claim]]:
        """GET following redirects by hand, to refuse a downgrade to http and read every hop's
        digests; the claims are returned, not yet applied, as they may describe a new version."""
        url = self.url
        claims: list[Claim] = []
        for hop in range(MAX_REDIRECTS + 1):
            response = self.session.get(
                url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=False
            )
            if response.is_redirect:
                claims += header_claims(response.headers, first_hop=hop == 0, full_body=False)
                target = urljoin(url, response.headers["Location"])
                response.close()
                if not scheme_allowed(target, self.allow_http):
                    raise DownloadError(
                        f"{self.label}: {url} redirects to {target}; refusing to leave https"
                    )
                url = target
                continue
            if response.status_code in (200, 206):
                full = response.status_code == 200
                claims += header_claims(response.headers, first_hop=hop == 0, full_body=full)
            return response, claims
        raise DownloadError(f"{self.label}: more than {MAX_REDIRECTS} redirects from {self.url}")

    def _restart(self, why: str) -> None:
        """Drop the part and all that was learnt from the server about its version."""
        self.note(f"{self.label}: {why}; downloading it from the start")
        self.discard()
        self.validator = None
        self.claims.clear()
        self.total, self.total_source = self.expected, "the expected size"

    def _show(self, offset: int) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=self.total,
                initial=offset,
                desc=self.label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not self.progress,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        elif self.bar.n != offset or self.bar.total != self.total:
            self.bar.reset(total=self.total)
            self.bar.update(offset)

    def _resumable(self) -> bool:
        """Whether bytes already in the part may be continued: their version is recorded (and
        sent as If-Range), or a digest will catch a file stitched from two versions."""
        digest_known = any(c.algorithm != "size" for c in self.claims)
        return self.validator is not None or self.trust_resume or digest_known

    def _receive(self, response: requests.Response, offset: int) -> None:
        """Append the body to the part (from ``offset``; 0 empties it first), durably."""
        assert self.bar is not None
        with open_nofollow_for_writing(self.part, append=bool(offset)) as fh:
            received = offset
            for chunk in response.iter_content(CHUNK_SIZE):
                fh.write(chunk)
                received += len(chunk)
                self.bar.update(len(chunk))
                if self.total is not None and received > self.total:
                    raise ChecksumError(
                        f"{self.label}: the server sent more than the expected "
                        f"{self.total} bytes, from {self.url}"
                    )
            fh.flush()
            os.fsync(fh.fileno())

    def _attempt(self) -> bool:
        """One request; True when the part file holds the whole file."""
        have = self.have()
        if self.total is not None and have > self.total:
            self._restart(f"{self.part.name} is longer than the file")
            have = 0
        if have and not self._resumable():
            self._restart(
                f"no record says which version of the file the {have} bytes in "
                f"{self.part.name} belong to, and no sha256 is known to check a resumed file"
            )
            have = 0
        if self.total is not None and have == self.total:
            return True
        headers = {"Accept-Encoding": "identity"}  # Range offsets count bytes as stored
        if have:
            headers["Range"] = f"bytes={have}-"
            if self.validator is not None:
                headers["If-Range"] = self.validator.if_range
        response, claims = self._get(headers)
        with response:
            status = response.status_code
            if status == 416 and have:
                _, total = _content_range(response.headers.get("Content-Range"))
                if total == have:
                    self._claim(claims)
                    self._learn_total(total, "Content-Range")
                    return True
                self._restart(f"the server cannot resume at byte {have}")
                raise _Retryable("resume refused (HTTP 416)", retry_after=0.0)
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(
                    f"HTTP {status} {response.reason}",
                    _retry_after(response.headers.get("Retry-After")),
                )
            if status not in (200, 206):
                raise DownloadError(
                    f"{self.label}: HTTP {status} {response.reason} for {response.url}"
                )
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise DownloadError(
                    f"{self.label}: {response.url} sent the file compressed (Content-Encoding: "
                    f"{encoding}) although asked for its bytes as stored (Accept-Encoding: "
                    f"identity); such a body cannot be checked against the file's size and "
                    f"digests nor resumed, so nothing was kept: use a mirror that serves "
                    f"files as they are"
                )
            length = response.headers.get("Content-Length", "").strip()
            validator = response_validator(self.url, response.headers)
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    self._restart(f"the server resumed at byte {start}, not {have}")
                    raise _Retryable("resumed at the wrong offset", retry_after=0.0)
                if self.validator and validator and self.validator.contradicts(validator):
                    # a server that ignored If-Range: the rest is of another version
                    self._restart("the file on the server changed since the part began")
                    raise _Retryable("the file changed on the server", retry_after=0.0)
                offset = have
                if not offset:  # a 206 from byte 0 starts the part like a 200 does
                    self.validator = validator
                    write_part_info(self.part, validator)
            else:
                if have:
                    changed = self.validator and validator and self.validator.contradicts(validator)
                    self._restart(
                        "the file on the server changed since the part began (it sent the "
                        "whole new file)"
                        if changed
                        else "the server ignored the Range request"
                    )
                offset = 0
                total = int(length) if length.isdigit() else None
                self.validator = validator
                write_part_info(self.part, validator)  # before the part's first byte
            self._claim(claims)
            if total is None and length.isdigit():
                total = offset + int(length)
            if total is not None:
                self._learn_total(total, "the server's Content-Length")
            self._show(offset)
            try:
                self._receive(response, offset)
            except OSError as exc:
                if exc.filename is not None or exc.errno is None:
                    raise
                # A write that failed (disk full, size limit) says no file: name the part.
                raise type(exc)(exc.errno, exc.strerror, str(self.part)) from exc
        return self.total is None or self.have() == self.total


def _drop_if_empty(part: Path) -> None:
    """Remove a part that holds no byte, and its record, after a failed attempt."""
    with contextlib.suppress(OSError):
        if regular_size(part) in (0, None):
            part.unlink(missing_ok=True)
            part_info_path(part).unlink(missing_ok=True)


def _check_part(
    transfer: Transfer, size: int | None, sha256: str | None, need_sha256: bool
) -> str | None:
    """Raise ChecksumError unless the finished part matches every expectation; its sha256."""
    part, label, url = transfer.part, transfer.label, transfer.url
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{label}: size mismatch: expected {size} bytes, got {actual_size}, from {url}"
        )
    algorithms = {c.algorithm for c in transfer.claims}
    if sha256 is not None or need_sha256:
        algorithms.add("sha256")
    digests = hash_file(part, sorted(algorithms))
    if sha256 is not None and digests["sha256"] != sha256:
        raise ChecksumError(
            f"{label}: sha256 mismatch: expected {sha256}, got {digests['sha256']}, from {url}"
        )
    for claim in sorted(transfer.claims, key=lambda c: (c.algorithm, c.source)):
        if digests[claim.algorithm] != claim.value:
            raise ChecksumError(
                f"{label}: {claim.algorithm} mismatch: the server's {claim.source} says "
                f"{claim.value}, got {digests[claim.algorithm]}, from {url}"
            )
    return digests.get("sha256")


def probe(
    url: str, *, allow_http: bool, session: requests.Session, timeout: Timeout
) -> tuple[int | None, list[Claim]] | None:
    """What the server says about the file at ``url`` without sending it (a HEAD request).

    (size, digest claims) from every hop; None when it would not answer usefully.
    """
    claims: list[Claim] = []
    size = None
    headers = {"Accept-Encoding": "identity"}
    for hop in range(MAX_REDIRECTS + 1):
        try:
            response = session.head(url, headers=headers, timeout=timeout, allow_redirects=False)
        except requests.exceptions.RequestException:
            return None
        with response:
            if response.is_redirect:
                claims += header_claims(response.headers, first_hop=hop == 0, full_body=False)
                url = urljoin(url, response.headers["Location"])
                if not scheme_allowed(url, allow_http):
                    return None
                continue
            if response.status_code != 200:
                return None
            claims += header_claims(response.headers, first_hop=hop == 0, full_body=True)
            length = response.headers.get("Content-Length", "").strip()
            size = int(length) if length.isdigit() else None
            return size, claims
    return None


def check_unknown(
    path: Path,
    url: str,
    fast: bool,
    *,
    size: int | None = None,
    allow_http: bool,
    session: requests.Session,
    timeout: Timeout,
) -> tuple[bool, str | None, str]:
    """Whether a file in place that no known sha256 vouches for (none published, none recorded)
    is the server's file, judged by what a HEAD request says: (usable, sha256 if hashed, why not).

    ``size`` is the published size, if any; it must hold, and with ``fast`` it is enough, as is
    the size the server states. Otherwise only a digest the server sends (sha256 ETag /
    X-Linked-Etag, Content-MD5 ...) can prove the bytes, and without one the file is
    fetched again.
    """
    actual = path.stat().st_size
    if size is not None and actual != size:
        return False, None, f"has {actual} bytes, expected {size}"
    answer = probe(url, allow_http=allow_http, session=session, timeout=timeout)
    if answer is None:
        return False, None, "is not recorded, and the server would not describe its file"
    stated, claims = answer
    sizes = {int(c.value) for c in claims if c.algorithm == "size"}
    sizes |= {n for n in (stated, size) if n is not None}
    digests = sorted({c for c in claims if c.algorithm != "size"}, key=lambda c: c.source)
    wrong = [n for n in sizes if n != actual]
    if wrong:
        return False, None, f"has {actual} bytes, the server's file has {wrong[0]}"
    if fast and sizes:
        return True, None, ""
    if not digests:
        return False, None, "is not recorded, and the server sends no digest to check it with"
    hashed = hash_file(path, sorted({c.algorithm for c in digests} | {"sha256"}))
    for claim in digests:
        if hashed[claim.algorithm] != claim.value:
            return (
                False,
                hashed["sha256"],
                f"has {claim.algorithm} {hashed[claim.algorithm]}, the server's {claim.source} "
                f"says {claim.value}",
            )
    return True, hashed["sha256"], ""


def fetch(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    accept_size: int | None = None,
    accept_sha256: str | None = None,
    mirror: str | None = None,
    force: bool = False,
    fast: bool = False,
    need_sha256: bool = False,
    verify_unknown: bool = False,
    progress: bool = True,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: Timeout | None = None,
    session: requests.Session | None = None,
    label: str | None = None,
) -> Fetched:
    """Make ``dest`` hold the file at ``url``; see ``gpt2load.downloads.download_file``.

    ``size``/``sha256`` bind any bytes; ``accept_size``/``accept_sha256`` (a record of an
    earlier download) only decide whether a file already in place can be kept. A file in
    place with no sha256 to check it against is kept on its size (or, with no size, as it
    is), unless ``verify_unknown``: then the server is asked what the file is
    (``check_unknown``; with ``fast`` a known size is still enough) and it is fetched again
    unless the answer proves it (offline, it is kept).
    """
    dest = Path(dest)
    label = label or dest.name
    sha256 = normalise_sha256(sha256)
    note = make_note(progress)
    timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
    with contextlib.ExitStack() as stack:

        def connection() -> requests.Session:
            nonlocal session
            if session is None:
                session = stack.enter_context(requests.Session())
                session.headers["User-Agent"] = USER_AGENT
            return session

        if dest.exists() and not force:
            keep_size = size if size is not None else accept_size
            keep_sha = sha256 or normalise_sha256(accept_sha256)
            unproved = keep_sha is None and (keep_size is None or not fast)
            if verify_unknown and unproved and not offline():
                request_url, allow_http = effective_url(url, mirror)
                usable, digest, why = check_unknown(
                    dest,
                    request_url,
                    fast,
                    size=keep_size,
                    allow_http=allow_http,
                    session=connection(),
                    timeout=timeout,
                )
            else:
                usable, digest, why = check_existing(dest, keep_size, keep_sha, fast)
            if usable:
                if digest is None and need_sha256:
                    digest = keep_sha if keep_sha is not None else sha256_file(dest)
                return Fetched(dest, dest.stat().st_size, digest, fetched=False)
            note(f"{label}: the file in place {why}; replacing it")
            dest.unlink()  # a link is removed, never followed
        if offline():
            raise DownloadError(
                f"{label} is not in {dest.parent} and downloads are switched off "
                f"({' / '.join(OFFLINE_ENVS)} is set)"
            )
        request_url, allow_http = effective_url(url, mirror)
        part = dest.with_name(dest.name + PART_SUFFIX)
        if force:
            part.unlink(missing_ok=True)
            part_info_path(part).unlink(missing_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        while True:
            transfer = Transfer(
                request_url,
                part,
                label=label,
                allow_http=allow_http,
                size=size,
                session=connection(),
                timeout=timeout,
                retries=DEFAULT_RETRIES if retries is None else max(0, retries),
                backoff=backoff_base(backoff),
                progress=progress,
                note=note,
                trust_resume=sha256 is not None,
            )
            try:
                transfer.run()
                digest = _check_part(transfer, size, sha256, need_sha256)
                regular_size(part)  # still our file, not a link put there meanwhile
            except ChecksumError:
                transfer.discard()
                if transfer.resumed_from_disk:
                    # The bad bytes may be the ones an earlier run left behind: one fresh try.
                    note(f"{label}: the bytes kept from an earlier attempt were bad")
                    continue
                raise
            except BaseException:
                _drop_if_empty(part)  # nothing to resume: leave no file (nor folder) behind
                raise
            finally:
                transfer.close()
            os.replace(part, dest)  # onto a link at dest, the link is replaced, not followed
            part_info_path(part).unlink(missing_ok=True)
            return Fetched(dest, dest.stat().st_size, digest, fetched=True)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
