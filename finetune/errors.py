"""User errors: each is printed as one message, never as a traceback.

They live in a module without heavy imports so the command line can catch
them without loading torch for commands that do not train. The exit code is the
class's: 2 for what the user asked (a flag, a file given), 1 for a run that
started and then failed a check or could not write (disk full mid-run).
"""

from __future__ import annotations

import errno
import os


class FinetuneError(Exception):
    """Something the user can fix; the message says how."""

    exit_code = 2


class ConfigError(FinetuneError, ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class DataError(FinetuneError, ValueError):
    """The data cannot be used as given (missing, empty, not text, too short)."""


class CheckpointError(FinetuneError, ValueError):
    """A checkpoint is missing, unreadable or belongs to another model."""


class DeviceError(FinetuneError, RuntimeError):
    """No usable device as requested, or the run does not fit on it."""


class WeightsDownloadError(FinetuneError, RuntimeError):
    """``--init gpt2`` & co. could not be downloaded (no network, blocked host, bad mirror)."""


class DistributedNotSupported(FinetuneError, RuntimeError):
    """Started under torchrun with several processes, which this version does not run."""


class RunFolderError(FinetuneError, RuntimeError):
    """The run folder cannot be used: another process holds it, it cannot be written, or a
    file in it is not what the run expects (a folder or a link where a file belongs)."""


class SaveError(FinetuneError, RuntimeError):
    """A running training could not write its files (disk full, folder made read-only).

    Exit code 1, as for a diverged run: the command was fine, the run failed; what it
    had saved before is intact and the message says whether it can be resumed."""

    exit_code = 1


def os_reason(exc: BaseException) -> str:
    """An OS error as a short reason with its errno name ("No space left on device
    (ENOSPC)"), without the path that the caller's message already names."""
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{text} ({name})" if name else text


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the file system refusing a write: full, over a
    size limit, read-only, not permitted. torch.save and safetensors wrap the OS error in a
    RuntimeError of their own, so their messages are looked at too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return True
        text = str(exc)
        if any(marker in text for marker in _DISK_MARKERS):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


_DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EDQUOT,
    errno.EIO,
}
_DISK_MARKERS = tuple(os.strerror(code) for code in _DISK_ERRNOS) + (
    "file write failed",  # torch's PytorchStreamWriter
    "FileTooLarge",  # safetensors' Rust io::ErrorKind names
    "StorageFull",
    "ReadOnlyFilesystem",
    "QuotaExceeded",
    "PermissionDenied",
)
