"""One process at a time in a run folder: an ``flock`` on ``RUN/.finetune.lock``.

Two runs writing one folder would interleave ``metrics.jsonl`` and overwrite each other's
checkpoints, so the second is refused at once, told who holds the folder (pid, host, start
time, written into the lock file). The OS drops an ``flock`` however its holder exits, so a
killed run never leaves the folder locked. The lock file is opened with ``O_NOFOLLOW``: a
link planted at its name is refused, never followed to write a file elsewhere.
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

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int, unlock: bool = False) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK if unlock else msvcrt.LK_NBLCK, 1)

else:
    import fcntl

    def _lock(fd: int, unlock: bool = False) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN if unlock else fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def _open(path: Path, out: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
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
    On the way out the lock file is removed and then released, and the folders this call
    created too if nothing was put in them (a refused run leaves no empty folder behind)."""
    out = Path(run_dir).expanduser()
    created = [p for p in (out, *out.parents) if not os.path.lexists(p)]  # deepest first
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
            try:
                _lock(fd)
            except OSError:  # held: BlockingIOError, or PermissionError on Windows
                raise RunFolderError(
                    f"{out} is in use by another finetune run ({_holder(fd)}); a run folder "
                    f"belongs to one process at a time. Wait for it to finish, stop it, or "
                    f"pick another --out"
                ) from None
            if not _is_current(fd, path):
                continue  # its holder removed this file as we locked it: lock the one there now
            _write_holder(fd, path, out)
            try:
                yield path
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()
                _lock(fd, unlock=True)
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
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
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
