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
    note = " (default: the checkpoint's own sampling settings, else %s)"
    parser.add_argument(
        "--temperature", type=float, default=None, help="0 is greedy" + note % "0.8"
    )
    parser.add_argument(
        "--top-k", type=_or_none(int), default=None, help="k likeliest tokens, or none" + note % 50
    )
    parser.add_argument(
        "--top-p", type=_or_none(float), default=None, help="nucleus threshold" + note % "none"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="per answer" + note % 200)
    parser.add_argument(
        "--seed", type=_or_none(int), default=None, help="reproducible answers (default: random)"
    )
    parser.set_defaults(func=run)


def _or_none(parse):
    """``parse``, except that "none"/"off" stays the word (it unsets the setting)."""

    def convert(text: str):
        return "none" if text.strip().lower() in ("none", "off") else parse(text)

    convert.__name__ = parse.__name__  # argparse names the type in its error message
    return convert


# flag -> the console command whose rule checks it
FLAGS = {
    "temperature": "/temp",
    "top_k": "/topk",
    "top_p": "/topp",
    "max_new_tokens": "/max",
    "seed": "/seed",
}


def _checked_flags(args: argparse.Namespace) -> dict[str, object]:
    """The sampling flags given, checked before anything loads: a bad one exits 2."""
    from ..console import COMMANDS

    given = {}
    for flag, command in FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        rule = COMMANDS[command]
        try:
            given[rule.field] = rule.read(value) if value == "none" else rule.check(value)
        except ValueError as exc:
            raise ValueError(f"--{flag.replace('_', '-')} {value}: {exc}") from None
    return given


def run(args: argparse.Namespace) -> int:
    from ..console import Console, settings_from_checkpoint
    from ..tokenizer import check_tokenizer_fits
    from ._common import load_model

    flags = _checked_flags(args)
    model, tokenizer, path = load_model(
        args.model, args.device, args.dtype, args.source, n_head=args.n_head
    )
    check_tokenizer_fits(tokenizer, model.config.vocab_size, args.model)
    settings = settings_from_checkpoint(path)
    for name, value in flags.items():
        setattr(settings, name, value)
    Console(model, tokenizer, settings).run()
    return 0
