"""Which host a URL is really fetched from, and whether plain http is acceptable there.

Built-in URLs name the publishers' hosts. A mirror swaps scheme and host (and may
add a path prefix) but keeps the path, so one mirror serves every release laid out
as the originals are. Plain http is accepted only from a mirror someone chose
explicitly; anything else must be https, so nothing silently travels in clear.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from ..errors import redact

MIRROR_ENV = "GPT2LOAD_MIRROR"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co"})


# scheme://USERINFO@ : from "//" to the last "@" before the path, as urlsplit reads it.
def _check_base(base: str, what: str) -> tuple[str, str, str]:
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{what} must be an http(s) URL such as https://mirror.example, got {redact(base)!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not carry a query or fragment, got {redact(base)!r}")
    return parts.scheme, parts.netloc, parts.path.rstrip("/")


def rewrite_host(url: str, base: str, what: str = "mirror") -> str:
    """``url`` with scheme and host taken from ``base``; a path in ``base`` becomes a prefix."""
    scheme, netloc, prefix = _check_base(base, what)
    parts = urlsplit(url)
    return urlunsplit((scheme, netloc, prefix + parts.path, parts.query, ""))


def effective_url(url: str, mirror: str | None = None) -> tuple[str, bool]:
    """The URL to request and whether plain http is allowed for it.

    Precedence: an explicit ``mirror`` argument, then ``$GPT2LOAD_MIRROR`` (every URL),
    then ``$HF_ENDPOINT`` (Hugging Face URLs only). Without any of these the URL is
    used as it is and must be https.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {redact(url)!r}")
    env_mirror = os.environ.get(MIRROR_ENV, "").strip()
    hf_endpoint = os.environ.get(HF_ENDPOINT_ENV, "").strip()
    if mirror:
        return rewrite_host(url, mirror, "--mirror"), True
    if env_mirror:
        return rewrite_host(url, env_mirror, MIRROR_ENV), True
    if hf_endpoint and parts.hostname in HF_HOSTS:
        return rewrite_host(url, hf_endpoint, HF_ENDPOINT_ENV), True
    if parts.scheme != "https":
        raise ValueError(
            f"refusing plain http for {redact(url)}: downloads use https unless a mirror is chosen "
            f"explicitly (--mirror http://host or {MIRROR_ENV}=http://host)"
        )
    return url, False


def scheme_allowed(url: str, allow_http: bool) -> bool:
    scheme = urlsplit(url).scheme
    return scheme == "https" or (allow_http and scheme == "http")
