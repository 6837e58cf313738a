"""Which version of the server's file ``FILE.part`` holds, kept in ``FILE.part.json``: sent back
as ``If-Range`` when resuming, so a changed file comes back whole (200), never as the rest of
another version (206), and no file is stitched from two."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import redact
from ..fileio import atomic_write_text, regular_size
from .manifest import PART_INFO_SUFFIX, PART_SUFFIX


@dataclass(frozen=True)
class Validator:
    """A strong ETag, else a Last-Modified: what identifies one version of the server's file."""

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
        """Whether ``other`` (from a later response) names another version of the file."""
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
