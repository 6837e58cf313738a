"""finetune's user errors: kinds of ``gpt2load.Gpt2loadError``, so both command lines print
any of them as one line with its exit code (2 for what was asked, 1 for a run that started
and then failed). Torch-free, so the command line can catch them before loading torch."""

from __future__ import annotations

import errno
import os

from gpt2load import Gpt2loadError


class FinetuneError(Gpt2loadError):
    """Something about a training run the user can fix; the message says how."""


class ConfigError(FinetuneError, ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class DataError(FinetuneError, ValueError):
    """The data cannot be used as given (missing, empty, not text, too short)."""


class DeviceError(FinetuneError, RuntimeError):
    """No usable device as requested, or the run does not fit on it."""


class WeightsDownloadError(FinetuneError, RuntimeError):
    """``--init gpt2`` & co. could not be downloaded (no network, blocked host, bad mirror)."""


class DistributedNotSupported(FinetuneError, RuntimeError):
    """A combination several processes cannot run (MPS, fp16 with FSDP, ...)."""


class RunFolderError(FinetuneError, RuntimeError):
    """The run folder cannot be used: another process holds it, it cannot be written, or a
    file in it is not what the run expects (a folder or a link where a file belongs)."""


class SaveError(FinetuneError, RuntimeError):
    """A running training could not write its files (disk full, folder made read-only);
    what it saved before is intact, and the message says whether it can be resumed."""

    exit_code = 1


def os_reason(exc: BaseException) -> str:
    """An OS error as a short reason with its errno name ("No space left on device
    (ENOSPC)"), without the path the caller's message already names."""
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{text} ({name})" if name else text


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_DISK_ERRNOS.add(errno.EIO)
# torch.save and safetensors wrap the OS error in errors of their own: their words count too.
_DISK_MARKERS = (*map(os.strerror, _DISK_ERRNOS), "file write failed", "FileTooLarge")
_DISK_MARKERS += ("StorageFull", "ReadOnlyFilesystem", "QuotaExceeded", "PermissionDenied")


def is_disk_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the file system refusing a write."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return True
        if any(marker in str(exc) for marker in _DISK_MARKERS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
