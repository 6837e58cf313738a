"""Reading TensorFlow checkpoints (the V2 "tensor bundle") by hand: importing TensorFlow takes
longer than reading 124M this way. ``PREFIX.index`` is a LevelDB-style table (prefix-compressed
blocks with masked CRC-32Cs, a footer ending in a magic number) of ``BundleEntryProto``s.
OpenAI publishes no hash for these files, so each entry's CRC-32C is their only content check:
checked on first read (unless ``check_crc=False`` or ``GPT2LOAD_CHECK_CRC=0``); all by verify."""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from .sources import MappedFile, StoredTensor, TensorSource, open_regular

#: Set to 0 (or false/no/off) to skip checking tensors against the index's CRC-32C on load.
CHECK_CRC_ENV = "GPT2LOAD_CHECK_CRC"
# An index is a few kilobytes per hundred tensors; anything near this is not one.
MAX_INDEX_BYTES = 256 << 20
# tensorflow/core/framework/types.proto, by number; each but "string" is a torch dtype's name.
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string"}
DTYPES |= {9: "int64", 10: "bool", 14: "bfloat16", 19: "float16"}
_CHECKS_OFF = {"0", "false", "no", "off"}
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48


class TableError(Exception):
    """The bytes are not a well-formed table (the caller adds which file)."""


def index_of(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def has_table_magic(tail: bytes) -> bool:
    return len(tail) >= 8 and struct.unpack("<Q", tail[-8:])[0] == TABLE_MAGIC


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 64, 7):
        if pos >= len(buf):
            raise TableError("varint runs past the end of its buffer")
        byte, pos = buf[pos], pos + 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise TableError("varint longer than 10 bytes")


def fast_crc32c(data: bytes) -> int:
    import google_crc32c

    return google_crc32c.value(bytes(data))


