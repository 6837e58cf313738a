"""Type a prompt, watch the continuation stream; /help lists the commands.
Prompts can also be piped in, one per line. In a terminal: arrow keys, Ctrl-R and a history
kept across sessions in $GPT2LOAD_CHAT_HISTORY, else $XDG_CACHE_HOME/gpt2load/chat_history
(default ~/.cache/gpt2load/chat_history)."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, load_model

HELP = "interactive console: type prompts, change settings with /commands"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help=HELP, description=__doc__)
    add_model_arguments(parser)
    note = " (default: the checkpoint's own sampling settings, else %s)"
    parser.add_argument("--temperature", type=float, help="0 is greedy" + note % "0.8")
    parser.add_argument(
        "--top-k", type=_or_none(int), help="k likeliest tokens, or none" + note % 50
    )
    parser.add_argument("--top-p", type=_or_none(float), help="nucleus threshold" + note % "none")
    parser.add_argument("--max-new-tokens", type=int, help="per answer" + note % 200)
    parser.add_argument("--seed", type=_or_none(int), help="reproducible answers (default: random)")
    parser.set_defaults(func=run)


def _or_none(parse):
    """``parse``, except that "none"/"off" stays the word (it unsets the setting)."""

    def convert(text: str):
        return "none" if text.strip().lower() in ("none", "off") else parse(text)

    convert.__name__ = parse.__name__  # argparse names the type in its error message
    return convert


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..console import RULES, Console, settings_from_checkpoint

    flags = {}  # checked by the console's own rules before anything loads: a bad one exits 2
    for name, rule in RULES.items():
        value = getattr(args, name)
        if value is not None:
            try:
                flags[name] = None if value == "none" else rule.check(value)
            except ValueError as exc:
                raise ValueError(f"--{name.replace('_', '-')} {value}: {exc}") from None
    model, tokenizer, path = load_model(args, announce="")  # says what loads, and on what
    Console(model, tokenizer, replace(settings_from_checkpoint(path), **flags)).run()
    return 0
