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

# No link followed, no wait for a FIFO's reader, no fd leaked to children (0 where the
# platform lacks a flag: the lstat checks still refuse links there).
_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


class UnsafePathError(OSError):
    """A file is to be written where a symbolic link or a non-regular file (a folder, a FIFO,
    a device) is: refused, because writing there would write somewhere else, or block."""


def _refuse(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link, and gpt2load writes no file through a link (remove the link"
        raise UnsafePathError(errno.ELOOP, why + " and run again)", str(path))
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file (a folder, FIFO or device), where gpt2load must write one"
        raise UnsafePathError(errno.EEXIST, why + " (remove it and run again)", str(path))


def regular_size(path: str | os.PathLike[str]) -> int | None:
    """Size of the regular file at ``path`` (None if absent); a link or non-regular file raises."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    _refuse(Path(path), st)
    return st.st_size


def open_fd_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """``os.open`` refusing a link or non-regular file at ``path`` (``UnsafePathError``), and
    a file with other hard links: writing it would write the file elsewhere too."""
    path = Path(path)
    regular_size(path)  # a clear error for a link or a FIFO before opening anything
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link made between the check and the open
            _refuse(path, os.lstat(path))
        raise
    try:
        _refuse(path, st := os.fstat(fd))
        if st.st_nlink > 1:
            why = "has other hard links, and gpt2load writes no file that is also another one"
            raise UnsafePathError(errno.EMLINK, why + " (remove it and run again)", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` and rename it onto ``target`` on success (an
    atomic rename: readers see the old file or the new one); on any exception remove it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp's file is private (0600): give it what open() would under the user's umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
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
