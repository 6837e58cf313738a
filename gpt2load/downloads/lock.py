"""An exclusive lock on a file, so two downloads into one folder take turns.

The operating system drops the lock when its holder exits, however it exits, so a
crashed download never leaves a stale lock behind. The lock file itself stays:
removing it would let a waiter and a newcomer lock two different files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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

    ``on_wait`` is told once, with a message, when the lock is busy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            if on_wait is not None:
                on_wait(f"waiting for another download holding {path} to finish")
            while not _try_lock(fd):
                time.sleep(poll_seconds)
        try:
            yield path
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
