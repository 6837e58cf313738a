"""``gpt2load info PATH``: what a checkpoint is, read from its headers only."""

from __future__ import annotations

import argparse

HELP = "show a checkpoint's format, config, parameter count, dtype and files"
DESCRIPTION = (
    "Describe a GPT-2 checkpoint in any supported format (OpenAI TensorFlow, Hugging Face "
    "safetensors/.bin, from-scratch .pth/.safetensors, nanoGPT ckpt.pt, native) without "
    "loading its weights."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ._common import add_n_head_argument

    parser = subparsers.add_parser("info", help=HELP, description=DESCRIPTION)
    parser.add_argument("path", help="checkpoint file or folder, or a model name (gpt2, 355M, ...)")
    parser.add_argument("--json", action="store_true", help="print the details as JSON")
    add_n_head_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..formats import inspect_checkpoint
    from ..loading import resolve

    info = inspect_checkpoint(resolve(args.path), n_head=args.n_head)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.describe())
    return 0
