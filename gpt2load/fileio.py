"""Writing files so that a crash never leaves half a file where a whole one is expected,
and so that a symbolic link planted where a file will be written is refused, never followed."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# 0 where the platform lacks them: the lstat checks below still refuse links there.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a reader
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePathError(OSError):
    """A file is to be written where a symbolic link or a non-regular file (a folder, a FIFO,
    a device) is: refused, because writing there would write somewhere else, or block."""


def _refuse(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            errno.ELOOP,
            "is a symbolic link, and gpt2load writes no file through a link (remove the link "
            "and run again)",
            str(path),
        )
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(
            errno.EEXIST,
            "is not a regular file (a folder, FIFO or device), where gpt2load must write one "
            "(remove it and run again)",
            str(path),
        )


def regular_size(path: str | os.PathLike[str]) -> int | None:
    """The size of the regular file at ``path`` without following a link; None if nothing is
    there. A link or a non-regular file raises ``UnsafePathError``."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    _refuse(path, st)
    return st.st_size


def open_fd_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link (``O_NOFOLLOW``) or a non-regular file at
    ``path`` with ``UnsafePathError``, so nothing is written outside the folder meant."""
    path = Path(path)
    regular_size(path)  # a clear error for a link or a FIFO before opening anything
    try:
        fd = os.open(path, flags | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link made between the check and the open
            _refuse(path, os.lstat(path))
        raise
    try:
        _refuse(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_nofollow_for_writing(path: str | os.PathLike[str], *, append: bool) -> BinaryIO:
    """A binary file object writing to ``path`` (created if missing; appended to, or emptied
    first), refusing a link or non-regular file there (see ``open_fd_nofollow``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = open_fd_nofollow(path, flags)
    return os.fdopen(fd, "ab" if append else "wb")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The temporary file lives in the same folder so the final ``os.replace`` is a
    rename on one file system, which is atomic: readers see the old file or the
    new one, never a mix. On any exception the temporary file is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give the result the permissions an
        # ordinary open() would have had under the user's umask.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))
