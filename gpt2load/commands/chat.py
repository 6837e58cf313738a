"""``gpt2load chat``: an interactive console that streams answers and takes /commands."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="interactive console: type prompts, change settings with /commands",
        description="Type a prompt, watch the continuation stream; /help lists the commands. "
        "Prompts can also be piped in, one per line.",
    )
    add_model_arguments(parser)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..console import Console, settings_from_run
    from ._common import load_model

    model, tokenizer, path = load_model(args.model, args.device, args.dtype, args.source)
    settings = settings_from_run(path)
    console = Console(model, tokenizer, settings)
    for flag, command in (
        ("temperature", "/temp"),
        ("top_k", "/topk"),
        ("top_p", "/topp"),
        ("max_new_tokens", "/max"),
        ("seed", "/seed"),
    ):
        value = getattr(args, flag)
        if value is not None and not console.command(f"{command} {value}"):
            return 2
    console.run()
    return 0
