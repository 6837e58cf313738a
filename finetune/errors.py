"""User errors: each is printed as one message with exit code 2, never as a traceback.

They live in a module without heavy imports so the command line can catch
them without loading torch for commands that do not train.
"""

from __future__ import annotations


class FinetuneError(Exception):
    """Something the user can fix; the message says how."""


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
