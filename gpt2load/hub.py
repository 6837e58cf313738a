"""Any GPT-2 on the Hugging Face hub by its id (``ORG/NAME``), through the standard HF cache
shared with transformers. ``huggingface_hub`` does the work, imported only when the network is
needed; the ``HF_*`` settings are read at each call, not once at import as it does."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import is_model_name
from .errors import NO_NETWORK_ADVICE, CheckpointError, ChecksumError, DownloadError, HubAccessError
from .releases import HF_HOST, hub_repo, release

_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
# Weights in the order they are preferred: safetensors load without unpickling anything.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Fetched with the weights: config, generation config, tokenizer (either form), small json.
SIDE_FILES = ("*.json", "merges.txt")
LFS_WEIGHTS = (".safetensors", ".bin")
PROXIES = ("https", "http", "all")
LOGIN = (
    "set HF_TOKEN to a token that can read it, or run `hf auth login` (`huggingface-cli "
    "login` in huggingface_hub before 1.0)"
)


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id, ``ORG/NAME`` (an existing path wins over one)."""
    return bool(_REPO_ID.fullmatch(str(text))) and ".." not in str(text)


@dataclass(frozen=True)
class HubSettings:
    endpoint: str
    cache: Path
    offline: bool
    token: str | None  # never printed, logged or written


