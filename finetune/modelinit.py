"""The model a run starts from: a published size, a fresh model, or any checkpoint.

Its shape is planned from headers before anything is downloaded or prepared (a named
model's is its preset), so settings that cannot fit it fail in seconds.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

import gpt2load
from gpt2load import GPT, VOCAB_SIZE, CheckpointError, GPTConfig

from .config import SCRATCH_SHAPE, TrainConfig
from .errors import WeightsDownloadError

Log = Callable[[str], None]
SHAPE_FLAGS = {"n_layer": "--n-layer", "n_head": "--n-head", "n_embd": "--n-embd"}


def describe_shape(config: GPTConfig) -> str:
    return (
        f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
        f"context={config.context_length}, vocab={config.vocab_size}"
    )


def scratch_config(cfg: TrainConfig, vocab_size: int = VOCAB_SIZE) -> GPTConfig:
    shape = {k: getattr(cfg, k) or v for k, v in SCRATCH_SHAPE.items()}
    return GPTConfig(
        **shape, context_length=cfg.block_size, vocab_size=vocab_size, dropout=cfg.dropout or 0.0
    )


def init_path(init: str) -> Path | None:
    """The local checkpoint ``--init`` names (a run folder means its ``best``, else ``last``);
    None for a model name that is not a path."""
    if not Path(init).expanduser().exists():
        return None
    return gpt2load.resolve(init, download=False)


def _legacy_pickles_only(path: Path) -> bool:
    """Whether the weights at ``path`` are pre-zip PyTorch pickles (no mmap): reading their
    shapes means reading them whole, which planning must not do."""
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    if any(f.suffix == ".safetensors" for f in files):
        return False
    pickles = [f for f in files if f.suffix in (".pth", ".pt", ".bin")]
    return bool(pickles) and not all(zipfile.is_zipfile(f) for f in pickles)


def _no_such_init(init: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"--init {init!r} is neither scratch, a GPT-2 name (gpt2, gpt2-medium, "
        f"gpt2-large, gpt2-xl) nor an existing checkpoint"
    )


def planned_config(cfg: TrainConfig, vocab_size: int | None = VOCAB_SIZE) -> GPTConfig | None:
    """The model's shape from headers alone. None for a pre-zip pickle (no headers) and for a
    new model whose vocabulary is the text's characters (``vocab_size`` None): both are
    checked once built."""
    if cfg.is_scratch:
        return scratch_config(cfg, vocab_size) if vocab_size is not None else None
    path = init_path(cfg.init)
    if path is None:
        if gpt2load.is_model_name(cfg.init):
            return gpt2load.preset(cfg.init)
        raise _no_such_init(cfg.init)
    if _legacy_pickles_only(path):
        return None
    try:
        return gpt2load.inspect(path, n_head=cfg.n_head).config
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc


def check_shape_flags(cfg: TrainConfig, config: GPTConfig) -> None:
    """``--n-layer`` & co. with trained weights must agree with them: sizes cannot change."""
    wrong = [
        f"{flag} {getattr(cfg, key)} (the checkpoint has {getattr(config, key)})"
        for key, flag in SHAPE_FLAGS.items()
        if getattr(cfg, key) is not None and getattr(cfg, key) != getattr(config, key)
    ]
    if wrong:
        raise CheckpointError(
            f"--init {cfg.init} is a model of another size ({describe_shape(config)}): "
            f"{', '.join(wrong)}. Drop those flags to fine-tune it as it is, or use --init scratch "
            f"to train a new model of that size"
        )


def check_block_size(cfg: TrainConfig, config: GPTConfig) -> None:
    if cfg.block_size > config.context_length:
        raise CheckpointError(
            f"--block-size {cfg.block_size} is longer than the model's context of "
            f"{config.context_length} tokens (--init {cfg.init}); lower --block-size to "
            f"{config.context_length} or less"
        )


def check_planned(cfg: TrainConfig, config: GPTConfig | None) -> None:
    """What the planned shape alone refuses, before data or weights are fetched."""
    if config is not None:
        if not cfg.is_scratch:
            check_shape_flags(cfg, config)
        check_block_size(cfg, config)


def download_failed(init: str, exc: BaseException) -> WeightsDownloadError:
    """The one-line message for weights that could not be downloaded, with the ways round."""
    name, reason = gpt2load.canonical_name(init), " ".join(str(exc).split()).rstrip(".")
    return WeightsDownloadError(
        f"could not download --init {init}: {reason}. Set GPT2LOAD_MIRROR to a reachable "
        f"mirror (https://host) and try again; offline, run `gpt2load download {name}` on a "
        f"machine with a network and copy its weights/{name}/ folder here (or point "
        f"$GPT2LOAD_WEIGHTS_DIR at it), or pass --init with a local checkpoint "
        f"(--init scratch needs no download)"
    )


def check_named_size(name: str, config: GPTConfig) -> None:
    """Weights fetched for a GPT-2 name must be that size: a mirror or a copied folder can
    hold another model, and the published checksums do not cover every file of every host."""
    expected = gpt2load.preset(name)
    if config.shape_differences(expected):
        folder = gpt2load.weights_root() / gpt2load.canonical_name(name)
        raise CheckpointError(
            f"--init {name}: the weights found for it ({describe_shape(config)}) are not "
            f"{gpt2load.canonical_name(name)} ({describe_shape(expected)}). Delete {folder} and "
            f"let it download again, or pass the folder holding them as --init to train them "
            f"as they are"
        )


def init_model(cfg: TrainConfig, log: Log = print, vocab_size: int = VOCAB_SIZE) -> GPT:
    """The starting model on the CPU in float32 (the optimizer's master weights), in
    training mode; ``vocab_size`` is a new model's (GPT-2's, or its characters')."""
    if cfg.is_scratch:
        config = scratch_config(cfg, vocab_size)
        torch.manual_seed(cfg.seed)
        model = GPT(config)
        log(f"model: new {describe_shape(config)}, {model.num_parameters():,} parameters")
    else:
        path = init_path(cfg.init)
        if path is None and not gpt2load.is_model_name(cfg.init):
            raise _no_such_init(cfg.init)
        target = path if path is not None else gpt2load.canonical_name(cfg.init)
        try:
            model = gpt2load.load(
                target, device="cpu", dtype=torch.float32, contiguous=True, n_head=cfg.n_head
            )
        except gpt2load.DownloadError as exc:
            raise download_failed(cfg.init, exc) from exc
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc
        if path is None:
            check_named_size(cfg.init, model.config)
        check_shape_flags(cfg, model.config)
        log(
            f"model: {cfg.init} ({describe_shape(model.config)}), "
            f"{model.num_parameters():,} parameters"
        )
    if cfg.dropout is not None and cfg.dropout != model.config.dropout:
        model.set_dropout(cfg.dropout)
    check_block_size(cfg, model.config)
    return model.float().train()
