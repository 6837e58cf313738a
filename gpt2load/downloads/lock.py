"""An exclusive lock on a file, so two downloads into one folder take turns.

The operating system drops the lock when its holder exits, however it exits, so a
crashed download never leaves a stale lock behind. On POSIX the holder also removes
the lock file before it lets go, so lock files do not pile up beside finished
downloads: a waiter that then gets the lock notices that its file is no longer the
one at the path (removed, or replaced by a newcomer's) and starts over on the
current one, so two processes never believe they hold "the" lock at once. Only a
process killed while holding the lock leaves its (empty, unlocked, harmless) file.
On Windows an open file cannot be removed, so the file stays there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..fileio import open_fd_nofollow

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike[str],
    on_wait: Callable[[str], None] | None = None,
    poll_seconds: float = 0.1,
) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting for any other holder.

    ``on_wait`` is told once, with a message, when the lock is busy. A symbolic link (or
    anything but a regular file) at ``path`` is refused with ``UnsafePathError``: following
    it would create or lock a file outside the folder.
    """
    path = Path(path)
    told = False
    while True:
        # Each try: a holder that failed may have removed the (empty) folder on its way out.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_fd_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                if on_wait is not None and not told:
                    on_wait(f"waiting for another download holding {path} to finish")
                    told = True
                while not _try_lock(fd):
                    time.sleep(poll_seconds)
            if not _is_current(fd, path):
                _unlock(fd)  # the holder before us removed this file: lock the current one
                continue
            try:
                yield path
            finally:
                if _REMOVABLE_WHILE_OPEN:
                    with contextlib.suppress(OSError):
                        path.unlink()
                _unlock(fd)
            return
        finally:
            os.close(fd)


_REMOVABLE_WHILE_OPEN = sys.platform != "win32"


def _is_current(fd: int, path: Path) -> bool:
    """Whether the locked descriptor is still the file at ``path``."""
    if not _REMOVABLE_WHILE_OPEN:
        return True
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
