"""Arguments and set-up shared by the commands that run a model (generate, compare, chat)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DTYPE_ALIASES
from ..releases import DEFAULT_SOURCE, SOURCES

if TYPE_CHECKING:  # pragma: no cover
    from ..model import GPT
    from ..tokenizer import Tokenizer

DTYPES = tuple(sorted(set(DTYPE_ALIASES.values())))  # every --dtype: these, or an alias
MODEL_HELP = (
    "a checkpoint file or folder (any supported format), or a model name "
    "(gpt2, gpt2-medium, gpt2-large, gpt2-xl, 124M ...) or a Hugging Face repo id (ORG/NAME), "
    "downloaded on first use"
)


QUIET_FOR = 2.0  # seconds of work that need no status line


@contextlib.contextmanager
def status_after(message: str) -> Iterator[None]:
    """``message`` on stderr once the work inside has taken ``QUIET_FOR`` seconds: what is
    quick stays quiet, what is slow (an old-style pickle read whole) never looks hung."""
    timer = threading.Timer(QUIET_FOR, lambda: print(message, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dtype_name(text: str) -> str:
    key = text.strip().lower()
    return DTYPE_ALIASES.get(key, key)  # argparse then checks it against DTYPES


def add_dtype_argument(parser: argparse.ArgumentParser, what: str = "weights dtype") -> None:
    spelled = f"also spelled {', '.join(sorted(DTYPE_ALIASES))} (default: as stored)"
    parser.add_argument("--dtype", type=_dtype_name, choices=DTYPES, help=f"{what}; {spelled}")


def add_model_arguments(
    parser: argparse.ArgumentParser, nargs: str | None = None, n_head: bool = True
) -> None:
    """The model (``nargs="+"``: several) and where and how it runs, alike in every command."""
    parser.add_argument("model", nargs=nargs, metavar="MODEL_OR_PATH", help=MODEL_HELP)
    where = f"where a model given by name is downloaded from (default: {DEFAULT_SOURCE})"
    parser.add_argument("--source", choices=SOURCES, help=where)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    add_dtype_argument(parser)
    if n_head:
        add_n_head_argument(parser)


def add_n_head_argument(parser: argparse.ArgumentParser) -> None:
    what = "attention heads of a checkpoint that does not record them, such as a bare .pth of a "
    what += "width GPT-2 never had (default: from its files; never guessed)"
    parser.add_argument("--n-head", type=int, metavar="N", help=what)


def add_sampling_arguments(
    parser: argparse.ArgumentParser, seed: int | None = None, samples: bool = False
) -> None:
    seeded = "random" if seed is None else seed
    rows = [
        ("--max-new-tokens", int, 100, "N", "tokens to generate (default: 100)"),
        ("--temperature", float, 1.0, "T", "sampling temperature; 0 is greedy (default: 1.0)"),
        ("--top-k", int, None, "K", "sample from the k likeliest tokens (default: all)"),
        ("--top-p", float, None, "P", "nucleus sampling threshold, in (0, 1] (default: none)"),
        ("--seed", int, seed, "N", f"makes sampling reproducible (default: {seeded})"),
    ]
    if samples:
        rows.append(("--num-samples", int, 1, "N", "independent continuations (default: 1)"))
    for flag, kind, default, metavar, what in rows:
        parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=what)


def sampling_options(args: argparse.Namespace, samples: int = 1) -> dict[str, Any]:
    """The sampling flags as keyword arguments of :func:`gpt2load.generation.stream`, checked up
    front (sample ``i`` of ``samples`` uses seed + i); a bad one is named as typed (``--top-p``)."""
    from ..generation import check_sampling_args

    names = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")
    options = {name: getattr(args, name) for name in names}
    for seed in (args.seed, None if args.seed is None else args.seed + samples - 1):
        try:
            check_sampling_args(**{**options, "seed": seed})
        except ValueError as exc:
            name, _, rest = str(exc).partition(" ")
            last = f" (sample {samples} uses --seed + {samples - 1})" if seed != args.seed else ""
            raise ValueError(f"--{name.replace('_', '-')} {rest}{last}") from None
    return options


def load_model(
    args: argparse.Namespace,
    path: Path | None = None,
    name: str | None = None,
    announce: str | None = None,
) -> tuple[GPT, Tokenizer, Path]:
    """Model ``name`` (default: ``args.model``) from ``path`` (default: where the name resolves)
    with the tokenizer of its files, refused when the two do not fit. With ``announce`` (a
    prefix), stderr says what loads and what loaded: minutes, for a large model, are no hang."""
    import torch

    from ..formats import load_checkpoint
    from ..loading import resolve
    from ..tokenizer import check_tokenizer_fits, get_tokenizer

    name = name or args.model
    path = path or resolve(name, source=args.source)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_head = getattr(args, "n_head", None)  # compare has no --n-head
    start = time.perf_counter()
    if announce is not None:
        where = "" if str(path) == name else f" from {path}"
        print(f"{announce}loading {name}{where} on {device} ...", file=sys.stderr, flush=True)
    model = load_checkpoint(path, device=device, dtype=args.dtype, n_head=n_head)
    tokenizer = get_tokenizer(path)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, name)
    if announce is not None:
        weights, took = model.tok_emb.weight, time.perf_counter() - start
        dtype = str(weights.dtype).removeprefix("torch.")
        size = f"{model.num_parameters():,} parameters, {dtype} on {weights.device}"
        print(f"{announce}loaded {name}: {size} ({took:.1f} s)", file=sys.stderr, flush=True)
    return model, tokenizer, path