def settings() -> HubSettings:
    """The hub, the cache, offline mode and the token, as the environment says them now."""
    env = os.environ
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or home.expanduser() / "hub"
    offline = (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").strip().upper()
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
    token_file = Path(env.get("HF_TOKEN_PATH") or home / "token").expanduser()
    if not token and token_file.is_file():  # where `hf auth login` saves it
        token = token_file.read_text(encoding="utf-8")
    endpoint = (env.get("HF_ENDPOINT") or HF_HOST).rstrip("/")
    is_offline = offline in ("1", "ON", "YES", "TRUE")
    token = (token or "").strip() or None
    return HubSettings(endpoint, Path(cache).expanduser(), is_offline, token)


def _read_json(path: Path, repo_id: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{repo_id}: {path.name} is not readable JSON ({exc})") from None
    return value if isinstance(value, dict) else {}


def _check_gpt2(repo_id: str, config: Path) -> None:
    """Refuse another architecture by its config, before any weight file is fetched."""
    model_type = _read_json(config, repo_id).get("model_type")
    if model_type != "gpt2":
        raise CheckpointError(
            f"{repo_id} is a {model_type!r} model (the model_type of its config.json), not "
            f"GPT-2; gpt2load reads repos whose model_type is 'gpt2'"
        )


def _weights(names: set[str], index_file: Callable[[str], Path], repo_id: str) -> list[str]:
    """The weight files to use among ``names``: safetensors, else ``pytorch_model.bin``; an
    index brings the shards its ``weight_map`` lists."""
    name = next((n for n in WEIGHT_FILES if n in names), None)
    if name is None:
        raise CheckpointError(
            f"{repo_id} holds no weights gpt2load reads (none of {', '.join(WEIGHT_FILES)})"
        )
    if not name.endswith(".index.json"):
        return [name]
    shards = _read_json(index_file(name), repo_id).get("weight_map", {})
    return [name, *sorted(set(shards.values()) if isinstance(shards, dict) else ())]


def _pinned(repo_id: str) -> tuple[str, int | None] | None:
    """The published (sha256, size) of ``model.safetensors`` if ``repo_id`` is a published GPT-2."""
    _, _, name = repo_id.partition("/")
    if not is_model_name(name) or hub_repo(name).lower() != repo_id.lower():
        return None
    spec = release(name, "hf").file("model.safetensors")
    return (spec.sha256, spec.size) if spec is not None and spec.sha256 else None


def check_pinned(repo_id: str, folder: Path) -> None:
    """A published GPT-2's weights must be the published file. The HF cache names an LFS blob
    by the sha256 the hub announced, so a blob named by the pinned hash and of the published
    size is that file, at the cost of a stat (``gpt2load verify`` still hashes the bytes)."""
    pinned, weights = _pinned(repo_id), folder / "model.safetensors"
    if pinned and not weights.is_file():  # other weights under the published name: not its own
        raise ChecksumError(
            f"{folder} holds no model.safetensors, yet the published {repo_id} does; its other "
            f"weights are not the published ones. Delete {folder.parent.parent} and download again"
        )
    if pinned:
        found = (weights.resolve().name, weights.stat().st_size)
        if found[0] != pinned[0] or pinned[1] not in (None, found[1]):
            raise ChecksumError(
                f"{weights} is not the published {repo_id} model.safetensors (its blob is "
                f"{found[0]}, {found[1]} bytes; expected {pinned[0]}, {pinned[1]} bytes); "
                f"delete {folder.parent.parent} and download again"
            )


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The complete snapshot of ``repo_id`` in the HF cache (config and every weight file),
    found with no network and no import of ``huggingface_hub``; None when there is none."""
    storage = settings().cache / f"models--{repo_id.replace('/', '--')}"
    ref = storage / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = storage / "snapshots" / str(commit)
    if commit is None or not (folder / "config.json").is_file():
        return None
    names = {p.name for p in folder.iterdir()}
    try:
        weights = _weights(names, lambda name: folder / name, repo_id)
    except CheckpointError:
        return None
    if not all((folder / w).is_file() for w in weights):
        return None
    _check_gpt2(repo_id, folder / "config.json")
    check_pinned(repo_id, folder)
    return folder


def snapshot(
    repo_id: str,
    revision: str | None = None,
    *,
    download: bool = True,
    refresh: bool = False,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` (default ``main``) in the HF cache.
    A complete cached one is used with no network unless ``refresh`` (the branch may have
    moved). Otherwise ``config.json`` comes first, so another architecture is refused before
    any weight file is fetched; then the weights, the tokenizer and the small json files."""
    hub = settings()
    cached = None if force else cached_snapshot(repo_id, revision)
    if cached is not None and (hub.offline or not refresh):
        return cached
    absent = f"{repo_id} is not (or not completely) in the Hugging Face cache ({hub.cache})"
    if hub.offline:
        raise DownloadError(
            f"{absent} and HF_HUB_OFFLINE is set: unset it to download, or copy the cache of a "
            f"machine that has it"
        )
    if not download:
        raise FileNotFoundError(f"{absent}; run `gpt2load download {repo_id}` first")
    from .downloads.hosts import check_base  # here: the cache alone needs no requests

    try:
        check_base(hub.endpoint, "HF_ENDPOINT")
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    if cached is None and (why := _unreachable(hub.endpoint)):  # absent: fail now, no retries
        raise DownloadError(
            f"{repo_id}: {hub.endpoint} cannot be reached ({why}) and the Hugging Face cache "
            f"({hub.cache}) lacks it. {NO_NETWORK_ADVICE}"
        )
    with _hub_errors(repo_id, revision, hub), contextlib.ExitStack() as restore:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download, utils

        if quiet and not utils.are_progress_bars_disabled():
            utils.disable_progress_bars()
            restore.callback(utils.enable_progress_bars)
        token = hub.token or False  # False: not even a token saved where huggingface_hub looks
        common = dict(cache_dir=hub.cache, endpoint=hub.endpoint, token=token, force_download=force)

        def fetch(name: str, rev: str | None = revision) -> Path:
            return Path(hf_hub_download(repo_id, name, revision=rev, **common))

        config = fetch("config.json")
        _check_gpt2(repo_id, config)
        commit = config.parent.name  # snapshots/<commit>/config.json
        api = HfApi(endpoint=hub.endpoint, token=token)
        names = set(api.list_repo_files(repo_id, revision=commit))
        patterns = [*SIDE_FILES, *_weights(names, lambda name: fetch(name, commit), repo_id)]
        folder = snapshot_download(repo_id, revision=commit, allow_patterns=patterns, **common)
    check_pinned(repo_id, Path(folder))
    return Path(folder)


def _unreachable(url: str) -> str | None:
    """Why the hub cannot be reached at all (its name does not resolve, nothing listens), found
    in a moment: huggingface_hub would retry for half a minute. Through a proxy only the proxy
    knows, so nothing is said then."""
    if any(os.environ.get(f"{k}_proxy") or os.environ.get(f"{k}_PROXY") for k in PROXIES):
        return None
    parts = urlsplit(url)
    where = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    try:
        socket.create_connection(where, timeout=10).close()
    except socket.gaierror:
        return "its host name does not resolve"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError:  # a timeout, say: huggingface_hub's retries may yet get through
        return None
    return None


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, hub: HubSettings) -> Iterator[None]:
    """The hub's answers as one line each, saying what to do; never the token."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:
        raise HubAccessError(
            f"{repo_id} is gated: accept its conditions at {hub.endpoint}/{repo_id}, then {LOGIN}"
        ) from None
    except errors.RepositoryNotFoundError:
        why = "or your token cannot read it" if hub.token else f"or it is private: {LOGIN}"
        raise HubAccessError(
            f"{repo_id} is no local file or folder, and {hub.endpoint} has no such repo {why}"
        ) from None
    except errors.RevisionNotFoundError:
        raise DownloadError(f"{repo_id} has no revision {revision!r} on {hub.endpoint}") from None
    except errors.RemoteEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id} has no config.json: it is no transformers model"
        ) from None
    except (errors.LocalEntryNotFoundError, errors.HfHubHTTPError, httpx2.HTTPError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        said = f"answered {status}" if status else "could not be reached"
        todo = (
            "try again later, or set HF_ENDPOINT to another mirror" if status else NO_NETWORK_ADVICE
        )
        raise DownloadError(
            f"{repo_id}: {hub.endpoint} {said} and the Hugging Face cache ({hub.cache}) lacks "
            f"it. {todo}"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the disk's: said by the caller with its path
            raise
        # huggingface_hub's own check of a file's size against the hub's (a cut transfer)
        raise DownloadError(
            f"{repo_id}: a file from {hub.endpoint} arrived incomplete "
            f"({' '.join(str(exc).split())}); run the command again"
        ) from None


def cached_gpt2_repos() -> list[tuple[str, int, str]]:
    """(repo@commit, bytes, verified?) for every GPT-2 snapshot in the HF cache."""
    cache = settings().cache
    if not cache.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    rows = []
    for repo in sorted(scan_cache_dir(cache).repos, key=lambda r: r.repo_id):
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            config = rev.snapshot_path / "config.json"
            if repo.repo_type != "model" or not config.is_file():
                continue
            with contextlib.suppress(CheckpointError):
                _check_gpt2(repo.repo_id, config)
                weights = [f for f in rev.files if f.file_name.endswith(LFS_WEIGHTS)]
                blobs = {f.blob_path.name: f.size_on_disk for f in weights}
                where = f"{repo.repo_id}@{rev.commit_hash[:7]}"
                rows.append((where, rev.size_on_disk, _said(repo.repo_id, blobs)))
    return rows


def _said(repo_id: str, blobs: dict[str, int]) -> str:
    """How far a cached snapshot's weights are vouched for, from their blobs' names and sizes."""
    if not blobs:  # a download stopped after config.json, or a repo fetched file by file
        return f"no weights (`gpt2load download {repo_id}` fetches them)"
    pinned = _pinned(repo_id)
    if pinned and pinned[0] in blobs and pinned[1] in (None, blobs[pinned[0]]):
        return "verified (its blob is named by the published sha256, of the published size)"
    if pinned:
        return "NOT the published file (its blob's name or size is not the published one)"
    if blobs and all(_SHA256_NAME.fullmatch(b) for b in blobs):
        return "sha256 by etag (the hub's word; `gpt2load verify` hashes)"
    return "not verified"
