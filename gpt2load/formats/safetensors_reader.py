"""Reading ``.safetensors`` (a JSON header, then raw little-endian tensor bytes) here, not with
``safe_open``, so tensors are memory-mapped views whose pages can be dropped after a copy, and a
hostile file is refused by the library's own rules, naming the tensor and byte range at fault."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .sources import MappedFile, StoredTensor, TensorSource, open_regular

MAX_HEADER_BYTES = 100_000_000
Parsed = tuple[StoredTensor, int, int]  # an entry and its data offsets
# Every dtype of the format: its size in bits (what coverage is checked with) and the torch
# dtype it reads as ("-": none torch has).
_FORMAT_DTYPES = {
    name: (int(bits), getattr(torch, torch_name, None))
    for row in (
        "BOOL 8 bool, F4 4 -, F6_E2M3 6 -, F6_E3M2 6 -, U8 8 uint8, I8 8 int8",
        "F8_E5M2 8 float8_e5m2, F8_E4M3 8 float8_e4m3fn, F8_E8M0 8 float8_e8m0fnu",
        "I16 16 int16, U16 16 uint16, F16 16 float16, BF16 16 bfloat16, I32 32 int32",
        "U32 32 uint32, F32 32 float32, C64 64 complex64, F64 64 float64, I64 64 int64",
        "U64 64 uint64",
    )
    for name, bits, torch_name in (entry.split() for entry in row.split(", "))
}


def looks_like_safetensors(head: bytes) -> bool:
    """The first bytes are a plausible header length followed by the start of a JSON object."""
    length = struct.unpack("<Q", head[:8])[0] if len(head) >= 9 else 0
    return 2 <= length <= MAX_HEADER_BYTES and head[8:9] == b"{"


def read_header(path: Path) -> tuple[dict[str, str], dict[str, Any], int]:
    """The metadata, the tensor entries and the file offset where tensor data starts."""
    with open_regular(path) as (fd, size):
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
    corrupt = f"{path} has a corrupt safetensors header"
    if not raw.startswith(b"{"):
        raise CheckpointError(f"{corrupt} (it does not start with '{{')")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise CheckpointError(f"{corrupt}: {reason}") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{corrupt}: __metadata__ must map strings to strings")
    return metadata, header, 8 + n


class SafetensorsSource(TensorSource):
    def __init__(self, files: tuple[Path, ...]) -> None:
        super().__init__(files)
        for path in files:
            metadata, header, data_start = read_header(path)
            mapped = MappedFile(path)
            self.metadata = metadata | self.metadata  # the first shard's word wins
            parsed = [_parse_entry(path, name, spec) for name, spec in header.items()]
            for entry, begin, end in parsed:
                mapped.check_range(entry.name, data_start + begin, end - begin)
            _check_coverage(path, parsed, mapped.size - data_start)
            for entry, begin, end in parsed:
                self.add(entry, (mapped, data_start + begin, end - begin))


def _check_coverage(path: Path, parsed: list[Parsed], data_bytes: int) -> None:
    """The format's rule: tensors tile the data exactly, in order. Overlapping tensors would
    share memory (training one would change the other); a gap or a tail is unaccounted bytes."""
    position = 0
    for begin, end, name in sorted((begin, end, entry.name) for entry, begin, end in parsed):
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


def _count(value: Any) -> bool:
    """A JSON whole number the format allows (``2.0``, ``1e999``, ``true`` and ``-1`` are not)."""
    return type(value) is int and value >= 0


def _parse_entry(path: Path, name: str, spec: Any) -> Parsed:
    """One header entry, held to the library's rules (its own error names no tensor): a known
    dtype, a shape of counts, two offsets in order exactly numel * itemsize bytes apart."""

    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path} has a corrupt safetensors header: tensor {name!r} {why}")

    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise corrupt(f"needs dtype, shape and data_offsets, got {str(spec)[:200]}")
    dtype_name, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype_name, str) or dtype_name not in _FORMAT_DTYPES:
        raise corrupt(f"has unknown dtype {str(dtype_name)[:40]!r}")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise corrupt(f"has shape {str(shape)[:200]}, not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(x) for x in offsets):
        raise corrupt(f"has data_offsets {str(offsets)[:200]}, not two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise corrupt(f"ends (data byte {end}) before it begins ({begin})")
    # numel * bits, stopped once past what the range holds (a 1e6-dim shape of huge sizes
    # would otherwise build an enormous integer before failing).
    bits, dtype = _FORMAT_DTYPES[dtype_name]
    bits = 0 if 0 in shape else bits
    for d in shape:
        bits *= d
        if bits > 8 * (end - begin):
            break
    if bits != 8 * (end - begin):
        raise CheckpointError(
            f"{path} is corrupt: tensor {name!r} of shape {str(shape)[:200]} {dtype_name} does "
            f"not fill its {end - begin} bytes (data_offsets {begin}..{end})"
        )
    shown = str(dtype).removeprefix("torch.") if dtype is not None else dtype_name
    return StoredTensor(name, tuple(shape), dtype, shown, path), begin, end
