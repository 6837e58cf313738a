"""Describe a GPT-2 checkpoint in any supported format (OpenAI TensorFlow, Hugging Face
safetensors/.bin, from-scratch .pth/.safetensors, nanoGPT ckpt.pt, native) without loading its
weights."""

from __future__ import annotations

import argparse

HELP = "show a checkpoint's format, config, parameter count, dtype and files"


def register(parser: argparse.ArgumentParser) -> None:
    from ._common import MODEL_HELP, add_n_head_argument

    parser.add_argument("path", metavar="MODEL_OR_PATH", help=MODEL_HELP)
    parser.add_argument(
        "--json", action="store_true", help="print the details as JSON (default: as text)"
    )
    add_n_head_argument(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from ..formats import inspect_checkpoint
    from ..loading import resolve
    from ._common import status_after

    path = resolve(args.path)
    with status_after(f"reading {path} ..."):
        info = inspect_checkpoint(path, n_head=args.n_head)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.describe())
    return 0
