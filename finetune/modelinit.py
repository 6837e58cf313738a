"""The model a run starts from: a published size, a fresh small model, or a checkpoint."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gpt2load.config import VOCAB_SIZE, GPTConfig, canonical_name, is_model_name, preset
from gpt2load.model import GPT, MultiHeadAttention
from gpt2load.native import NATIVE_FILENAME, NATIVE_FORMAT

from .checkpoint import (
    BEST,
    LAST,
    CheckpointError,
    describe_shape,
    load_model_weights,
    same_shape,
)
from .config import SCRATCH_SHAPE, TrainConfig
from .errors import WeightsDownloadError

Log = Callable[[str], None]
SHAPE_FLAGS = {"n_layer": "--n-layer", "n_head": "--n-head", "n_embd": "--n-embd"}


def scratch_config(cfg: TrainConfig, vocab_size: int = VOCAB_SIZE) -> GPTConfig:
    shape = {
        k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in SCRATCH_SHAPE.items()
    }
    return GPTConfig(
        **shape,
        context_length=cfg.block_size,
        vocab_size=vocab_size,
        dropout=cfg.dropout or 0.0,
    )


def init_path(init: str) -> Path | None:
    """The checkpoint ``--init`` points at; a run folder means its ``best`` (else ``last``)."""
    path = Path(init).expanduser()
    if not path.exists():
        return None
    if path.is_dir() and not (path / NATIVE_FILENAME).exists():
        for name in (BEST, LAST):
            if (path / name / NATIVE_FILENAME).is_file():
                return path / name
    return path


def _native_file(path: Path) -> Path | None:
    file = path / NATIVE_FILENAME if path.is_dir() else path
    if file.suffix != ".safetensors" or not file.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:
        return None
    return file if meta.get("format") == NATIVE_FORMAT and "config" in meta else None


def planned_config(cfg: TrainConfig, vocab_size: int | None = VOCAB_SIZE) -> GPTConfig | None:
    """The model's shape before anything is downloaded or loaded (a named model's is its
    preset; a checkpoint's is read from its headers), so bad settings fail first. None for a
    pre-1.6 PyTorch pickle, which has no headers to read, and for a new model whose
    vocabulary is the text's characters (``vocab_size`` None): checked once built."""
    if cfg.is_scratch:
        return scratch_config(cfg, vocab_size) if vocab_size is not None else None
    path = init_path(cfg.init)
    if path is None:
        if is_model_name(cfg.init):
            return preset(cfg.init)
        raise _no_such_init(cfg.init)
    if (native := _native_file(path)) is not None:
        from .checkpoint import read_model_config

        return read_model_config(native.parent)
    if _legacy_pickles_only(path):
        return None  # torch.load would read it whole; sized up once loaded instead
    from gpt2load.formats.checkpoint import open_checkpoint

    try:  # headers and names only: no tensor is read
        return open_checkpoint(path, n_head=cfg.n_head).plan.config
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc


_PICKLE_SUFFIXES = (".pth", ".pt", ".bin")


def _legacy_pickles_only(path: Path) -> bool:
    """Whether the weights at ``path`` are PyTorch pickles in the pre-zip format (no mmap):
    reading their shapes means reading them whole, which planning must not do."""
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    if any(f.suffix == ".safetensors" for f in files):
        return False
    pickles = [f for f in files if f.suffix in _PICKLE_SUFFIXES]
    return bool(pickles) and not all(zipfile.is_zipfile(f) for f in pickles)


def _no_such_init(init: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"--init {init!r} is neither scratch, a GPT-2 name (gpt2, gpt2-medium, "
        f"gpt2-large, gpt2-xl) nor an existing checkpoint"
    )


def check_shape_flags(cfg: TrainConfig, config: GPTConfig, source: str) -> None:
    """``--n-layer`` & co. with trained weights must agree with them: sizes cannot be changed."""
    wrong = [
        f"{flag} {getattr(cfg, key)} (the checkpoint has {getattr(config, key)})"
        for key, flag in SHAPE_FLAGS.items()
        if getattr(cfg, key) is not None and getattr(cfg, key) != getattr(config, key)
    ]
    if wrong:
        raise CheckpointError(
            f"--init {source} is a model of another size ({describe_shape(config)}): "
            f"{', '.join(wrong)}. Drop those flags to fine-tune it as it is, or use --init scratch "
            f"to train a new model of that size"
        )


