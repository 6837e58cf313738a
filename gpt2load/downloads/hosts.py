"""Which host a URL is really fetched from: a mirror swaps scheme and host and keeps the path,
so one mirror serves every release. Plain http only from a mirror someone chose explicitly, so
nothing silently travels in clear."""

from __future__ import annotations

import os
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..errors import redact

MIRROR_ENV = "GPT2LOAD_MIRROR"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co"})


def split_url(url: str, what: str) -> SplitResult:
    """``url``'s parts, its port read too: a bad one (``:abc``, ``:99999``) or bracket is found
    here, in one line naming ``what``, not by requests mid-download."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (reading it is the check)
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid URL ({exc}): {redact(url)!r}") from None
    return parts


def check_base(base: str, what: str) -> SplitResult:
    """A mirror or hub address (``what`` names its flag or variable): http(s), a host, no query."""
    mirror = split_url(base, what)
    if mirror.scheme not in ("http", "https") or not mirror.netloc:
        raise ValueError(
            f"{what} must be an http(s) URL such as https://mirror.example, got {redact(base)!r}"
        )
    if mirror.query or mirror.fragment:
        raise ValueError(f"{what} must not carry a query or fragment, got {redact(base)!r}")
    return mirror


def rewrite_host(url: str, base: str, what: str = "mirror") -> str:
    """``url`` with scheme and host taken from ``base``; a path in ``base`` becomes a prefix."""
    mirror, parts = check_base(base, what), urlsplit(url)
    path = mirror.path.rstrip("/") + parts.path
    return urlunsplit((mirror.scheme, mirror.netloc, path, parts.query, ""))


def effective_url(url: str, mirror: str | None = None) -> tuple[str, bool]:
    """The URL to request and whether http is allowed: through ``mirror``, else $GPT2LOAD_MIRROR,
    else $HF_ENDPOINT (Hugging Face URLs only); else the URL itself, which must be https."""
    parts = split_url(url, "the download URL")
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
