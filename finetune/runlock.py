"""One process at a time in a run folder: ``gpt2load.exclusive_lock`` on ``RUN/.finetune.lock``.

Two runs writing one folder would interleave ``metrics.jsonl`` and overwrite each other's
checkpoints, so the second is refused at once, told who holds the folder (pid, host, start
time, written into the lock file). A killed run never leaves the folder locked, and a link
planted at the lock file's name is refused, never followed to write a file elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from gpt2load import LockHeld, exclusive_lock

from .errors import RunFolderError, os_reason

LOCK_FILE = ".finetune.lock"
# What gpt2load's lock refuses to write through, by the errno it says it with.
_NOT_A_PLAIN_FILE = {
    errno.EEXIST: "is not a regular file (a folder, FIFO or device)",
    errno.EMLINK: "has other hard links (writing it would write another file too)",
}


def _holder(details: str) -> str:
    try:
        info = json.loads(details)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not written its details yet"


def _remove_empty(created: list[Path]) -> None:
    for folder in created:  # deepest first
        try:
            folder.rmdir()  # only succeeds when the run wrote nothing there
        except OSError:
            break


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
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_empty, created)  # last: after the lock file is gone
        try:
            fd = stack.enter_context(exclusive_lock(path, wait=False))
        except LockHeld as held:
            raise RunFolderError(
                f"{out} is in use by another finetune run ({_holder(held.details)}); a run "
                f"folder belongs to one process at a time. Wait for it to finish, stop it, or "
                f"pick another --out"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunFolderError(
                    f"{path} is a symbolic link; a run folder's lock file must be a plain file. "
                    f"Remove the link (rm {path}) and try again"
                ) from None
            if what := _NOT_A_PLAIN_FILE.get(exc.errno):
                raise RunFolderError(
                    f"{path} {what}; a run folder's lock file must be a plain file of its own. "
                    f"Remove it and try again"
                ) from None
            raise RunFolderError(
                f"cannot write in the run folder {out}: {os_reason(exc)}. Make it writable or "
                f"pick another --out"
            ) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as exc:
            raise RunFolderError(
                f"cannot write in the run folder {out} ({path}): {os_reason(exc)}. Free space "
                f"or pick another --out"
            ) from None
        yield path