def unmask_crc(masked: int) -> int:
    """TensorFlow (LevelDB) masks a CRC stored beside its data, so it is not a CRC of it."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if end + 5 > len(data) - FOOTER_SIZE:  # 5: the block's compression byte and CRC
        raise TableError(f"block at {offset}+{size} lies past the end of the table")
    (stored_crc,) = struct.unpack("<I", data[end + 1 : end + 5])
    if fast_crc32c(data[offset : end + 1]) != unmask_crc(stored_crc):
        raise TableError(f"block at {offset}+{size} fails its CRC-32C check")
    if data[end] != 0:
        raise TableError(
            f"block at {offset} uses compression type {data[end]}, which is not supported"
        )
    return data[offset:end]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TableError("block too short")
    limit = len(block) - 4 - 4 * struct.unpack("<I", block[-4:])[0]
    if limit < 0:
        raise TableError("block restart array is larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        value_len, pos = varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise TableError("block entry runs past the end of its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = varint(buf, pos)
    size, pos = varint(buf, pos)
    return offset, size, pos


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < FOOTER_SIZE or not has_table_magic(data):
        raise TableError("it ends without the table footer (truncated, or not a TensorFlow index)")
    footer = data[-FOOTER_SIZE:]
    *_, pos = _handle(footer)  # the metaindex block, which holds nothing we need
    index_offset, index_size, _ = _handle(footer, pos)
    for _, handle in _entries(_block(data, index_offset, index_size)):
        yield from _entries(_block(data, *_handle(handle)[:2]))


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) for every field of one protobuf message, all checked first."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            length, pos = varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):  # fixed 64 or 32 bits
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise TableError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise TableError("protobuf field runs past the end of its message")
        out.append((number, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(buf):
        if number == 2:  # TensorShapeProto.dim
            size = _signed64(next((v for n, v in _fields(value) if n == 1), 0))
            if size < 0:
                raise TableError(f"tensor dimension {size} is negative")
            dims.append(size)
        elif number == 3 and value:
            raise TableError("tensor of unknown rank")
    return tuple(dims)


# BundleEntryProto's fields by number; offset and size are signed, and any slice means sliced.
_ENTRY_KEYS = dict(
    enumerate(("dtype", "shape", "shard_id", "offset", "size", "crc32c", "sliced"), 1)
)
_READ = {"shape": _shape, "offset": _signed64, "size": _signed64, "sliced": lambda _: True}


def parse_entry(value: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = dict(dtype=0, shape=(), shard_id=0, offset=0, size=0, sliced=False)
    for number, field_value in _fields(value):
        if key := _ENTRY_KEYS.get(number):
            entry[key] = _READ[key](field_value) if key in _READ else field_value
    return entry


def read_index(index_path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """The number of data shards the bundle header gives and every entry of ``PREFIX.index``."""
    with open_regular(index_path) as (fd, size):
        if size > MAX_INDEX_BYTES:
            raise CheckpointError(
                f"{index_path} is {size} bytes, too large for a TensorFlow checkpoint index"
            )
        data = os.pread(fd, size, 0)
    try:
        rows = list(read_table(data))
    except TableError as exc:
        raise CheckpointError(f"{index_path} is truncated or corrupt: {exc}") from None
    header: dict[int, Any] | None = None
    entries: dict[str, dict[str, Any]] = {}
    try:
        for key, value in rows:
            if key == b"":  # BundleHeaderProto: num_shards is field 1, endianness field 2
                header = dict(_fields(value))
            else:
                entries[key.decode("utf-8")] = parse_entry(value)
    except (TableError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index_path} is corrupt: {exc}") from None
    if header is None:
        raise CheckpointError(
            f"{index_path} is not a TensorFlow checkpoint index (no bundle header)"
        )
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{index_path} was written big-endian, which is not supported")
    if (num_shards := header.get(1, 1)) < 1:
        raise CheckpointError(f"{index_path} is corrupt: it claims {num_shards} data shards")
    return num_shards, entries


class TFBundleSource(TensorSource):
    """One TF checkpoint prefix, its data shards memory-mapped (``check_crc``: see above)."""

    def __init__(self, prefix: Path, *, check_crc: bool | None = None) -> None:
        index_path = index_of(prefix)
        num_shards, raw_entries = read_index(index_path)
        super().__init__(())
        by_env = os.environ.get(CHECK_CRC_ENV, "1").strip().lower() not in _CHECKS_OFF
        self.check_crc = by_env if check_crc is None else check_crc
        self._crcs: dict[str, int] = {}  # tensor name -> CRC-32C not yet checked
        # Only the shards some entry names are opened: the header's count is just a claim.
        shards: dict[int, MappedFile] = {}
        for name, raw in raw_entries.items():
            if (shard_id := raw["shard_id"]) >= num_shards:
                raise CheckpointError(
                    f"{index_path} is corrupt: tensor {name!r} is in shard {shard_id} of "
                    f"{num_shards}"
                )
            if shard_id not in shards:
                path = prefix.with_name(f"{prefix.name}.data-{shard_id:05d}-of-{num_shards:05d}")
                if not path.exists():
                    raise CheckpointError(f"{path} is missing: tensor {name!r} is stored there")
                shards[shard_id] = MappedFile(path)
            if raw["sliced"]:
                raise CheckpointError(
                    f"{index_path}: tensor {name!r} is partitioned, which is not supported"
                )
            shard = shards[shard_id]
            dtype_name = DTYPES.get(raw["dtype"], f"tf-dtype-{raw['dtype']}")
            dtype = getattr(torch, dtype_name, None)
            entry = StoredTensor(name, raw["shape"], dtype, dtype_name, shard.path)
            nbytes = math.prod(entry.shape) * dtype.itemsize if dtype is not None else raw["size"]
            if raw["size"] != nbytes:
                raise CheckpointError(
                    f"{index_path} is corrupt: tensor {name!r} of shape {list(entry.shape)} "
                    f"{dtype_name} needs {nbytes} bytes but its entry gives {raw['size']}"
                )
            shard.check_range(name, raw["offset"], raw["size"])
            self.add(entry, (shard, raw["offset"], raw["size"]))
            if "crc32c" in raw:
                self._crcs[name] = raw["crc32c"]
        self.files = (index_path, *(shards[i].path for i in sorted(shards)))

    def _crc_problem(self, name: str) -> str | None:
        """Why ``name`` fails its CRC-32C; None if it passes, was checked already or has none."""
        if name not in self._crcs:
            return None
        shard, offset, nbytes = self._where[name]
        expected, actual = unmask_crc(self._crcs[name]), shard.crc32c(offset, nbytes)
        if actual == expected:
            del self._crcs[name]
            return None
        return (
            f"{shard.path} is corrupt: tensor {name!r} fails its CRC-32C check (the index "
            f"records {expected:08x}, its {nbytes} bytes at offset {offset} give {actual:08x}); "
            f"the file changed after it was written, download it again"
        )

    def check_crcs(self) -> tuple[int, list[str]]:
        """Check every tensor that records a CRC: (how many were checked, one line per failure)."""
        count = len(self._crcs)
        return count, [p for name in list(self._crcs) if (p := self._crc_problem(name))]

    def tensor(self, name: str) -> torch.Tensor:
        if self.check_crc and (problem := self._crc_problem(name)):
            raise CheckpointError(problem)
        return super().tensor(name)
