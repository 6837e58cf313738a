"""Arguments and set-up shared by the commands that run a model (generate, compare, chat)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import tiktoken
    import torch

    from ..model import GPT

from ..releases import SOURCES


def add_model_arguments(parser: argparse.ArgumentParser, many: bool = False) -> None:
    parser.add_argument(
        "model",
        nargs="+" if many else None,
        metavar="MODEL_OR_PATH",
        help="a checkpoint file or folder (any supported format), or a model name "
        "(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M ...) downloaded on first use",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="where a model given by name is downloaded from (default: hf)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16", "fp32", "bf16", "fp16"),
        help="weights dtype (default: float32)",
    )
    if not many:
        add_n_head_argument(parser)


def add_n_head_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-head",
        type=int,
        default=None,
        help="attention heads of a checkpoint that does not record them, such as a bare .pth "
        "of a width GPT-2 never had (default: from its files; never guessed)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int = 100) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="0 picks the most likely token (greedy)"
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample from the k likeliest tokens"
    )
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def load_model(
    model_or_path: str,
    device: str | None,
    dtype: str | None,
    source: str | None,
    n_head: int | None = None,
) -> tuple[GPT, tiktoken.Encoding, Path]:
    """Resolve (downloading if named), load, and find the tokenizer that goes with the files."""
    from ..loading import resolve

    path = resolve(model_or_path, source=source)
    model, tokenizer = load_resolved(path, device, dtype, n_head)
    return model, tokenizer, path


def load_resolved(
    path: Path, device: str | None, dtype: str | None, n_head: int | None = None
) -> tuple[GPT, tiktoken.Encoding]:
    """Load a checkpoint that is already on disk, with the tokenizer that goes with its files."""
    from ..formats import load_checkpoint
    from ..tokenizer import get_tokenizer

    model = load_checkpoint(path, device=device or default_device(), dtype=dtype, n_head=n_head)
    return model, get_tokenizer(path)


def encode_prompt(tokenizer: tiktoken.Encoding, text: str, device: torch.device) -> torch.Tensor:
    import torch

    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    if not ids:
        ids = [tokenizer.eot_token]  # an empty prompt starts a new document
    return torch.tensor([ids], dtype=torch.long, device=device)
