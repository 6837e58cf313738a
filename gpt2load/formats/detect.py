"""Finding the checkpoint in a path from the first and last bytes of its files (a safetensors
header, a zip or pickle, the magic number that ends a TF ``*.index``), not from their names:
renamed files still load and an ``encoder.json`` is never mistaken for weights."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from ..char_tokenizer import META_PKL  # a pickle beside the weights, holding none
from ..errors import CheckpointError
from .hints import read_json
from .safetensors_reader import looks_like_safetensors
from .sources import read_head, regular_size
from .tf_bundle import FOOTER_SIZE, has_table_magic, index_of
from .torch_reader import looks_like_torch

SAFETENSORS, TORCH, TF = "safetensors", "torch", "tf"
# When a folder holds several kinds, the safest and leanest to read wins.
PREFERENCE = (SAFETENSORS, TF, TORCH)
_CHECKPOINT_LINE = re.compile(r'^model_checkpoint_path:\s*"(?P<path>[^"]*)"', re.MULTILINE)
# A TF ``checkpoint`` state file is under 100 bytes; only this much of a candidate is read.
_STATE_FILE_BYTES = 65536
# A Hugging Face shard index (``*.index.json``) lists a few thousand names at most.
_MAX_INDEX_JSON_BYTES = 64 << 20


@dataclass(frozen=True)
class Located:
    """Where a checkpoint's weights are, and the folder its side files live in."""

    container: str
    files: tuple[Path, ...]  # for TF: the checkpoint prefix (PREFIX.index without ".index")
    folder: Path


def sniff(path: Path) -> str | None:
    """The container a file's bytes belong to, or None (a device or a pipe is never read)."""
    try:
        head, tail, size = read_head(path, 16, 8)
    except (OSError, CheckpointError):
        return None
    if looks_like_safetensors(head):
        return SAFETENSORS
    if looks_like_torch(head):
        return TORCH
    return TF if size >= FOOTER_SIZE and has_table_magic(tail) else None


def _prefix_of(index: Path) -> Path:
    return index.with_name(index.name.removesuffix(".index"))


def _refuse_damaged_index(index: Path) -> None:
    """Name ``PREFIX.index`` damaged (not absent) when it lacks the table footer while data
    shards of its prefix sit beside it: a truncated download."""
    damaged = index.name.endswith(".index") and index.name != ".index" and sniff(index) != TF
    if not damaged or not glob.glob(glob.escape(str(_prefix_of(index))) + ".data-*"):
        return
    try:
        size = regular_size(index)
    except (OSError, CheckpointError):
        return
    raise CheckpointError(
        f"{index} is truncated or corrupt: its {size} bytes do not end with the footer of a "
        f"TensorFlow checkpoint index (download it again)"
    )


def locate(path: str | Path) -> Located:
    """Where the checkpoint in ``path`` (a file, a folder, or a TF prefix) is, from its bytes."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _locate_in_folder(path)
    if not path.exists():
        if sniff(index_of(path)) == TF:
            return Located(TF, (path,), path.parent)
        _refuse_damaged_index(index_of(path))
        raise FileNotFoundError(f"no such checkpoint file or folder: {path}")
    regular_size(path)  # a device or a pipe is refused before anything reads it
    if (kind := sniff(path)) == TF:
        if not path.name.endswith(".index"):
            raise CheckpointError(
                f"{path} is a TensorFlow checkpoint index but is not named PREFIX.index"
            )
        return Located(TF, (_prefix_of(path),), path.parent)
    if kind is not None:
        return Located(kind, (path,), path.parent)
    # A TF data shard or the ``checkpoint`` state file stands for its whole checkpoint.
    shard_prefix = path.with_name(path.name.split(".data-")[0])
    if ".data-" in path.name and sniff(index_of(shard_prefix)) == TF:
        return Located(TF, (shard_prefix,), path.parent)
    if (prefix := _prefix_from_state_file(path)) is not None:
        return Located(TF, (prefix,), path.parent)
    _refuse_damaged_index(path)
    _refuse_damaged_index(index_of(shard_prefix))
    try:
        head = read_head(path, 12)[0]
        seen = f"it starts with {head!r}" if head else "it is empty"
    except OSError as exc:
        seen = f"unreadable: {exc}"
    raise CheckpointError(
        f"{path} is not a checkpoint gpt2load can read ({seen}); expected "
        f"safetensors, a PyTorch .pth/.bin/.pt, or a TensorFlow checkpoint"
    )


def _prefix_from_state_file(state: Path) -> Path | None:
    try:
        text = read_head(state, _STATE_FILE_BYTES)[0].decode("utf-8", errors="strict")[:4096]
    except (OSError, UnicodeDecodeError, CheckpointError):
        return None
    if not (match := _CHECKPOINT_LINE.search(text)):
        return None
    named = Path(match.group("path"))
    # Absolute paths go stale when a folder is moved; the file beside the state file wins.
    for prefix in (state.parent / named.name, state.parent / named):
        if sniff(index_of(prefix)) == TF:
            return prefix
    return None


def _locate_in_folder(folder: Path) -> Located:
    found: dict[str, list[Path]] = {kind: [] for kind in PREFERENCE}
    looked = 0
    state_prefix: Path | None = None
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.name == META_PKL or not child.is_file():
            continue
        looked += 1
        if (kind := sniff(child)) is not None:
            found[kind].append(child)
        elif state_prefix is None and child.stat().st_size < _STATE_FILE_BYTES:
            state_prefix = _prefix_from_state_file(child)
    for kind, files in found.items():
        if not files:
            continue
        if kind == TF:
            if state_prefix is not None:
                return Located(TF, (state_prefix,), folder)
            files = [f for f in files if f.name.endswith(".index")]
            if len(files) == 1:
                return Located(TF, (_prefix_of(files[0]),), folder)
        elif len(files) == 1:
            return Located(kind, (files[0],), folder)
        elif shards := _shards_from_index_json(folder, files):
            return Located(kind, shards, folder)
        raise CheckpointError(
            f"{folder} holds several {kind} checkpoints ({', '.join(f.name for f in files)}) and "
            f"no index saying they are shards of one; pass the file to load"
        )
    for index in sorted(folder.glob("*.index")):
        _refuse_damaged_index(index)
    raise CheckpointError(
        f"no checkpoint found in {folder}: none of its {looked} files is safetensors, a PyTorch "
        f"pickle or a TensorFlow checkpoint index"
    )


def _shards_from_index_json(folder: Path, candidates: list[Path]) -> tuple[Path, ...] | None:
    """Shards listed by a Hugging Face ``*.index.json`` (``weight_map``: tensor -> file)."""
    names = {c.name for c in candidates}
    for index in sorted(folder.glob("*.index.json")):
        try:
            weight_map = read_json(index, _MAX_INDEX_JSON_BYTES).get("weight_map", {})
        except CheckpointError:
            continue
        shard_names = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        if shard_names and set(shard_names) <= names:
            return tuple(folder / n for n in shard_names)
    return None