def download_failed(init: str, exc: BaseException) -> WeightsDownloadError:
    """The one-line message for weights that could not be downloaded, with the ways round."""
    name = canonical_name(init)
    reason = " ".join(str(exc).split()).rstrip(".")
    return WeightsDownloadError(
        f"could not download --init {init}: {reason}. Set GPT2LOAD_MIRROR to a reachable "
        f"mirror (https://host) and try again; offline, run `gpt2load download {name}` on a "
        f"machine with a network and copy its weights/{name}/ folder here (or point "
        f"$GPT2LOAD_WEIGHTS_DIR at it), or pass --init with a local checkpoint "
        f"(--init scratch needs no download)"
    )


def check_named_size(name: str, config: GPTConfig) -> None:
    """Weights fetched for a GPT-2 name must be that size: a mirror or a hand-copied folder can
    hold another model, and the published checksums do not cover every file of every host."""
    expected = preset(name)
    if not same_shape(config, expected):
        from gpt2load.downloads.fetch import weights_root

        folder = weights_root() / canonical_name(name)
        raise CheckpointError(
            f"--init {name}: the weights found for it ({describe_shape(config)}) are not "
            f"{canonical_name(name)} ({describe_shape(expected)}). Delete {folder} and let it "
            f"download again, or pass the folder holding them as --init to train them as they are"
        )


def check_planned(cfg: TrainConfig, config: GPTConfig | None) -> None:
    """What can be refused from the planned shape alone, before data or weights are fetched:
    shape flags that disagree with trained weights, a context longer than the model's."""
    if config is None:
        return
    if not cfg.is_scratch:
        check_shape_flags(cfg, config, cfg.init)
    check_block_size(cfg, config)


def check_block_size(cfg: TrainConfig, config: GPTConfig) -> None:
    if cfg.block_size > config.context_length:
        raise CheckpointError(
            f"--block-size {cfg.block_size} is longer than the model's context of "
            f"{config.context_length} tokens (--init {cfg.init}); lower --block-size to "
            f"{config.context_length} or less"
        )


def set_dropout(model: GPT, p: float) -> None:
    """Change the dropout of a built model (the config is frozen, so it is replaced)."""
    model.config = model.config.replace(dropout=p)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, MultiHeadAttention):
            module.dropout = p


def init_model(cfg: TrainConfig, log: Log = print, vocab_size: int = VOCAB_SIZE) -> GPT:
    """Build the starting model on the CPU in float32 (the optimizer's master weights);
    ``vocab_size`` is a new model's (GPT-2's, or its character vocabulary's)."""
    if cfg.is_scratch:
        config = scratch_config(cfg, vocab_size)
        torch.manual_seed(cfg.seed)
        model = GPT(config)
        log(f"model: new {describe_shape(config)}, {model.num_parameters():,} parameters")
    else:
        path = init_path(cfg.init)
        if path is None and not is_model_name(cfg.init):
            raise _no_such_init(cfg.init)
        native = _native_file(path) if path is not None else None
        if native is not None:
            from .checkpoint import read_model_config

            config = read_model_config(native.parent)
            check_shape_flags(cfg, config, cfg.init)
            model = GPT(config)
            load_model_weights(model, native.parent)
        else:
            import gpt2load
            from gpt2load.downloads import DownloadError

            target = os.fspath(path) if path is not None else canonical_name(cfg.init)
            try:
                model = gpt2load.load(
                    target, device="cpu", dtype=torch.float32, contiguous=True, n_head=cfg.n_head
                )
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc
            except DownloadError as exc:
                raise download_failed(cfg.init, exc) from exc
            if path is None:
                check_named_size(cfg.init, model.config)
            check_shape_flags(cfg, model.config, cfg.init)
        log(
            f"model: {cfg.init} ({describe_shape(model.config)}), "
            f"{model.num_parameters():,} parameters"
        )
    if cfg.dropout is not None and cfg.dropout != model.config.dropout:
        set_dropout(model, cfg.dropout)
    check_block_size(cfg, model.config)
    return model.float().train()
