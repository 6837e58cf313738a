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

import os
from pathlib import Path
from typing import Any

import requests

from ..releases import DEFAULT_SOURCE, FileSpec, release
from .lock import exclusive_lock
from .manifest import (
    LOCK_NAME,
    RECORD_NAME,
    Record,
    RecordedFile,
    load_manifest,
    read_record,
    write_record,
)
from .transfer import (
    USER_AGENT,
    ChecksumError,
    DownloadError,
    Timeout,
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


def default_dir(model: str, source: str) -> Path:
    """``weights/<model>/<source>``, under ``$GPT2LOAD_WEIGHTS_DIR`` when that is set."""
    root = os.environ.get(WEIGHTS_DIR_ENV, "").strip() or "weights"
    return Path(root).expanduser() / model / source


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
    ``dest.part``, resuming from what an interrupted run left there, with ``retries``
    attempts (default 5) spaced by exponential ``backoff`` seconds (default 1, or
    ``$GPT2LOAD_BACKOFF``) on dropped connections, timeouts, 429 and 5xx; 403/404 fail
    at once. ``timeout`` is seconds, or (connect, read); default (10, 60). The part is
    renamed onto ``dest`` only when it matches ``size``, ``sha256`` and every digest the
    server sent; otherwise it is deleted and ``ChecksumError`` names the file, the
    expected and the actual value. ``force`` discards what is on disk first.

    ``mirror`` (else ``$GPT2LOAD_MIRROR``, else ``$HF_ENDPOINT`` for Hugging Face
    URLs) swaps the URL's scheme and host. A lock file beside ``dest`` makes two
    concurrent calls for the same ``dest`` take turns.
    """
    dest = Path(dest)
    note = make_note(progress)
    with exclusive_lock(dest.with_name(f".{dest.name}.lock"), on_wait=note):
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
    return model


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
    ``weights/<model>/custom``). A re-run checks the files in place (sizes, and sha256
    unless ``fast``) against the published values and the folder's ``manifest.json``,
    and fetches only what is missing or wrong. ``retries``, ``backoff`` and ``timeout``
    are as for ``download_file``.
    """
    if manifest is not None:
        name, label = _check_label(model), CUSTOM_SOURCE
        files = load_manifest(manifest)
    else:
        built_in = release(model, source or DEFAULT_SOURCE)
        name, label, files = built_in.model, built_in.source, built_in.files
    folder = (Path(dir).expanduser() if dir is not None else default_dir(name, label)).resolve()
    note = make_note(progress)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / LOCK_NAME, on_wait=note), requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        try:
            previous = None if force else read_record(folder)
        except ValueError as exc:
            note(f"ignoring {RECORD_NAME}: {exc}")
            previous = None
        options = dict(
            mirror=mirror,
            force=force,
            fast=fast,
            need_sha256=True,  # for the record
            progress=progress,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            session=session,
        )
        recorded = [_fetch_one(spec, folder, previous, options) for spec in files]
        write_record(folder, Record(model=name, source=label, files=tuple(recorded)))
    return folder


def _fetch_one(
    spec: FileSpec, folder: Path, previous: Record | None, options: dict[str, Any]
) -> RecordedFile:
    old = previous.file(spec.path) if previous is not None else None
    if old is not None and old.url != spec.url:
        old = None  # recorded from another URL: says nothing about this file
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
        url=spec.url,
        size=result.size,
        sha256=result.sha256,
        expected_size=spec.size,
        expected_sha256=spec.sha256,
    )
