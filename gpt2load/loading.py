"""Turn what a user typed (a path or a model name) into a local checkpoint, then a model.

This is the one place where "a name or a path" becomes a folder: every command, verify
and finetune's ``--init`` go through :func:`resolve`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .config import canonical_name, is_model_name
from .model import GPT
from .releases import DEFAULT_SOURCE, SOURCES, check_source

# Sub-folders a training run keeps its checkpoints in, in the order a run folder is read.
RUN_CHECKPOINTS = ("best", "last")
NATIVE_FILE = "model.safetensors"


def run_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a training run's folder stands for: its ``best/``, else ``last/``;
    None when ``folder`` is no run folder (it holds weights itself, or no such sub-folder)."""
    if not folder.is_dir() or any(p.is_file() for p in folder.glob("*.safetensors")):
        return None
    for name in RUN_CHECKPOINTS:
        if (folder / name / NATIVE_FILE).is_file():
            return folder / name
    return None


def resolve(
    model_or_path: str | os.PathLike[str],
    source: str | None = None,
    *,
    download: bool = True,
    quiet: bool = False,
) -> Path:
    """A local file or folder for ``model_or_path``, downloading a named model on first use.

    An existing path always wins over a model name, so a folder called ``gpt2`` in the
    working directory is used as it is; a training run's folder means its ``best/``
    checkpoint (else ``last/``, said on stderr unless ``quiet``). A finished download is
    reused after a size check only (no network, no re-hash); ``gpt2load verify`` re-hashes.
    Downloads land in ``weights/<model>/<source>/`` (root: ``$GPT2LOAD_WEIGHTS_DIR``). With
    ``download=False`` a name means the first non-empty download folder (of ``source``, else
    of every source in turn) and a missing one is a ``FileNotFoundError``.
    """
    path = Path(model_or_path).expanduser()
    # A TF checkpoint is often named by its prefix (".../model.ckpt"), which is no file itself.
    if path.exists() or path.with_name(path.name + ".index").is_file():
        run = run_checkpoint(path)
        if run is None:
            return path
        if run.name != RUN_CHECKPOINTS[0] and not quiet:
            print(
                f"note: {path} has no {RUN_CHECKPOINTS[0]}/ checkpoint; using {run}",
                file=sys.stderr,
            )
        return run
    name = str(model_or_path)
    if not is_model_name(name):
        raise FileNotFoundError(
            f"{name!r} is neither an existing file or folder nor a GPT-2 model name "
            f"(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M, 355M, 774M, 1558M)"
        )
    model = canonical_name(name)
    if download:
        from .downloads import download as fetch

        return fetch(model, source=source or DEFAULT_SOURCE, fast=True)
    from .downloads import default_dir

    sources = [check_source(source)] if source else list(SOURCES)
    for src in sources:
        folder = default_dir(model, src)
        if folder.is_dir() and any(folder.iterdir()):  # an empty one is a failed download
            return folder.resolve()
    looked = ", ".join(str(default_dir(model, s)) for s in sources)
    raise FileNotFoundError(
        f"no download of {model} found (looked in {looked}); run `gpt2load download {model}` first"
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
