"""Reading TensorFlow checkpoints (the V2 "tensor bundle") without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` (a table, see ``sstable``, mapping
each tensor name to a ``BundleEntryProto``) plus ``PREFIX.data-0000i-of-0000n``
shards holding raw little-endian tensor bytes. The protobuf messages involved
are small, so they are decoded by hand here; importing TensorFlow takes longer
than reading the whole 124M model this way.

Each entry also records a masked CRC-32C of the tensor's bytes. OpenAI publishes
no hash for its checkpoints, so that CRC is the only content check they carry:
a tensor's bytes are checked against it the first time the tensor is read
(``check_crc``; ``GPT2LOAD_CHECK_CRC=0`` turns it off), and ``gpt2load verify``
checks every tensor.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import MappedFile, StoredTensor, open_regular, refuse_unusable_dtype
from .sstable import TableError, read_table, unmask_crc, varint

#: Set to 0 (or false/no/off) to skip checking tensors against the index's CRC-32C on load.
CHECK_CRC_ENV = "GPT2LOAD_CHECK_CRC"
# An index is a few kilobytes per hundred tensors; anything near this is not one.
MAX_INDEX_BYTES = 256 << 20
_crc_override: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "gpt2load_check_crc", default=None
)


@contextlib.contextmanager
def crc_checks(enabled: bool) -> Iterator[None]:
    """Turn the load-time CRC check on or off for sources opened inside the block
    (``verify`` checks every tensor itself first, and need not pay for it twice)."""
    token = _crc_override.set(enabled)
    try:
        yield
    finally:
        _crc_override.reset(token)


def crc_checks_enabled() -> bool:
    """Whether a source opened now checks CRCs: ``crc_checks`` if inside one, else the
    environment (on unless ``GPT2LOAD_CHECK_CRC`` is 0/false/no/off)."""
    override = _crc_override.get()
    if override is not None:
        return override
    value = os.environ.get(CHECK_CRC_ENV, "1").strip().lower()
    return value not in {"0", "false", "no", "off"}


# tensorflow/core/framework/types.proto
DTYPES: dict[int, tuple[str, torch.dtype | None]] = {
    1: ("float32", torch.float32),
    2: ("float64", torch.float64),
    3: ("int32", torch.int32),
    4: ("uint8", torch.uint8),
    5: ("int16", torch.int16),
    6: ("int8", torch.int8),
    7: ("string", None),
    9: ("int64", torch.int64),
    10: ("bool", torch.bool),
    14: ("bfloat16", torch.bfloat16),
    19: ("float16", torch.float16),
}

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for every field of one protobuf message."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = varint(buf, pos)
        elif wire == _FIXED64:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == _BYTES:
            length, pos = varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == _FIXED32:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise TableError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise TableError("protobuf field runs past the end of its message")
        out.append((number, wire, value))
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:  # TensorShapeProto.dim
            size = _signed64(next((v for n, _, v in _fields(value) if n == 1), 0))
            if size < 0:
                raise TableError(f"tensor dimension {size} is negative")
            dims.append(size)
        elif number == 3 and value:
            raise TableError("tensor of unknown rank")
    return tuple(dims)


def parse_entry(value: bytes) -> dict[str, Any]:
    """A ``BundleEntryProto`` as a dict (dtype, shape, shard_id, offset, size, crc32c, sliced)."""
    entry: dict[str, Any] = {
        "dtype": 0,
        "shape": (),
        "shard_id": 0,
        "offset": 0,
        "size": 0,
        "sliced": False,
    }
    for number, _, field_value in _fields(value):
        if number == 1:
            entry["dtype"] = field_value
        elif number == 2:
            entry["shape"] = _shape(field_value)
        elif number == 3:
            entry["shard_id"] = field_value
        elif number == 4:
            entry["offset"] = _signed64(field_value)
        elif number == 5:
            entry["size"] = _signed64(field_value)
        elif number == 6:
            entry["crc32c"] = field_value
        elif number == 7:
            entry["sliced"] = True
    return entry


def parse_header(value: bytes) -> dict[str, int]:
    """A ``BundleHeaderProto``: number of data shards and byte order."""
    header = {"num_shards": 1, "endianness": 0}
    for number, _, field_value in _fields(value):
        if number == 1:
            header["num_shards"] = field_value
        elif number == 2:
            header["endianness"] = field_value
    return header


def read_index(index_path: Path) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """The bundle header and every tensor entry of ``PREFIX.index``."""
    fd, size = open_regular(index_path)
    try:
        if size > MAX_INDEX_BYTES:
            raise CheckpointError(
                f"{index_path} is {size} bytes, too large for a TensorFlow checkpoint index"
            )
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    try:
        rows = list(read_table(data))
    except TableError as exc:
        raise CheckpointError(f"{index_path} is truncated or corrupt: {exc}") from None
    header: dict[str, int] | None = None
    entries: dict[str, dict[str, Any]] = {}
    try:
        for key, value in rows:
            if key == b"":
                header = parse_header(value)
            else:
                entries[key.decode("utf-8")] = parse_entry(value)
    except (TableError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index_path} is corrupt: {exc}") from None
    if header is None:
        raise CheckpointError(
            f"{index_path} is not a TensorFlow checkpoint index (no bundle header)"
        )
    return header, entries


def data_file(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


class TFBundleSource:
    """The tensors of one TensorFlow checkpoint prefix, memory-mapped from its data shards.

    ``check_crc`` (default: ``crc_checks_enabled()``) checks each tensor's bytes against
    the CRC-32C in the index the first time ``tensor`` hands it out.
    """

    container = "tf"

    def __init__(self, prefix: Path, *, check_crc: bool | None = None) -> None:
        index_path = prefix.with_name(prefix.name + ".index")
        header, raw_entries = read_index(index_path)
        if header["endianness"] != 0:
            raise CheckpointError(f"{index_path} was written big-endian, which is not supported")
        num_shards = header["num_shards"]
        if num_shards < 1:
            raise CheckpointError(f"{index_path} is corrupt: it claims {num_shards} data shards")
        # Only the shards some entry names are opened: the header's count is just a claim.
        shards: dict[int, MappedFile] = {}
        for name, raw in raw_entries.items():
            shard_id = raw["shard_id"]
            if shard_id >= num_shards:
                raise CheckpointError(
                    f"{index_path} is corrupt: tensor {name!r} is in shard {shard_id} of "
                    f"{num_shards}"
                )
            if shard_id not in shards:
                path = data_file(prefix, shard_id, num_shards)
                if not path.exists():
                    raise CheckpointError(f"{path} is missing: tensor {name!r} is stored there")
                shards[shard_id] = MappedFile(path)
        self.prefix = prefix
        self.files = (index_path, *(shards[i].path for i in sorted(shards)))
        self.metadata: dict[str, Any] = {}
        self.check_crc = crc_checks_enabled() if check_crc is None else check_crc
        self._entries: dict[str, StoredTensor] = {}
        self._where: dict[str, tuple[MappedFile, int, int]] = {}
        self._crcs: dict[str, int] = {}
        self._crc_checked: set[str] = set()
        for name, raw in raw_entries.items():
            if raw["sliced"]:
                raise CheckpointError(
                    f"{index_path}: tensor {name!r} is partitioned, which is not supported"
                )
            shard = shards[raw["shard_id"]]
            dtype_name, dtype = DTYPES.get(raw["dtype"], (f"tf-dtype-{raw['dtype']}", None))
            entry = StoredTensor(
                name=name, shape=raw["shape"], dtype=dtype, dtype_name=dtype_name, file=shard.path
            )
            if dtype is not None:
                expected = entry.numel * torch.empty((), dtype=dtype).element_size()
                if raw["size"] != expected:
                    raise CheckpointError(
                        f"{index_path} is corrupt: tensor {name!r} of shape {list(entry.shape)} "
                        f"{dtype_name} needs {expected} bytes but its entry gives {raw['size']}"
                    )
            shard.check_range(name, raw["offset"], raw["size"])
            self._entries[name] = entry
            self._where[name] = (shard, raw["offset"], raw["size"])
            if "crc32c" in raw:
                self._crcs[name] = raw["crc32c"]

    def entries(self) -> dict[str, StoredTensor]:
        return self._entries

    def duplicates(self) -> list[tuple[str, Path, Path]]:
        return []

    def crc_problem(self, name: str) -> str | None:
        """Why tensor ``name``'s bytes do not match the index's CRC-32C, or None when they do
        (or when its entry records none)."""
        if name not in self._crcs:
            return None
        shard, offset, nbytes = self._where[name]
        expected = unmask_crc(self._crcs[name])
        actual = shard.crc32c(offset, nbytes)
        if actual == expected:
            return None
        return (
            f"{shard.path} is corrupt: tensor {name!r} fails its CRC-32C check (the index "
            f"records {expected:08x}, its {nbytes} bytes at offset {offset} give {actual:08x}); "
            f"the file changed after it was written, download it again"
        )

    def check_crcs(self) -> tuple[int, list[str]]:
        """Check every tensor that records a CRC: (how many were checked, one line per failure)."""
        problems = []
        for name in self._crcs:
            problem = self.crc_problem(name)
            if problem is None:
                self._crc_checked.add(name)
            else:
                problems.append(problem)
        return len(self._crcs), problems

    def tensor(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        refuse_unusable_dtype(entry)
        if self.check_crc and name not in self._crc_checked:
            problem = self.crc_problem(name)
            if problem is not None:
                raise CheckpointError(problem)
            self._crc_checked.add(name)
        shard, offset, nbytes = self._where[name]
        return shard.view(offset, nbytes, entry.dtype, entry.shape)

    def release(self, name: str) -> None:
        shard, offset, nbytes = self._where[name]
        shard.release(offset, nbytes)
