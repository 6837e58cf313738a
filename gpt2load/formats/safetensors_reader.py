"""Reading ``.safetensors`` files: a JSON header, then raw little-endian tensor bytes.

The header is parsed here (it is tiny and fully specified) rather than through
``safetensors.safe_open`` so that the tensors can be memory-mapped views whose
pages are dropped after a transposed copy has been made, and so that a
truncated or inconsistent file is reported with the tensor and byte range at
fault instead of a generic parse error.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import MappedFile, StoredTensor

MAX_HEADER_BYTES = 100_000_000

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """The first bytes are a plausible header length followed by the start of a JSON object."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{"


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed header and the file offset where tensor data starts."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is truncated: a safetensors file needs at least 8 bytes")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path} is not a safetensors file (header length {n} is absurd)")
        if 8 + n > size:
            raise CheckpointError(
                f"{path} is truncated: its header needs {n} bytes but the file has {size - 8} after the length"
            )
        raw = handle.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header (not a JSON object)")
    return header, 8 + n


class SafetensorsSource:
    """One or more ``.safetensors`` files (several when a checkpoint is sharded)."""

    container = "safetensors"

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self.metadata: dict[str, Any] = {}
        self._entries: dict[str, StoredTensor] = {}
        self._where: dict[str, tuple[MappedFile, int, int]] = {}
        self._duplicates: list[tuple[str, Path, Path]] = []
        for path in files:
            self._read(path)

    def _read(self, path: Path) -> None:
        header, data_start = read_header(path)
        mapped = MappedFile(path)
        metadata = header.pop("__metadata__", None) or {}
        if isinstance(metadata, dict):
            for key, value in metadata.items():
                self.metadata.setdefault(key, value)
        for name, spec in header.items():
            entry, offset, nbytes = _parse_entry(path, name, spec, data_start)
            mapped.check_range(name, offset, nbytes)
            if name in self._entries:
                self._duplicates.append((name, self._entries[name].file, path))
                continue
            self._entries[name] = entry
            self._where[name] = (mapped, offset, nbytes)

    def entries(self) -> dict[str, StoredTensor]:
        return self._entries

    def duplicates(self) -> list[tuple[str, Path, Path]]:
        return self._duplicates

    def tensor(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        if entry.dtype is None:
            raise CheckpointError(
                f"{entry.file}: tensor {name!r} has unsupported dtype {entry.dtype_name}"
            )
        mapped, offset, nbytes = self._where[name]
        return mapped.view(offset, nbytes, entry.dtype, entry.shape)

    def release(self, name: str) -> None:
        mapped, offset, nbytes = self._where[name]
        mapped.release(offset, nbytes)


def _parse_entry(
    path: Path, name: str, spec: Any, data_start: int
) -> tuple[StoredTensor, int, int]:
    try:
        dtype_name = str(spec["dtype"])
        shape = tuple(int(d) for d in spec["shape"])
        begin, end = (int(x) for x in spec["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{path} has a corrupt safetensors header entry for {name!r}: {spec!r}"
        ) from None
    dtype = DTYPES.get(dtype_name)
    shown = str(dtype).removeprefix("torch.") if dtype is not None else dtype_name
    entry = StoredTensor(name=name, shape=shape, dtype=dtype, dtype_name=shown, file=path)
    if dtype is not None:
        expected = entry.numel * torch.empty((), dtype=dtype).element_size()
        if end - begin != expected:
            raise CheckpointError(
                f"{path} is corrupt: tensor {name!r} of shape {list(shape)} {dtype_name} needs "
                f"{expected} bytes but its header gives {end - begin}"
            )
    if end < begin:
        raise CheckpointError(f"{path} is corrupt: tensor {name!r} has negative size")
    return entry, data_start + begin, end - begin
