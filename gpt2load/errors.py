"""The one error hierarchy of gpt2load (and of finetune, whose errors derive from it): each is
the user's to fix and says how, so the command lines print it as one line and exit with its
``exit_code`` (2: what was asked; 1: work that started, then failed a check). Torch-free, so a
command line can catch these before torch is loaded."""

from __future__ import annotations

import re

# The user:password part of a URL (https://user:pw@host/...).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s'\"<>]*@")


def redact(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``: every URL
    shown or stored passes through here, so credentials never reach a terminal, log or file."""
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


# What to do without a network, said once here for every command that downloads.
NO_NETWORK_ADVICE = (
    "No network? Set GPT2LOAD_MIRROR to a reachable mirror (HF_ENDPOINT for an ORG/NAME id; "
    "`gpt2load download` also takes --mirror), or fetch the files where there is a network and "
    "copy them here: weights/ (or $GPT2LOAD_WEIGHTS_DIR) for a model name, the Hugging Face "
    "cache (HF_HOME) for an ORG/NAME id, or pass their folder's local path"
)


class RetriesExhaustedError(DownloadError):
    """The host could not be reached (a name that does not resolve, a refused connection: at
    once) or kept failing (timeouts, 5xx) through every retry; the message ends with the advice."""

    def __init__(self, message: str) -> None:
        advised = NO_NETWORK_ADVICE in message  # as when unpickled
        super().__init__(message if advised else f"{message.rstrip('.')}. {NO_NETWORK_ADVICE}")


class HubAccessError(DownloadError):
    """The hub refused a repo: private or gated (a token is needed, or cannot read it), or none."""


class TokenizerError(Gpt2loadError, ValueError):
    """A tokenizer that does not fit the model, or a ``meta.pkl`` that is no vocabulary."""


class TokenizerNotFoundError(Gpt2loadError, FileNotFoundError):
    """No tokenizer files nearby, and downloading them failed."""
