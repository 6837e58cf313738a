"""What every container reader offers: names and shapes from headers alone (so detection,
``info`` and shape checks read no weights), tensors as views of a memory map. Nothing a
checkpoint names may be a device or a pipe: those never end (``/dev/zero``) or block (a FIFO)."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISCHR: "a character device", stat.S_ISSOCK: "a socket"}
_KINDS |= {stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a named pipe (FIFO)"}
FLOAT8 = frozenset(
    d for d in vars(torch).values() if isinstance(d, torch.dtype) and "float8" in str(d)
)


def _refuse_irregular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise CheckpointError(f"{path} is {kind}, not a regular file; a checkpoint must be a file")


def regular_size(path: Path) -> int:
    """The size of ``path``, refusing anything that is not a regular file (links followed)."""
    _refuse_irregular(path, (info := path.stat()).st_mode)
    return info.st_size


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[tuple[int, int]]:
    """A descriptor and the size of ``path``, a regular file: ``O_NONBLOCK`` so a FIFO cannot
    make ``open`` wait, checked on the descriptor so the file cannot be swapped meanwhile."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # POSIX, as pread is
    try:
        _refuse_irregular(path, (info := os.fstat(fd)).st_mode)
        os.set_blocking(fd, True)
        yield fd, info.st_size
    finally:
        os.close(fd)


def read_head(path: Path, count: int, tail: int = 0) -> tuple[bytes, bytes, int]:
    with open_regular(path) as (fd, size):
        end = os.pread(fd, tail, size - tail) if tail and size >= tail else b""
        return os.pread(fd, min(count, size), 0), end, size


@dataclass(frozen=True)
class StoredTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: a dtype we cannot turn into a torch tensor
    dtype_name: str
    file: Path

    def refuse_unusable_dtype(self) -> None:
        """Refuse, in one line, a tensor no model can compute with: float8 parameters would
        otherwise load and then fail deep inside a matrix multiply."""
        if self.dtype is None:
            raise CheckpointError(
                f"{self.file}: tensor {self.name!r} has unsupported dtype {self.dtype_name}"
            )
        if self.dtype in FLOAT8:
            raise CheckpointError(
                f"{self.file}: tensor {self.name!r} is stored as {self.dtype_name}, which "
                f"gpt2load cannot compute with; convert the checkpoint to bf16, fp16 or fp32 first"
            )


class MappedFile:
    """A private (copy-on-write) memory map that tensors are viewed from: views cost nothing
    until touched, and ``release`` drops the pages of those only read to be copied."""

    def __init__(self, path: Path) -> None:
        self.path, self.size = path, regular_size(path)
        self._map: mmap.mmap | None = None

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            with open_regular(self.path) as (fd, _):
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        return self._map

    def check_range(self, name: str, offset: int, nbytes: int) -> None:
        """Refuse a tensor that lies past the end of the file (touching it would crash)."""
        if nbytes < 0:
            raise CheckpointError(f"{self.path} is corrupt: tensor {name!r} has a negative size")
        if offset < 0 or offset + nbytes > self.size:
            raise CheckpointError(
                f"{self.path} is truncated: tensor {name!r} needs bytes {offset}..{offset + nbytes} "
                f"but the file has only {self.size} bytes"
            )

    def view(self, offset: int, nbytes: int, entry: StoredTensor) -> torch.Tensor:
        if nbytes == 0:
            return torch.empty(entry.shape, dtype=entry.dtype)
        raw = torch.frombuffer(self._mapping(), dtype=torch.uint8, count=nbytes, offset=offset)
        if offset % entry.dtype.itemsize:  # a misaligned view works on x86, not everywhere
            raw = raw.clone()
        return raw.view(entry.dtype).reshape(entry.shape)

    def crc32c(self, offset: int, nbytes: int) -> int:
        """The CRC-32C of a byte range, read with ``pread`` rather than through the map, so
        checking a checkpoint leaves none of its pages resident."""
        import google_crc32c

        crc, end = 0, offset + nbytes
        with open_regular(self.path) as (fd, _):
            while offset < end:
                chunk = os.pread(fd, min(8 << 20, end - offset), offset)
                if not chunk:
                    raise CheckpointError(f"{self.path} shrank while it was being read")
                crc = google_crc32c.extend(crc, chunk)
                offset += len(chunk)
        return crc

    def release(self, offset: int, nbytes: int) -> None:
        """Drop the resident pages lying wholly inside the range. Safe only for ranges no live
        tensor exposes: the pages are clean, so a later access reads the file again."""
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)


class TensorSource:
    """A checkpoint's tensors by stored name, each a byte range of a ``MappedFile`` or a
    tensor torch made; a name stored twice across shards is kept once, listed in ``duplicates``."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self.metadata: dict[str, Any] = {}
        self.duplicates: list[tuple[str, Path, Path]] = []
        self._entries: dict[str, StoredTensor] = {}
        self._where: dict[str, tuple[MappedFile, int, int] | torch.Tensor] = {}

    def add(self, entry: StoredTensor, where: tuple[MappedFile, int, int] | torch.Tensor) -> None:
        if entry.name in self._entries:
            self.duplicates.append((entry.name, self._entries[entry.name].file, entry.file))
        else:
            self._entries[entry.name], self._where[entry.name] = entry, where

    def entries(self) -> dict[str, StoredTensor]:
        return self._entries

    def tensor(self, name: str) -> torch.Tensor:
        entry, where = self._entries[name], self._where[name]
        if isinstance(where, torch.Tensor):
            return where
        mapped, offset, nbytes = where
        return mapped.view(offset, nbytes, entry)

    def release(self, name: str) -> None:
        """Drop the pages of a tensor that was copied (torch owns a pickle's mapping)."""
        where = self._where[name]
        if not isinstance(where, torch.Tensor):
            where[0].release(*where[1:])
