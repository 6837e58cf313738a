"""Downloading a whole release (or a custom manifest's files) into one folder, by default
``weights/<model>/<source>/`` beside the working directory's ``data/`` and ``runs/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import canonical_name, is_model_name
from ..errors import redact
from ..releases import DEFAULT_SOURCE, FileSpec, release
from .file import check_in_place, fetch, removed_if_failed
from .hosts import effective_url
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
from .transfer import Options, Timeout, make_note, new_session

WEIGHTS_DIR_ENV = "GPT2LOAD_WEIGHTS_DIR"


def weights_root() -> Path:
    """``weights`` (relative to the working directory), or ``$GPT2LOAD_WEIGHTS_DIR``."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV, "").strip() or "weights").expanduser()


def default_dir(model: str, source: str) -> Path:
    return weights_root() / model / source


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

    ``manifest`` (a JSON file or dict ``{"files": [{"url", "path", "size"?, "sha256"?}]}``)
    fetches its files instead, into ``weights/<model>/custom``. A re-run keeps what the record
    or the published values vouch for (or a HEAD answer proves) and, all in place, writes
    nothing, so a read-only folder is reused. The record is rewritten after each file, so a
    failed run keeps what it verified. Other options are as for ``download_file``.
    """
    if manifest is not None:
        # The model name becomes a folder name: keep it to one plain part.
        if not model or model in (".", "..") or any(c in model for c in "/\\\0:"):
            raise ValueError(
                f"model name {model!r} cannot name a folder; use letters, digits, - or _"
            )
        name = canonical_name(model) if is_model_name(model) else model  # 124M: weights/gpt2/...
        label, files = "custom", load_manifest(manifest)
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
    with removed_if_failed(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with (
            exclusive_lock(folder / LOCK_NAME, on_wait=make_note(progress, always=True)),
            new_session() as session,
        ):
            opts = Options(
                session, mirror, force, fast, progress, retries, backoff, timeout, record=True
            )
            try:
                previous = None if force else read_record(folder)
            except ValueError as exc:
                opts.note(f"ignoring {RECORD_NAME}: {exc}")
                previous = None
            # The earlier record's still valid entries, replaced by this run's as files arrive.
            entries = {spec.path: _usable_entry(spec, previous) for spec in files}
            written = previous
            for spec in files:
                safe_relative_path(spec.path, "path", folder=folder)  # links made since the check
                dest = folder / spec.path
                digest = fetch(spec, dest, opts, entries[spec.path])
                entries[spec.path] = RecordedFile(
                    spec.path, redact(spec.url), dest.stat().st_size, digest, spec.size, spec.sha256
                )  # the record is a file anyone may read: no credentials in its URLs
                record = Record(name, label, tuple(e for e in entries.values() if e is not None))
                if record != written:
                    write_record(folder, record)
                    written = record
    return folder


def _check_room_for_names(folder: Path, files: tuple[FileSpec, ...]) -> None:
    """Refuse a non-folder and names too long for the file system now, not midway."""
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not existing.is_dir():
        where = "is" if existing == folder else f"is in the way at {existing}, which is"
        raise ValueError(f"the download folder {folder} {where} not a folder")
    try:
        name_max, path_max = (os.pathconf(existing, k) for k in ("PC_NAME_MAX", "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        name_max, path_max = 255, 4096
    room = len(PART_INFO_SUFFIX)
    for spec in files:
        for i, part in enumerate(parts := spec.path.split("/")):
            leaf = i == len(parts) - 1
            if (length := len(os.fsencode(part))) + (room if leaf else 0) > name_max:
                for_file = f" ({name_max - room} for a file, which needs a {PART_INFO_SUFFIX} "
                raise ValueError(
                    f"path {spec.path!r}: the name {part[:40]!r}... is {length} bytes; "
                    f"this file system holds names of at most {name_max} bytes"
                    + (for_file + "beside it while it downloads)" if leaf else "")
                )
        if (full := len(os.fsencode(str(folder / spec.path))) + room) >= path_max:
            raise ValueError(
                f"path {spec.path!r} in {folder} is {full} bytes long with its "
                f"{PART_INFO_SUFFIX}; this file system allows paths of fewer than {path_max}"
            )


def _usable_entry(spec: FileSpec, previous: Record | None) -> RecordedFile | None:
    """The record's entry for ``spec``, if it describes the file that ``spec`` names."""
    old = previous.file(spec.path) if previous is not None else None
    if old is None or redact(old.url) != redact(spec.url):
        return None  # recorded from another URL: says nothing about this file
    agrees = spec.size in (None, old.size) and spec.sha256 in (None, old.sha256)
    return old if agrees else None


def _in_place(folder: Path, files: tuple[FileSpec, ...], fast: bool) -> bool:
    """Whether every file is in place as recorded; reads only, so reuse needs no lock nor writes."""
    try:
        record = read_record(folder)
    except (ValueError, OSError):
        return False
    for spec in files:
        entry, path = _usable_entry(spec, record), folder / spec.path
        if entry is None or not path.is_file():
            return False
        if not check_in_place(path, entry.size, entry.sha256, fast)[0]:
            return False
    return record is not None
