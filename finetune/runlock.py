"""One process at a time in a run folder: an ``flock`` on ``RUN/.finetune.lock``.

Two runs writing one folder would interleave ``metrics.jsonl`` and overwrite each
other's checkpoints, so the second one is refused at once, told who holds the
folder (pid, host, start time, written into the lock file by its holder). The
operating system drops an ``flock`` when its holder exits however it exits, so a
crashed or SIGKILLed run never leaves the folder locked: its lock file stays, with
the dead holder's details, and the next run simply locks it again.

The lock file is opened with ``O_NOFOLLOW``: a link planted at its name is
refused, never followed to write a file elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import RunFolderError, os_reason

LOCK_FILE = ".finetune.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

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


def _holder(fd: int) -> str:
    """Who wrote the lock file, as the refusal names them."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def _open(path: Path, out: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunFolderError(
                f"{path} is a symbolic link; a run folder's lock file must be a plain file. "
                f"Remove the link (rm {path}) and try again"
            ) from None
        raise RunFolderError(
            f"cannot write in the run folder {out}: {os_reason(exc)}. Make it writable or pick "
            f"another --out"
        ) from None


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir`` for this process (creating the folder if needed) or refuse at once.

    On the way out the lock file is removed and then released, and the folder too if
    this call created it and nothing else was put in it (a run refused before it wrote
    anything leaves no empty folder behind).
    """
    out = Path(run_dir).expanduser()
    # The folders this call creates (deepest first), removed again if the run wrote nothing.
    created = [p for p in (out, *out.parents) if not os.path.lexists(p)]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"--out {out} is a file, not a folder; pick another --out") from None
    except OSError as exc:
        raise RunFolderError(
            f"cannot create the run folder {out}: {os_reason(exc)}. Pick another --out"
        ) from None
    path = out / LOCK_FILE
    while True:
        fd = _open(path, out)
        try:
            if not _try_lock(fd):
                raise RunFolderError(
                    f"{out} is in use by another finetune run ({_holder(fd)}); a run folder "
                    f"belongs to one process at a time. Wait for it to finish, stop it, or "
                    f"pick another --out"
                )
            if not _is_current(fd, path):
                continue  # its holder removed this file as we locked it: lock the one there now
            _write_holder(fd, path, out)
            try:
                yield path
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()
                _unlock(fd)
                for folder in created:
                    try:
                        folder.rmdir()  # only succeeds when the run wrote nothing there
                    except OSError:
                        break
            return
        finally:
            os.close(fd)


def _write_holder(fd: int, path: Path, out: Path) -> None:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    data = (json.dumps(info) + "\n").encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:
        raise RunFolderError(
            f"cannot write in the run folder {out} ({path}): {os_reason(exc)}. Free space or "
            f"pick another --out"
        ) from None


def _is_current(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
