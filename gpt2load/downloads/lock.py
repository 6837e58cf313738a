"""An exclusive lock on a file: two downloads into one folder take turns, two finetune runs in
one folder do not both run. The system drops it however its holder exits, so a crash leaves no
stale lock; the holder removes the file before letting go (not on Windows), so a newcomer
checks that the file it locked is still the one at the path."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import Gpt2loadError
from ..fileio import open_fd_nofollow

_REMOVABLE_WHILE_OPEN = sys.platform != "win32"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    _BUSY: type[OSError] = OSError

    def _lock(fd: int, release: bool = False) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK if release else msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    _BUSY = BlockingIOError

    def _lock(fd: int, release: bool = False) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN if release else fcntl.LOCK_EX | fcntl.LOCK_NB)


class LockHeld(Gpt2loadError):
    """Another process holds the lock (``wait=False``); ``details`` is what it wrote there."""

    def __init__(self, path: Path, details: str) -> None:
        super().__init__(f"{path} is locked by another process")
        self.path, self.details = path, details

    def __reduce__(self) -> tuple:  # pickled (multiprocessing) as it was made
        return type(self), (self.path, self.details)


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike[str],
    on_wait: Callable[[str], None] | None = None,
    poll_seconds: float = 0.1,
    *,
    wait: bool = True,
) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created if missing), telling ``on_wait`` once if
    another holds it, or with ``wait=False`` raising :class:`LockHeld` at once. Yields the
    file's descriptor, for the holder to write its details in. A link there (symbolic or
    hard) is refused (``UnsafePathError``), never followed."""
    path = Path(path)
    told = False
    while True:
        # Each try: a holder that failed may have removed the (empty) folder on its way out.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_fd_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    _lock(fd)
                    break
                except _BUSY:
                    if not wait:
                        raise LockHeld(path, _read(fd)) from None
                    if on_wait is not None and not told:
                        on_wait(f"waiting for another download holding {path} to finish")
                        told = True
                    time.sleep(poll_seconds)
            if _REMOVABLE_WHILE_OPEN and not _is_current(fd, path):
                # The holder before us removed this file: lock the current one.
                _lock(fd, release=True)
                continue
            try:
                yield fd
            finally:
                if _REMOVABLE_WHILE_OPEN:
                    with contextlib.suppress(OSError):
                        path.unlink()
                _lock(fd, release=True)
            return
        finally:
            os.close(fd)


def _read(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096).decode("utf-8")
    return ""


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False
