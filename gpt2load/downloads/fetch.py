"""Download GPT-2 releases (or any file) so that what lands on disk is exactly what was published.

``download`` fetches a whole release into one folder and records the sha256 of
every file there (``manifest.json``); ``download_file`` is the single-file
machinery underneath, public so that other parts of the project (the Tiny
Shakespeare download) get the same resuming, retries, checks and mirrors.

Where things land: ``weights/<model>/<source>/`` relative to the working
directory, like ``data/`` and ``runs/``, so a checkout keeps its weights beside
it; ``$GPT2LOAD_WEIGHTS_DIR`` moves the ``weights`` root, ``dir=`` picks the
folder outright.

Hosts: ``mirror=`` (``--mirror``), else ``$GPT2LOAD_MIRROR``, replaces the scheme
and host of every URL and keeps the path; ``$HF_ENDPOINT`` does the same for
Hugging Face URLs only. Plain http is accepted only through one of these.
``$GPT2LOAD_OFFLINE=1`` (or ``$HF_HUB_OFFLINE=1``) forbids the network: files
already in place are used, a missing one is an error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import requests

from ..config import canonical_name, is_model_name
from ..releases import DEFAULT_SOURCE, FileSpec, release
from .digests import normalise_sha256, sha256_file
from .hosts import effective_url, redact
from .lock import exclusive_lock
from .manifest import (
    LOCK_NAME,
    PART_INFO_SUFFIX,
    RECORD_NAME,
    Record,
    RecordedFile,
    load_manifest,
    read_record,
    safe_relative_path,
    write_record,
)
from .transfer import (
    USER_AGENT,
    ChecksumError,
    DownloadError,
    Timeout,
    check_existing,
    fetch,
    make_note,
)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "WEIGHTS_DIR_ENV",
    "default_dir",
    "download",
    "download_file",
]

WEIGHTS_DIR_ENV = "GPT2LOAD_WEIGHTS_DIR"
CUSTOM_SOURCE = "custom"


def weights_root() -> Path:
    """``weights`` (relative to the working directory), or ``$GPT2LOAD_WEIGHTS_DIR``."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "").strip() or "weights").expanduser()


def default_dir(model: str, source: str) -> Path:
    """``weights/<model>/<source>``, under ``$GPT2LOAD_WEIGHTS_DIR`` when that is set."""
    return weights_root() / model / source


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
    timeout: Timeout | None = None,
    session: requests.Session | None = None,
) -> Path:
    """Make ``dest`` hold the file at ``url``, checked, and return ``dest``.

    A ``dest`` already there is kept when it has ``size`` and ``sha256`` (size only with
    ``fast``), so calling this on every run costs no network. Otherwise the bytes go to
    ``dest.part``, resuming from what an interrupted run left there (only the same version
    of the file: the Range request carries ``If-Range`` with the ETag or Last-Modified kept
    in ``dest.part.json``; with neither known, only when ``sha256`` is given), with ``retries``
    attempts (default 5) spaced by exponential ``backoff`` seconds (default 1, or
    ``$GPT2LOAD_BACKOFF``) on dropped connections, timeouts, 429 and 5xx; 403/404 fail
    at once. ``timeout`` is seconds, or (connect, read); default (10, 60). The part is
    renamed onto ``dest`` only when it matches ``size``, ``sha256`` and every digest the
    server sent; otherwise it is deleted and ``ChecksumError`` names the file, the
    expected and the actual value. ``force`` discards what is on disk first.

    ``mirror`` (else ``$GPT2LOAD_MIRROR``, else ``$HF_ENDPOINT`` for Hugging Face
    URLs) swaps the URL's scheme and host. A lock file beside ``dest`` (``.NAME.lock``,
    removed when done) makes two concurrent calls for the same ``dest`` take turns; a
    ``dest`` that is already right is returned without taking it, so reuse writes nothing.
    Without ``size`` and ``sha256`` any ``dest`` already there is kept.
    """
    dest = Path(dest)
    if not force and dest.is_file():
        usable, _, _ = check_existing(dest, size, normalise_sha256(sha256), fast)
        if usable:
            return dest
    with exclusive_lock(dest.with_name(f".{dest.name}.lock"), on_wait=make_note(progress, True)):
        return fetch(
            url,
            dest,
            size=size,
            sha256=sha256,
            mirror=mirror,
            force=force,
            fast=fast,
            progress=progress,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            session=session,
        ).path


