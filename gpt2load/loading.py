"""Turn what a user typed (a path or a model name) into a local checkpoint, then a model: the
one place where "a name or a path" becomes a folder (every command and finetune use it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from . import hub
from .config import canonical_name, is_model_name
from .errors import DownloadError
from .model import GPT
from .native import NATIVE_FILENAME
from .releases import DEFAULT_SOURCE, SOURCES, check_source, hub_repo

# The sub-folders a training run keeps its checkpoints in, in the order a run folder is read.
RUN_CHECKPOINTS = ("best", "last")


def resolve(
    model_or_path: str | os.PathLike[str],
    source: str | None = None,
    *,
    download: bool = True,
    quiet: bool = False,
) -> Path:
    """A local file or folder for ``model_or_path``: an existing path (a training run's folder
    means its ``best/`` checkpoint, else ``last/``), else a published name's ``weights/`` folder,
    the HF cache's copy or a download into ``weights/`` (a finished one is reused after a size
    check only; with ``download=False`` it must exist), else a hub repo id (``ORG/NAME``)."""
    path = Path(model_or_path).expanduser()
    # A TF checkpoint is often named by its prefix (".../model.ckpt"), which is no file itself.
    if path.exists() or path.with_name(path.name + ".index").is_file():
        if not path.is_dir() or any(p.is_file() for p in path.glob("*.safetensors")):
            return path  # weights themselves, not a training run's folder
        runs = (path / r for r in RUN_CHECKPOINTS)
        run = next((r for r in runs if (r / NATIVE_FILENAME).is_file()), None)
        if run is not None and run.name != "best" and not quiet:
            print(f"note: {path} has no best/ checkpoint; using {run}", file=sys.stderr)
        return run or path
    name = str(model_or_path)
    if not is_model_name(name):
        if hub.is_repo_id(name):
            try:
                return hub.snapshot(name, download=download, quiet=quiet)
            except (FileNotFoundError, DownloadError) as exc:
                if not path.parent.is_dir():
                    raise
                # "runs/ckpt.pt" mistyped reads as a repo id too: say what was meant first.
                local = f"{name} is no local file ({path.parent}/ has no {path.name})"
                raise type(exc)(f"{local}, and as a Hugging Face repo id: {exc}") from None
        raise FileNotFoundError(
            f"{name!r} is neither an existing file or folder nor a GPT-2 model name "
            f"(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M, 355M, 774M, 1558M) nor a "
            f"Hugging Face repo id (ORG/NAME)"
        )
    model = canonical_name(name)
    # A download fills the default source's folder: only that one may stand in for it.
    sources = [check_source(source)] if source else [DEFAULT_SOURCE] if download else list(SOURCES)
    from . import downloads

    folders = [downloads.default_dir(model, s) for s in sources]
    # An empty folder is a failed download, and so is an hf one without its weights.
    finished = (f for f in folders if f.is_dir() and any(f.iterdir()))
    local = next((f for f in finished if f.name != "hf" or (f / NATIVE_FILENAME).is_file()), None)
    # With no weights/ folder, the copy transformers put in the HF cache, used offline.
    if local is None and "hf" in sources and (cached := hub.cached_snapshot(hub_repo(model))):
        return cached
    if download:
        return downloads.download(model, source=source or DEFAULT_SOURCE, fast=True)
    if local is not None:
        return local.resolve()
    looked = ", ".join(str(f) for f in folders)
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
    """Load any supported checkpoint (format auto-detected), a model name or a hub id, in eval
    mode. ``contiguous=True`` copies weights stored transposed into ``nn.Linear``'s layout (for
    training); ``n_head`` is for a checkpoint that records none and a width GPT-2 never had."""
    from .formats import load_checkpoint

    path = resolve(model_or_path, source=source)
    return load_checkpoint(path, device=device, dtype=dtype, contiguous=contiguous, n_head=n_head)
