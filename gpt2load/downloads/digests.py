"""Hashing files, and reading the digests a server vouches for in its headers: each is a free
second opinion on the bytes, so every one found is checked."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
Progress = Callable[[int], object] | None  # told the bytes of each chunk read


@dataclass(frozen=True)
class Claim:
    """A server's statement about the whole file: ``algorithm`` is "sha256", "md5" or "size"."""

    algorithm: str
    value: str
    source: str  # the header it came from, for error messages


def normalise_sha256(value: str | None, what: str = "sha256") -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not _SHA256_HEX.match(value):
        raise ValueError(f"{what} must be 64 hexadecimal digits, got {value!r}")
    return value


def hash_file(
    path: str | os.PathLike[str], algorithms: Iterable[str], progress: Progress = None
) -> dict[str, str]:
    """Hex digests of a file, every algorithm computed in one read; ``progress`` is told the
    bytes of each chunk (a bar: hashing gpt2-xl's 6 GB takes a minute)."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    if hashers:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                for h in hashers.values():
                    h.update(chunk)
                if progress is not None:
                    progress(len(chunk))
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_file(path: str | os.PathLike[str], progress: Progress = None) -> str:
    return hash_file(path, ["sha256"], progress)["sha256"]


def _etag_sha256(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if value.startswith("W/"):
        return None  # a weak tag promises equivalence, not identical bytes
    value = value.strip('"').lower()
    return value if _SHA256_HEX.match(value) else None


def _base64_md5(raw: str | None) -> str | None:
    try:
        digest = base64.b64decode((raw or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def header_claims(headers: Mapping[str, str], *, first_hop: bool, full_body: bool) -> list[Claim]:
    """What one response's headers say about the whole file: a bare ETag is a sha256 only on
    the ``first_hop`` (the hub's convention, not CDNs'), Content-MD5 only of a ``full_body``."""
    claims = []
    if linked := _etag_sha256(headers.get("X-Linked-Etag")):
        claims.append(Claim("sha256", linked, "X-Linked-Etag"))
    elif first_hop and (etag := _etag_sha256(headers.get("ETag"))):
        claims.append(Claim("sha256", etag, "ETag"))
    if full_body and (md5 := _base64_md5(headers.get("Content-MD5"))):
        claims.append(Claim("md5", md5, "Content-MD5"))
    if blob_md5 := _base64_md5(headers.get("x-ms-blob-content-md5")):
        claims.append(Claim("md5", blob_md5, "x-ms-blob-content-md5"))
    if (linked_size := headers.get("X-Linked-Size", "").strip()).isdigit():
        claims.append(Claim("size", linked_size, "X-Linked-Size"))
    return claims
