"""Hashing files on disk, and reading the digests a server vouches for in its headers.

Servers describe the bytes they send in several ways: ``Content-MD5`` (base64 MD5
of the body), Azure's ``x-ms-blob-content-md5`` (of the whole blob, even on a
range read), and the Hugging Face hub's sha256 in ``X-Linked-Etag`` or ``ETag``.
Each one is a free second opinion on the bytes, so every one found is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 1 << 20


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
    path: str | os.PathLike[str], algorithms: Iterable[str] = ("sha256",)
) -> dict[str, str]:
    """Hex digests of a file, every algorithm computed in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    if not hashers:
        return {}
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    return hash_file(path, ("sha256",))["sha256"]


def _etag_sha256(raw: str | None) -> str | None:
    if not raw:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        return None  # a weak tag promises equivalence, not identical bytes
    value = value.strip('"').lower()
    return value if _SHA256_HEX.match(value) else None


def _base64_md5(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        digest = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def header_claims(headers: Mapping[str, str], *, first_hop: bool, full_body: bool) -> list[Claim]:
    """What one response's headers say about the whole file.

    ``first_hop``: the response came from the URL we asked for, not a redirect target;
    a bare ETag is read as sha256 only there (the hub's convention; CDNs use other tags).
    ``full_body``: a 200 carrying the whole file, the only case where ``Content-MD5``
    describes the file rather than a range of it.
    """
    claims = []
    linked = _etag_sha256(headers.get("X-Linked-Etag"))
    if linked:
        claims.append(Claim("sha256", linked, "X-Linked-Etag"))
    elif first_hop and (etag := _etag_sha256(headers.get("ETag"))):
        claims.append(Claim("sha256", etag, "ETag"))
    if full_body and (md5 := _base64_md5(headers.get("Content-MD5"))):
        claims.append(Claim("md5", md5, "Content-MD5"))
    if blob_md5 := _base64_md5(headers.get("x-ms-blob-content-md5")):
        claims.append(Claim("md5", blob_md5, "x-ms-blob-content-md5"))
    linked_size = headers.get("X-Linked-Size", "").strip()
    if linked_size.isdigit():
        claims.append(Claim("size", linked_size, "X-Linked-Size"))
    return claims