def _check_label(model: str) -> str:
    """A custom manifest's model name becomes a folder name: keep it to one plain part."""
    if not model or model in (".", "..") or any(c in model for c in "/\\\0:"):
        raise ValueError(f"model name {model!r} cannot name a folder; use letters, digits, - or _")
    return canonical_name(model) if is_model_name(model) else model  # 124M: weights/gpt2/...


def download(
    model: str,
    source: str = DEFAULT_SOURCE,
    dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    force: bool = False,
    fast: bool = False,
    manifest: str | os.PathLike[str] | dict[str, Any] | None = None,
    progress: bool = True,
    *,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: Timeout | None = None,
) -> Path:
    """Fetch every file of ``model`` from ``source`` (hf, openai, rasbt) and return the folder.

    ``model`` is any accepted spelling (``gpt2``, ``124M`` ...). With ``manifest`` (a JSON
    file or a parsed dict ``{"files": [{"url", "path", "size"?, "sha256"?}]}``) its files
    are fetched instead and ``model`` only names the folder (default
    ``weights/<model>/custom``). Every URL and file name is checked before anything is
    written. A re-run checks the files in place (sizes, and sha256 unless ``fast``)
    against the published values and the folder's ``manifest.json``, and fetches only what
    is missing or wrong; when everything is in place it returns without writing anything
    (no lock, no new record), so a read-only folder is reused fine. A file in place whose
    sha256 neither the publisher nor the record vouches for is checked against what the
    server says about it (a HEAD request; with ``fast`` a published size is enough) and
    fetched again unless that proves it. The record is
    rewritten after every file that changes it, so a run that fails midway still records
    what it verified. ``retries``, ``backoff`` and ``timeout`` are as for ``download_file``.
    """
    if manifest is not None:
        name, label = _check_label(model), CUSTOM_SOURCE
        files = load_manifest(manifest)
    else:
        built_in = release(model, source or DEFAULT_SOURCE)
        name, label, files = built_in.model, built_in.source, built_in.files
    folder = (Path(dir).expanduser() if dir is not None else default_dir(name, label)).resolve()
    for spec in files:  # a bad URL or name must fail before the folder or the lock exists
        effective_url(spec.url, mirror)
        safe_relative_path(spec.path, "path", folder=folder)
    _check_room_for_names(folder, files)
    if not force and _in_place(folder, files, fast):
        return folder
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    options = dict(
        mirror=mirror,
        force=force,
        fast=fast,
        need_sha256=True,  # for the record
        verify_unknown=True,
        progress=progress,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
    try:
        _fetch_all(name, label, files, folder, options)
    except BaseException:
        # A download that failed before writing anything leaves no empty folder behind for
        # `verify gpt2` or `load("gpt2")` to take for a download (partial files stay, so
        # that the next run resumes them).
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return folder


def _check_room_for_names(folder: Path, files: tuple[FileSpec, ...]) -> None:
    """Refuse, before anything is made, a folder that is not one, and names the file system
    cannot hold (the leaf with room for its ``.part.json`` beside it), so such a download
    fails with the name rather than midway with half a folder.
    """
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not existing.is_dir():
        where = "is" if existing == folder else f"is in the way at {existing}, which is"
        raise ValueError(f"the download folder {folder} {where} not a folder")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        name_max, path_max = 255, 4096
    for spec in files:
        parts = spec.path.split("/")
        for i, part in enumerate(parts):
            room = len(PART_INFO_SUFFIX) if i == len(parts) - 1 else 0
            length = len(os.fsencode(part)) + room
            if length > name_max:
                raise ValueError(
                    f"path {spec.path!r}: the name {part[:40]!r}... is {length - room} bytes; "
                    f"this file system holds names of at most {name_max} bytes"
                    + (
                        f" ({name_max - room} for a file, which needs a {PART_INFO_SUFFIX} "
                        f"beside it while it downloads)"
                        if room
                        else ""
                    )
                )
        full = len(os.fsencode(str(folder / spec.path))) + len(PART_INFO_SUFFIX)
        if full >= path_max:
            raise ValueError(
                f"path {spec.path!r} in {folder} is {full} bytes long with its "
                f"{PART_INFO_SUFFIX}; this file system allows paths of fewer than {path_max}"
            )


def _fetch_all(
    name: str, label: str, files: tuple[FileSpec, ...], folder: Path, options: dict[str, Any]
) -> None:
    """The locked part of :func:`download`: every file in turn, the record after each."""
    progress, force = options["progress"], options["force"]
    wait_note = make_note(progress, always=True)
    with exclusive_lock(folder / LOCK_NAME, on_wait=wait_note), requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        try:
            previous = None if force else read_record(folder)
        except ValueError as exc:
            make_note(progress)(f"ignoring {RECORD_NAME}: {exc}")
            previous = None
        options = {**options, "session": session}
        done: dict[str, RecordedFile] = {}
        written = previous
        for spec in files:
            safe_relative_path(spec.path, "path", folder=folder)  # links made since the check
            done[spec.path] = _fetch_one(spec, folder, previous, options)
            record = _record_so_far(name, label, files, done, previous)
            if record != written:
                write_record(folder, record)
                written = record


def _usable_entry(spec: FileSpec, previous: Record | None) -> RecordedFile | None:
    """The record's entry for ``spec``, if it describes the file that ``spec`` names."""
    old = previous.file(spec.path) if previous is not None else None
    if old is None or redact(old.url) != redact(spec.url):
        return None  # recorded from another URL: says nothing about this file
    if (spec.size is not None and old.size != spec.size) or (
        spec.sha256 is not None and old.sha256 != spec.sha256
    ):
        return None
    return old


def _record_so_far(
    name: str,
    label: str,
    files: tuple[FileSpec, ...],
    done: dict[str, RecordedFile],
    previous: Record | None,
) -> Record:
    """The files verified in this run, plus the earlier record's still valid entries for the rest."""
    entries = []
    for spec in files:
        entry = done.get(spec.path) or _usable_entry(spec, previous)
        if entry is not None:
            entries.append(entry)
    return Record(model=name, source=label, files=tuple(entries))


def _in_place(folder: Path, files: tuple[FileSpec, ...], fast: bool) -> bool:
    """Whether every file is in place as recorded (sizes; sha256 too unless ``fast``).

    Reads only: this is what lets a finished download be reused with no lock and no
    writes. Anything missing, unrecorded or different sends the caller the long way.
    """
    try:
        record = read_record(folder)
    except (ValueError, OSError):
        return False
    if record is None:
        return False
    for spec in files:
        entry = _usable_entry(spec, record)
        path = folder / spec.path
        if entry is None or not path.is_file() or path.stat().st_size != entry.size:
            return False
        if not fast and sha256_file(path) != entry.sha256:
            return False
    return True


def _fetch_one(
    spec: FileSpec, folder: Path, previous: Record | None, options: dict[str, Any]
) -> RecordedFile:
    old = _usable_entry(spec, previous)
    result = fetch(
        spec.url,
        folder / spec.path,
        size=spec.size,
        sha256=spec.sha256,
        accept_size=old.size if old else None,
        accept_sha256=old.sha256 if old else None,
        label=spec.path,
        **options,
    )
    assert result.sha256 is not None
    return RecordedFile(
        path=spec.path,
        url=redact(spec.url),  # the record is a file anyone may read: no credentials
        size=result.size,
        sha256=result.sha256,
        expected_size=spec.size,
        expected_sha256=spec.sha256,
    )
