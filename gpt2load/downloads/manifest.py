"""Custom manifests, and the record (``manifest.json``) each download leaves in its folder.

File names come only from a manifest, never from a server, and are checked here so nothing is
written outside the folder. The record keeps each file's sha256 as it arrived, so a re-run can
skip the network and ``gpt2load verify`` can notice a later change."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..errors import redact
from ..fileio import atomic_write_text
from ..releases import FileSpec, Release
from .digests import normalise_sha256

RECORD_NAME = "manifest.json"
RECORD_FORMAT = "gpt2load-download/1"
LOCK_NAME = ".gpt2load-download.lock"
PART_SUFFIX = ".part"
PART_INFO_SUFFIX = ".part.json"  # which version of the file FILE.part holds (its validator)
_MANIFEST_KEYS = {"url", "path", "size", "sha256"}


def safe_relative_path(
    name: object, what: str = "path", folder: str | os.PathLike[str] | None = None
) -> str:
    """``name`` as a relative POSIX path that stays in ``folder`` (through any links), or ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    drive = name[1:2] == ":"  # C:... on Windows; a leading "/" makes an empty part below
    if "\\" in name or "\0" in name or drive or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(
            f"{what} {name!r} is not allowed: use a relative path with '/' separators and "
            f"no '.', '..' or empty parts"
        )
    if name in (RECORD_NAME, LOCK_NAME) or name.endswith((PART_SUFFIX, PART_INFO_SUFFIX)):
        raise ValueError(f"{what} {name!r} is reserved for gpt2load's own bookkeeping")
    if folder is not None:
        root = Path(folder).resolve()
        target = (root / name).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ValueError(
                f"{what} {name!r} leads outside {root} (to {target}) through a symbolic link; "
                f"remove the link or choose another folder"
            )
    return name


def _entry(raw: object, label: str) -> FileSpec:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{label} must be an object with 'url' and 'path', got {raw!r}")
    if unknown := set(raw) - _MANIFEST_KEYS:
        raise ValueError(
            f"{label} has unknown keys {sorted(unknown)}; allowed: {sorted(_MANIFEST_KEYS)}"
        )
    url = raw.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        shown = redact(url) if isinstance(url, str) else url
        raise ValueError(f"{label}.url must be an http(s) URL, got {shown!r}")
    path = raw.get("path")
    if path is None:  # default: the last part of the URL's path, checked like any other name
        path = PurePosixPath(urlsplit(url).path).name
    path = safe_relative_path(path, f"{label}.path")
    size, sha = raw.get("size"), raw.get("sha256")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError(f"{label}.size must be a non-negative integer, got {size!r}")
    if sha is not None and not isinstance(sha, str):
        raise ValueError(f"{label}.sha256 must be a string, got {sha!r}")
    return FileSpec(url, path, size, normalise_sha256(sha, f"{label}.sha256"))


def load_manifest(manifest: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[FileSpec, ...]:
    """The files of a custom manifest (a JSON file or a parsed mapping), checked."""
    where, data = "manifest", manifest
    if not isinstance(manifest, Mapping):
        where = str(Path(manifest))
        try:
            data = json.loads(Path(where).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"manifest file not found: {where}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"manifest {where} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("files"), list):
        raise ValueError(f'{where}: expected an object {{"files": [...]}}')
    if not data["files"]:
        raise ValueError(f"{where}: 'files' is empty")
    files = tuple(_entry(raw, f"{where}: files[{i}]") for i, raw in enumerate(data["files"]))
    paths = [spec.path for spec in files]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"{where}: path {path!r} appears more than once")
        seen.add(path)
    # "a" and "a/b": "a" would have to be a file and a folder at once
    folders = {str(parent): path for path in paths for parent in PurePosixPath(path).parents}
    for path in paths:
        if path in folders:
            raise ValueError(
                f"{where}: path {path!r} is a file, but {folders[path]!r} needs a "
                f"folder of that name; rename one of them"
            )
    return files


@dataclass(frozen=True)
class RecordedFile:
    path: str
    url: str  # redacted: anyone may read the record
    size: int
    sha256: str
    expected_size: int | None = None
    expected_sha256: str | None = None


@dataclass(frozen=True)
class Record(Release):
    """What a download verified, as ``manifest.json`` in its folder keeps it."""

    files: tuple[RecordedFile, ...]  # type: ignore[assignment]


def write_record(folder: str | os.PathLike[str], record: Record) -> Path:
    data = {"format": RECORD_FORMAT, **asdict(record)}  # then model, source, files
    return atomic_write_text(Path(folder) / RECORD_NAME, json.dumps(data, indent=2) + "\n")


def read_record(folder: str | os.PathLike[str]) -> Record | None:
    """The record in ``folder``; None when there is none. ValueError when it is unreadable."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {RECORD_FORMAT!r}")
        files = []
        for raw in data["files"]:
            files.append(entry := RecordedFile(**raw))
            safe_relative_path(entry.path)
            normalise_sha256(entry.sha256)
            if type(entry.size) is not int or entry.size < 0:  # summed and compared later
                raise ValueError(f"the size of {entry.path!r} is {entry.size!r}, not a count")
        return Record(str(data["model"]), str(data["source"]), tuple(files))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable gpt2load download record: {exc}") from None
