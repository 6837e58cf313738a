"""The model a run starts from (a published size, a fresh model, or any checkpoint), its shape
planned from headers before any download or preparing, so settings that cannot fit it fail fast."""

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


def describe_shape(config: GPTConfig) -> str:
    return (
        f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
        f"context={config.context_length}, vocab={config.vocab_size}"
    )


def scratch_config(cfg: TrainConfig, vocab_size: int = VOCAB_SIZE) -> GPTConfig:
    """A new model's config; its defaults (shape, dropout) are those :meth:`resolved` fills."""
    cfg = cfg.resolved()
    shape = {k: getattr(cfg, k) for k in SCRATCH_SHAPE}
    return GPTConfig(
        **shape, context_length=cfg.block_size, vocab_size=vocab_size, dropout=cfg.dropout
    )


def _is_local(init: str) -> bool:
    """A path here, or a TF checkpoint's prefix (``.../model.ckpt``), as gpt2load takes it."""
    return Path(init).expanduser().exists() or Path(f"{init}.index").expanduser().is_file()


def _init_target(init: str) -> Path | str:
    """The checkpoint ``--init`` names (a run folder: its best, else last), or its GPT-2 name."""
    if _is_local(init):
        return gpt2load.resolve(init, download=False)
    if gpt2load.is_model_name(init):
        return gpt2load.canonical_name(init)
    why = "is no Hugging Face repo id (ORG/NAME) either"
    if gpt2load.is_repo_id(init):  # a hub repo: its HF-cache snapshot, fetched on first use
        try:
            return gpt2load.resolve(init)
        except (FileNotFoundError, gpt2load.DownloadError) as exc:
            if Path(init).expanduser().parent.is_dir():  # a mistyped path: said so first
                raise type(exc)(f"--init {exc}") from None
            why = f"and as a Hugging Face repo id: {exc}"
    raise FileNotFoundError(
        f"--init {init!r} is neither scratch, a GPT-2 name (gpt2, gpt2-medium, gpt2-large, "
        f"gpt2-xl) nor an existing checkpoint, {why}"
    )


def init_folder(init: str) -> Path | None:
    """Where the ``--init`` weights and their tokenizer files lie (None: a name not downloaded
    yet). A hub repo is fetched now, once: its tokenizer and shape are only known from its files."""
    if gpt2load.is_repo_id(init) and not _is_local(init):
        return _init_target(init)  # a one-line --init error when it cannot be had
    try:
        path = gpt2load.resolve(init, download=False, quiet=True)
    except FileNotFoundError:  # --init's own check says why
        return None
    return path if path.is_dir() else path.parent


def planned_config(cfg: TrainConfig, vocab_size: int | None = VOCAB_SIZE) -> GPTConfig | None:
    """The model's shape from headers alone; None where only the built model tells: a new
    model of the text's characters (``vocab_size`` None), and pre-zip PyTorch pickles, whose
    shapes cannot be read without reading them whole."""
    if cfg.is_scratch:
        return scratch_config(cfg, vocab_size) if vocab_size is not None else None
    target = _init_target(cfg.init)
    if isinstance(target, str):
        return gpt2load.preset(target)
    # (a TF prefix is neither file nor folder: no pickle among its files)
    files = [target] if target.is_file() else [p for p in target.glob("*") if p.is_file()]
    legacy = [f for f in files if f.suffix in (".pth", ".pt", ".bin") and not zipfile.is_zipfile(f)]
    if legacy and all(f.suffix != ".safetensors" for f in files):
        return None
    try:
        return gpt2load.inspect(target, n_head=cfg.n_head).config
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc


def check_planned(cfg: TrainConfig, config: GPTConfig) -> None:
    """What the shape alone refuses: trained weights cannot change size or read past context."""
    wrong = [
        f"--{key.replace('_', '-')} {getattr(cfg, key)} (the checkpoint has {getattr(config, key)})"
        for key in SCRATCH_SHAPE
        if getattr(cfg, key) not in (None, getattr(config, key)) and not cfg.is_scratch
    ]
    if wrong:
        raise CheckpointError(
            f"--init {cfg.init} is a model of another size ({describe_shape(config)}): "
            f"{', '.join(wrong)}. Drop those flags to fine-tune it as it is, or use --init scratch "
            f"to train a new model of that size"
        )
    if cfg.block_size > config.context_length:
        raise CheckpointError(
            f"--block-size {cfg.block_size} is longer than the model's context of "
            f"{config.context_length} tokens (--init {cfg.init}); lower --block-size to "
            f"{config.context_length} or less"
        )


def init_model(cfg: TrainConfig, log: Log = print, vocab_size: int = VOCAB_SIZE) -> GPT:
    """The starting model on the CPU in float32 (the optimizer's master weights), in
    training mode; ``vocab_size`` is a new model's (GPT-2's, or its characters')."""
    if cfg.is_scratch:
        torch.manual_seed(cfg.seed)
        model = GPT(scratch_config(cfg, vocab_size))
    else:
        target = _init_target(cfg.init)
        try:
            model = gpt2load.load(
                target, device="cpu", dtype=torch.float32, contiguous=True, n_head=cfg.n_head
            )
        except gpt2load.DownloadError as exc:
            reason = " ".join(str(exc).split()).rstrip(".")
            raise WeightsDownloadError(
                f"could not download --init {cfg.init}: {reason} (`gpt2load download {target}` "
                f"fetches it where there is a network; --init scratch needs no download)"
            ) from exc
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot load --init {cfg.init}: {exc}") from exc
        # Weights fetched for a GPT-2 name must be that size: a mirror or a copied folder can
        # hold another model, and the published checksums do not cover every file of every host.
        expected = gpt2load.preset(target) if isinstance(target, str) else model.config
        if model.config.shape_differences(expected):
            raise CheckpointError(
                f"--init {cfg.init}: the weights found for it ({describe_shape(model.config)}) "
                f"are not {target} ({describe_shape(expected)}). Delete "
                f"{gpt2load.weights_root() / target} and let it download again, or pass the "
                f"folder holding them as --init to train them as they are"
            )
    check_planned(cfg, model.config)
    shape = describe_shape(model.config)
    said = f"new {shape}" if cfg.is_scratch else f"{cfg.init} ({shape})"
    log(f"model: {said}, {model.num_parameters():,} parameters")
    if cfg.dropout is not None and cfg.dropout != model.config.dropout:
        model.set_dropout(cfg.dropout)
    return model.float().train()
