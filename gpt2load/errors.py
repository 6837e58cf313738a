"""The one error hierarchy of gpt2load (and of finetune, whose errors derive from it).

Every error here is the user's to fix and its message says how, so both command lines
print it as one line, never a traceback, and exit with its ``exit_code``: 2 for what was
asked (a flag, a file given), 1 for work that started and then failed a check. The module
imports nothing heavy, so a command line can catch these before torch is loaded.
"""

from __future__ import annotations

import re

# The user:password part of a URL (https://user:pw@host/...).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s'\"<>]*@")


def redact(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``.

    Credentials in a URL (a manifest's, a mirror's, ``$GPT2LOAD_MIRROR``'s) are still sent
    to the host, but never reach a terminal, a log or ``manifest.json``: every URL that is
    shown or stored passes through here (a whole message may be passed).
    """
    return _USERINFO.sub(r"\1***@", text)


class Gpt2loadError(Exception):
    """Something the user can fix; the message names the file, tensor or flag and says how."""

    exit_code = 2


class CheckpointError(Gpt2loadError, ValueError):
    """A file or folder that cannot be read as a GPT-2 checkpoint (or as the one a run needs)."""


class DownloadError(Gpt2loadError, RuntimeError):
    """A download failed; the message names the file and the URL (credentials redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(str(message)))  # every download message names a URL


class ChecksumError(DownloadError):
    """The bytes received are not the expected ones; they were deleted."""


class RetriesExhaustedError(DownloadError):
    """The host kept failing (unreachable, timeouts, 5xx) through every retry."""


class TokenizerError(Gpt2loadError, ValueError):
    """A tokenizer that does not fit the model, a ``meta.pkl`` that is no vocabulary, or text
    a character vocabulary cannot spell."""


class TokenizerNotFoundError(Gpt2loadError, FileNotFoundError):
    """No tokenizer files nearby, and downloading them failed."""
