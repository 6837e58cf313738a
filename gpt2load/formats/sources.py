"""What every container reader offers the loader: names, shapes and lazily read tensors.

A reader describes each stored tensor (name, shape, dtype, file) from headers
alone, so detection, ``info`` and shape checks never read weight data. Data is
handed out as views of a memory map where the container allows it.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .errors import CheckpointError


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
        self.size = self.path.stat().st_size

    def _mapping(self) -> mmap.mmap:
        if self._map is None:
            with open(self.path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._map

    def check_range(self, name: str, offset: int, nbytes: int) -> None:
        """Refuse a tensor that lies past the end of the file (touching it would crash)."""
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
