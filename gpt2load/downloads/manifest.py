"""Manifests: the custom ones users hand us, and the record we leave in each folder.

A manifest is the only place file names come from; a server never chooses where
bytes land. Names are therefore checked here, once, so nothing can be written
outside the target folder whatever a manifest says.

The record (``manifest.json`` in the downloaded folder) keeps the sha256 of every
file as it arrived, which lets a re-run skip the network and ``gpt2load verify``
notice a file that changed afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..fileio import atomic_write_text
from ..releases import FileSpec
from .digests import normalise_sha256
from .hosts import redact

RECORD_NAME = "manifest.json"
RECORD_FORMAT = "gpt2load-download/1"
LOCK_NAME = ".gpt2load-download.lock"
PART_SUFFIX = ".part"
PART_INFO_SUFFIX = ".part.json"  # which version of the file FILE.part holds (its validator)
_MANIFEST_KEYS = {"url", "path", "size", "sha256"}


def safe_relative_path(
    name: object, what: str = "path", folder: str | os.PathLike[str] | None = None
) -> str:
    """``name`` as a clean relative POSIX path that stays inside its folder, or ValueError.

    With ``folder``, the path is also resolved there, following any symbolic links
    already on disk (a linked sub-folder, or a link where the file will go), and
    must still land inside ``folder``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    bad = (
        "\\" in name
        or "\0" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")  # a Windows drive
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise ValueError(
            f"{what} {name!r} is not allowed: use a relative path with '/' separators and "
            f"no '.', '..' or empty parts"
        )
    leaf = PurePosixPath(name).name
    if name in (RECORD_NAME, LOCK_NAME) or leaf.endswith((PART_SUFFIX, PART_INFO_SUFFIX)):
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


def _entry(raw: object, index: int, where: str) -> FileSpec:
    label = f"{where}: files[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{label} must be an object with 'url' and 'path', got {raw!r}")
    unknown = set(raw) - _MANIFEST_KEYS
    if unknown:
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
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ValueError(f"{label}.size must be a non-negative integer, got {size!r}")
    sha = raw.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise ValueError(f"{label}.sha256 must be a string, got {sha!r}")
    return FileSpec(url=url, path=path, size=size, sha256=normalise_sha256(sha, f"{label}.sha256"))


def parse_manifest(data: object, where: str = "manifest") -> tuple[FileSpec, ...]:
    """Validate a manifest ``{"files": [{"url", "path", "size"?, "sha256"?}, ...]}``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("files"), list):
        raise ValueError(f'{where}: expected an object {{"files": [...]}}')
    if not data["files"]:
        raise ValueError(f"{where}: 'files' is empty")
    files = tuple(_entry(raw, i, where) for i, raw in enumerate(data["files"]))
    seen: set[str] = set()
    for spec in files:
        if spec.path in seen:
            raise ValueError(f"{where}: path {spec.path!r} appears more than once")
        seen.add(spec.path)
    # "a" and "a/b": "a" would have to be a file and a folder at once
    folders = {
        str(parent): spec.path for spec in files for parent in PurePosixPath(spec.path).parents
    }
    for spec in files:
        if spec.path in folders:
            raise ValueError(
                f"{where}: path {spec.path!r} is a file, but {folders[spec.path]!r} needs a "
                f"folder of that name; rename one of them"
            )
    return files


def load_manifest(manifest: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[FileSpec, ...]:
    """Files of a custom manifest given as a JSON file path or an already parsed mapping."""
    if isinstance(manifest, Mapping):
        return parse_manifest(manifest)
    path = Path(manifest)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest {path} is not valid JSON: {exc}") from None
    return parse_manifest(data, str(path))


@dataclass(frozen=True)
class RecordedFile:
    path: str
    url: str
    size: int
    sha256: str
    expected_size: int | None = None
    expected_sha256: str | None = None


@dataclass(frozen=True)
class Record:
    model: str
    source: str
    files: tuple[RecordedFile, ...]

    def file(self, path: str) -> RecordedFile | None:
        return next((f for f in self.files if f.path == path), None)


def write_record(folder: str | os.PathLike[str], record: Record) -> Path:
    data = {
        "format": RECORD_FORMAT,
        "model": record.model,
        "source": record.source,
        "files": [asdict(f) for f in record.files],
    }
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
            entry = RecordedFile(**raw)
            safe_relative_path(entry.path)
            normalise_sha256(entry.sha256)
            files.append(entry)
        return Record(model=str(data["model"]), source=str(data["source"]), files=tuple(files))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable gpt2load download record: {exc}") from None
