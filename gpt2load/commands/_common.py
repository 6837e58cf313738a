"""Arguments and set-up shared by the commands that run a model (generate, compare, chat)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..releases import SOURCES

if TYPE_CHECKING:  # pragma: no cover
    from ..model import GPT
    from ..tokenizer import Tokenizer

DTYPES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL_OR_PATH",
        help="a checkpoint file or folder (any supported format), or a model name "
        "(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M ...) downloaded on first use",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        help="where a model given by name is downloaded from (default: hf)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: float32)")
    add_n_head_argument(parser)


def add_n_head_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-head",
        type=int,
        help="attention heads of a checkpoint that does not record them, such as a bare .pth "
        "of a width GPT-2 never had (default: from its files; never guessed)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, seed: int | None = None) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0 picks the most likely token (greedy)"
    )
    parser.add_argument("--top-k", type=int, help="sample from the k likeliest tokens")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold")
    parser.add_argument("--seed", type=int, default=seed, help="makes sampling reproducible")


def sampling_options(args: argparse.Namespace, samples: int = 1) -> dict[str, Any]:
    """The sampling flags as keyword arguments of :func:`gpt2load.generation.stream`, checked
    before anything loads or prints; sample ``i`` of ``samples`` will use seed + i."""
    from ..generation import check_sampling_args

    names = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
    options = {name: getattr(args, name) for name in names}
    for seed in (args.seed, None if args.seed is None else args.seed + samples - 1):
        check_sampling_args(**{**options, "seed": seed})
    return options


def load_model(
    args: argparse.Namespace, path: Path | None = None, name: str | None = None
) -> tuple[GPT, Tokenizer, Path]:
    """Model ``name`` (default: ``args.model``) from ``path`` (default: where the name resolves,
    downloaded on first use) with the tokenizer of its files, refused when the two do not fit."""
    import torch

    from ..formats import load_checkpoint
    from ..loading import resolve
    from ..tokenizer import check_tokenizer_fits, get_tokenizer

    name = name or args.model
    path = path or resolve(name, source=args.source)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_head = getattr(args, "n_head", None)  # compare has no --n-head
    model = load_checkpoint(path, device=device, dtype=args.dtype, n_head=n_head)
    tokenizer = get_tokenizer(path)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, name)
    return model, tokenizer, path
