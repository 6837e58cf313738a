"""Reading ``.safetensors`` files: a JSON header, then raw little-endian tensor bytes.

The header is parsed here (it is tiny and fully specified) rather than through
``safetensors.safe_open`` so that the tensors can be memory-mapped views whose
pages are dropped after a transposed copy has been made, and so that a
truncated or inconsistent file is reported with the tensor and byte range at
fault instead of a generic parse error.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import MappedFile, StoredTensor, open_regular, refuse_unusable_dtype

MAX_HEADER_BYTES = 100_000_000

# Every dtype of the safetensors format, with its size in bits (what coverage is checked with)
# and the torch dtype it reads as (None: a dtype torch has no tensor type for).
_FORMAT_DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "bool"),
    "F4": (4, None),
    "F6_E2M3": (6, None),
    "F6_E3M2": (6, None),
    "U8": (8, "uint8"),
    "I8": (8, "int8"),
    "F8_E5M2": (8, "float8_e5m2"),
    "F8_E4M3": (8, "float8_e4m3fn"),
    "F8_E8M0": (8, "float8_e8m0fnu"),
    "I16": (16, "int16"),
    "U16": (16, "uint16"),
    "F16": (16, "float16"),
    "BF16": (16, "bfloat16"),
    "I32": (32, "int32"),
    "U32": (32, "uint32"),
    "F32": (32, "float32"),
    "C64": (64, "complex64"),
    "F64": (64, "float64"),
    "I64": (64, "int64"),
    "U64": (64, "uint64"),
}
BITS: dict[str, int] = {name: bits for name, (bits, _) in _FORMAT_DTYPES.items()}
DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, torch_name)
    for name, (_, torch_name) in _FORMAT_DTYPES.items()
    if torch_name is not None and hasattr(torch, torch_name)
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """The first bytes are a plausible header length followed by the start of a JSON object."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{"


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed header and the file offset where tensor data starts."""
    fd, size = open_regular(path)
    try:
        prefix = os.pread(fd, 8, 0)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is truncated: a safetensors file needs at least 8 bytes")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path} is not a safetensors file (header length {n} is absurd)")
        if 8 + n > size:
            raise CheckpointError(
                f"{path} is truncated: its header needs {n} bytes but the file has {size - 8} after the length"
            )
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    if not raw.startswith(b"{"):
        raise CheckpointError(
            f"{path} has a corrupt safetensors header (it does not start with '{{')"
        )
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise CheckpointError(f"{path} has a corrupt safetensors header: {reason}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header (not a JSON object)")
    return header, 8 + n


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """The format's rule: tensors tile the data buffer exactly, in offset order, with no gap,
    no overlap and nothing after the last. Overlapping tensors would share memory (training
    one would change the other); a gap or a tail is bytes nobody accounts for."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise CheckpointError(
                f"{path} is corrupt: tensor {name!r} starts at data byte {begin}, which "
                f"{what} (expected {position})"
            )
        position = end
    if position != data_bytes:
        raise CheckpointError(
            f"{path} is corrupt: its tensors cover {position} data bytes but the file holds "
            f"{data_bytes} after the header"
        )


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
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise CheckpointError(
                f"{path} has a corrupt safetensors header: __metadata__ must map strings to strings"
            )
        for key, value in metadata.items():
            self.metadata.setdefault(key, value)
        parsed = [
            (name, *_parse_entry(path, name, spec, data_start)) for name, spec in header.items()
        ]
        for name, _, offset, nbytes in parsed:
            mapped.check_range(name, offset, nbytes)
        _check_coverage(
            path,
            [(offset - data_start, offset - data_start + n, name) for name, _, offset, n in parsed],
            mapped.size - data_start,
        )
        for name, entry, offset, nbytes in parsed:
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
        refuse_unusable_dtype(entry)
        mapped, offset, nbytes = self._where[name]
        return mapped.view(offset, nbytes, entry.dtype, entry.shape)

    def release(self, name: str) -> None:
        mapped, offset, nbytes = self._where[name]
        mapped.release(offset, nbytes)


def _count(value: Any) -> bool:
    """A JSON whole number the format allows (``2.0``, ``1e999``, ``true`` and ``-1`` are not)."""
    return type(value) is int and value >= 0


def _parse_entry(
    path: Path, name: str, spec: Any, data_start: int
) -> tuple[StoredTensor, int, int]:
    """One header entry, held to the rules ``safetensors`` itself enforces (its own error names
    no tensor): a known dtype, a shape of non-negative integers, two non-negative integer
    offsets, in order, exactly numel * itemsize bytes apart."""

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} has a corrupt safetensors header: tensor {name!r} {why}")

    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise corrupt(f"needs dtype, shape and data_offsets, got {str(spec)[:200]}")
    dtype_name, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype_name, str) or dtype_name not in BITS:
        raise corrupt(f"has unknown dtype {str(dtype_name)[:40]!r}")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise corrupt(f"has shape {str(shape)[:200]}, not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(x) for x in offsets):
        raise corrupt(f"has data_offsets {str(offsets)[:200]}, not two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise corrupt(f"ends (data byte {end}) before it begins ({begin})")
    nbytes = end - begin
    # numel * bits, stopped early once past what the range could hold (a 1e6-dim shape of
    # huge sizes would otherwise build an enormous integer before failing).
    bits = 0 if 0 in shape else BITS[dtype_name]
    for d in shape:
        bits *= d
        if bits > 8 * nbytes:
            break
    if bits % 8 or bits != 8 * nbytes:
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} of shape {str(shape)[:200]} {dtype_name} does "
            f"not fill its {nbytes} bytes (data_offsets {begin}..{end})"
        )
    dtype = DTYPES.get(dtype_name)
    shown = str(dtype).removeprefix("torch.") if dtype is not None else dtype_name
    entry = StoredTensor(name=name, shape=tuple(shape), dtype=dtype, dtype_name=shown, file=path)
    return entry, data_start + begin, nbytes
