"""Turn what a user typed (a path or a model name) into a local checkpoint, then a model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import canonical_name, is_model_name
from .model import GPT
from .releases import DEFAULT_SOURCE


def resolve(
    model_or_path: str | os.PathLike[str],
    source: str | None = None,
) -> Path:
    """A local file or folder for ``model_or_path``, downloading a named model on first use.

    An existing path always wins over a model name, so a folder called ``gpt2``
    in the working directory is used as it is. A finished download is reused after
    a size check only (no network, no re-hash); ``gpt2load verify`` re-hashes.
    Downloads land in ``weights/<model>/<source>/`` (root: ``$GPT2LOAD_WEIGHTS_DIR``).
    """
    path = Path(model_or_path).expanduser()
    # A TF checkpoint is often named by its prefix (".../model.ckpt"), which is no file itself.
    if path.exists() or path.with_name(path.name + ".index").is_file():
        return path
    name = str(model_or_path)
    if is_model_name(name):
        from .downloads import download

        return download(canonical_name(name), source=source or DEFAULT_SOURCE, fast=True)
    raise FileNotFoundError(
        f"{name!r} is neither an existing file or folder nor a GPT-2 model name "
        f"(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M, 355M, 774M, 1558M)"
    )


def load(
    model_or_path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    source: str | None = None,
    *,
    contiguous: bool = False,
    n_head: int | None = None,
) -> GPT:
    """Load any supported checkpoint (format auto-detected) or a model by name, in eval mode.

    ``contiguous=True`` copies weights stored transposed (Hugging Face, OpenAI) into
    ``nn.Linear``'s layout instead of keeping views of the file: for training.
    ``n_head`` is for a checkpoint that records no head count and has a width GPT-2 never
    had (a bare ``.pth``); the head count is never guessed.
    """
    from .formats import load_checkpoint

    return load_checkpoint(
        resolve(model_or_path, source=source),
        device=device,
        dtype=dtype,
        contiguous=contiguous,
        n_head=n_head,
    )
