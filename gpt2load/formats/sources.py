"""What every container reader offers the loader: names, shapes and lazily read tensors.

A reader describes each stored tensor (name, shape, dtype, file) from headers
alone, so detection, ``info`` and shape checks never read weight data. Data is
handed out as views of a memory map where the container allows it.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .errors import CheckpointError

# Bytes read per call while checksumming: big enough to be fast, small enough not to matter.
_CHUNK = 8 << 20

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(path: Path, mode: int) -> CheckpointError:
    """Devices and pipes never end (``/dev/zero``) or block forever (a FIFO), so nothing a
    checkpoint names may be one; the message says what the path is instead."""
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return CheckpointError(f"{path} is {kind}, not a regular file; a checkpoint must be a file")


def regular_size(path: Path) -> int:
    """The size of ``path``, refusing anything that is not a regular file (links followed)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise not_regular(path, info.st_mode)
    return info.st_size


def open_regular(path: Path) -> tuple[int, int]:
    """An open descriptor and the size of ``path``, which must be a regular file.

    ``O_NONBLOCK`` keeps ``open`` itself from waiting for a FIFO's writer; the type is
    then checked on the descriptor, so the file cannot be swapped between check and use.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_regular(path, info.st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_head(path: Path, count: int, tail: int = 0) -> tuple[bytes, bytes, int]:
    """The first ``count`` bytes, the last ``tail`` bytes (empty when the file is shorter)
    and the size of ``path``, which must be a regular file."""
    fd, size = open_regular(path)
    try:
        head = os.pread(fd, min(count, size), 0)
        end = os.pread(fd, tail, size - tail) if tail and size >= tail else b""
    finally:
        os.close(fd)
    return head, end, size


FLOAT8 = frozenset(
    getattr(torch, name)
    for name in (
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    )
    if hasattr(torch, name)
)


def refuse_unusable_dtype(entry: StoredTensor) -> None:
    """A tensor gpt2load cannot compute with is refused when its data is asked for, with a
    one-line reason: float8 parameters would otherwise load and then fail deep inside
    a matrix multiply (CPU kernels for them do not exist)."""
    if entry.dtype is None:
        raise CheckpointError(
            f"{entry.file}: tensor {entry.name!r} has unsupported dtype {entry.dtype_name}"
        )
    if entry.dtype in FLOAT8:
        raise CheckpointError(
            f"{entry.file}: tensor {entry.name!r} is stored as {entry.dtype_name}, which "
            f"gpt2load cannot compute with; convert the checkpoint to bf16, fp16 or fp32 first"
        )


@dataclass(frozen=True)
class StoredTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: a dtype we cannot turn into a torch tensor
    dtype_name: str
    file: Path

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class TensorSource(Protocol):
    container: str
    files: tuple[Path, ...]
    metadata: dict[str, Any]

    def entries(self) -> dict[str, StoredTensor]: ...

    def duplicates(self) -> list[tuple[str, Path, Path]]: ...

    def tensor(self, name: str) -> torch.Tensor: ...

    def release(self, name: str) -> None: ...


@dataclass
class MappedFile:
    """A private (copy-on-write) memory map of a file that tensors are viewed from.

    Views cost nothing until touched, and a parameter that needs no change stays a
    view of the file. For tensors that are only read to build a copy, ``release``
    drops their pages again, so loading never holds the file and the copies at once.
    """

    path: Path
    size: int = field(init=False)
    _map: mmap.mmap | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.size = regular_size(self.path)

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            fd, _ = open_regular(self.path)
            try:
                self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
            finally:
                os.close(fd)
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

    def view(
        self, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...]
    ) -> torch.Tensor:
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = nbytes // itemsize
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        if offset % itemsize:
            # A misaligned view would work on x86 but not everywhere; copy instead.
            raw = torch.frombuffer(self._mapping(), dtype=torch.uint8, count=nbytes, offset=offset)
            return raw.clone().view(dtype).reshape(shape)
        flat = torch.frombuffer(self._mapping(), dtype=dtype, count=count, offset=offset)
        return flat.reshape(shape)

    def crc32c(self, offset: int, nbytes: int) -> int:
        """The CRC-32C of a byte range, read with ``pread`` rather than through the map so
        that checking a checkpoint leaves none of its pages resident in this process."""
        import google_crc32c

        fd, _ = open_regular(self.path)
        crc = 0
        try:
            end = offset + nbytes
            while offset < end:
                chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
                if not chunk:
                    raise CheckpointError(f"{self.path} shrank while it was being read")
                crc = google_crc32c.extend(crc, chunk)
                offset += len(chunk)
        finally:
            os.close(fd)
        return crc

    def release(self, offset: int, nbytes: int) -> None:
        """Drop the resident pages lying wholly inside ``[offset, offset + nbytes)``.

        Safe only for ranges no live tensor exposes to the caller: the pages are
        clean (never written), so a later access simply reads the file again.
        """
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = -(-offset // page) * page
        end = (offset + nbytes) // page * page
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
