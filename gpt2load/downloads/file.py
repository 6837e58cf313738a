"""Making one file hold one URL's bytes: kept if already right, else transferred, checked
and only then renamed into place, so no reader ever sees a half-written or wrong file."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import requests

from ..errors import NO_NETWORK_ADVICE, ChecksumError, DownloadError
from ..fileio import regular_size
from ..releases import FileSpec
from .digests import Claim, hash_file, normalise_sha256, sha256_file
from .hosts import effective_url
from .lock import exclusive_lock
from .manifest import PART_SUFFIX, RecordedFile
from .transfer import IDENTITY, Options, Transfer, discard, make_note, new_session, open_url

OFFLINE_ENVS = ("GPT2LOAD_OFFLINE", "HF_HUB_OFFLINE")


def offline() -> bool:
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes") for n in OFFLINE_ENVS)


Ask = tuple[str, Options]  # (url, opts): ask the server what its file is


def check_in_place(
    path: Path, size: int | None, sha256: str | None, fast: bool, ask: Ask | None = None
) -> tuple[bool, str | None, str]:
    """(usable, sha256 if hashed, why not) for a file in place. With ``ask`` (url, opts), when no
    sha256 vouches for it, HEAD decides: its sizes must hold (enough if ``fast``), and only a
    digest it sends proves the bytes."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device (or a link to one): never read
        return False, None, "is not a regular file"
    actual = st.st_size
    if size is not None and actual != size:
        return False, None, f"has {actual} bytes, expected {size}"
    if ask is None:
        if sha256 is None or fast:
            return True, None, ""
        digest = sha256_file(path)
        return digest == sha256, digest, f"has sha256 {digest}, expected {sha256}"
    url, opts = ask
    try:
        response, claims = open_url(opts, "HEAD", *effective_url(url, opts.mirror), IDENTITY, url)
        response.close()
        answered = response.status_code == 200
    except (requests.exceptions.RequestException, DownloadError):
        answered = False
    if not answered:
        return False, None, "is not recorded, and the server would not describe its file"
    if (length := response.headers.get("Content-Length", "").strip()).isdigit():
        claims.append(Claim("size", length, "Content-Length"))
    sizes = {int(c.value) for c in claims if c.algorithm == "size"}
    sizes |= {size} if size is not None else set()
    if wrong := [n for n in sizes if n != actual]:
        return False, None, f"has {actual} bytes, the server's file has {wrong[0]}"
    if fast and sizes:
        return True, None, ""
    digests = sorted({c for c in claims if c.algorithm != "size"}, key=lambda c: c.source)
    if not digests:
        return False, None, "is not recorded, and the server sends no digest to check it with"
    hashed = hash_file(path, {c.algorithm for c in digests} | {"sha256"})
    for c in digests:
        if hashed[c.algorithm] != c.value:
            why = f"has {c.algorithm} {hashed[c.algorithm]}, the server's {c.source} says {c.value}"
            return False, hashed["sha256"], why
    return True, hashed["sha256"], ""


def fetch(spec: FileSpec, dest: Path, opts: Options, old: RecordedFile | None = None) -> str | None:
    """Make ``dest`` hold ``spec``'s file; its sha256 if hashed (always with ``opts.record``).
    ``old``, the folder's record of the file, only decides whether what is in place is kept."""
    url, size, sha256, label = spec.url, spec.size, normalise_sha256(spec.sha256), spec.path
    state = f"is not in {dest.parent}"
    if dest.exists() and not opts.force:
        keep_size = size if size is not None else old.size if old else None
        keep_sha = sha256 or (normalise_sha256(old.sha256) if old else None)
        unproved = keep_sha is None and (keep_size is None or not opts.fast)
        ask = (url, opts) if opts.record and unproved and not offline() else None
        usable, digest, why = check_in_place(dest, keep_size, keep_sha, opts.fast, ask)
        if usable:
            if digest is None and opts.record:
                digest = keep_sha or sha256_file(dest)
            return digest
        # Kept until the checked download is renamed over it: offline, or with the host
        # gone, the folder is left no worse than it was.
        state = f"in {dest.parent} {why} (kept as it is)"
        if not offline():
            opts.note(f"{label}: the file in place {why}; replacing it")
    if offline():
        raise DownloadError(
            f"{label} {state} and downloads are switched off "
            f"({' / '.join(OFFLINE_ENVS)} is set: unset it to download). {NO_NETWORK_ADVICE}"
        )
    request_url, allow_http = effective_url(url, opts.mirror)
    part = dest.with_name(dest.name + PART_SUFFIX)
    if opts.force:
        discard(part)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        transfer = Transfer(request_url, part, label, allow_http, size, sha256, opts)
        try:
            transfer.run()
            digest = transfer.check()
            regular_size(part)  # still our file, not a link put there meanwhile
        except ChecksumError:
            discard(part)
            if not transfer.resumed_from_disk:
                raise
            # The bad bytes may be the ones an earlier run left behind: one fresh try.
            opts.note(f"{label}: the bytes kept from an earlier attempt were bad")
            continue
        except BaseException:
            with contextlib.suppress(OSError):
                if regular_size(part) in (0, None):  # nothing to resume: leave no file behind
                    discard(part)
            raise
        finally:
            transfer.close()
        os.replace(part, dest)  # onto a link at dest, the link is replaced, not followed
        discard(part)  # what is left of it: the record of its version
        return digest


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    mirror: str | None = None,
    force: bool = False,
    fast: bool = False,
    progress: bool = True,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: float | tuple[float, float] | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Make ``dest`` hold the file at ``url``, checked, and return ``dest``.

    A ``dest`` with ``size`` and ``sha256`` (size only with ``fast``) is kept, so calling this
    every run costs no network. Else bytes go to ``dest.part`` and resume only the same version
    of the file, with ``retries`` (5) after ``backoff`` seconds (1, or ``$GPT2LOAD_BACKOFF``),
    doubling, on drops, timeouts, 429 and 5xx; ``timeout`` (10, 60) is (connect, read). Only a
    part matching ``size``, ``sha256`` and every digest the server sent becomes ``dest`` (else
    ChecksumError). ``mirror`` (else ``$GPT2LOAD_MIRROR``/``$HF_ENDPOINT``) swaps the host.
    """
    dest = Path(dest)
    in_place = not force and dest.is_file()
    if in_place and check_in_place(dest, size, normalise_sha256(sha256), fast)[0]:
        return dest  # already right: no lock, no network, nothing written
    with (
        removed_if_failed(dest.parent),
        exclusive_lock(dest.with_name(f".{dest.name}.lock"), on_wait=make_note(progress, True)),
        new_session() if session is None else contextlib.nullcontext(session) as connection,
    ):
        opts = Options(connection, mirror, force, fast, progress, retries, backoff, timeout)
        fetch(FileSpec(url, dest.name, size, sha256), dest, opts)
    return dest


@contextlib.contextmanager
def removed_if_failed(folder: Path) -> Iterator[None]:
    """``folder`` and the folders above it that do not exist yet are removed again, once
    empty, if the download inside fails: one that failed before writing a byte leaves no
    folder for `verify` or `load` to take for a download (partial files stay, to resume)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
