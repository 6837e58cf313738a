"""Type a prompt, watch the continuation stream; /help lists the commands.
Prompts can also be piped in, one per line. In a terminal: arrow keys, Ctrl-R and a history
kept across sessions in $GPT2LOAD_CHAT_HISTORY, else $XDG_CACHE_HOME/gpt2load/chat_history
(default ~/.cache/gpt2load/chat_history)."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, load_model

HELP = "interactive console: type prompts, change settings with /commands"


def register(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    note = " (default: the checkpoint's own sampling settings, else %s)"
    parser.add_argument("--temperature", metavar="T", help="0 is greedy" + note % "0.8")
    parser.add_argument("--top-k", metavar="K", help="k likeliest tokens, or none" + note % 50)
    parser.add_argument("--top-p", metavar="P", help="nucleus threshold, or none" + note % "none")
    parser.add_argument("--max-new-tokens", metavar="N", help="per answer" + note % 200)
    parser.add_argument(
        "--seed", metavar="N", help="reproducible answers, or none (default: random)"
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..console import RULES, Console, settings_from_checkpoint

    flags = {}  # read by the console's own rules before anything loads: a bad one exits 2
    for name, rule in RULES.items():
        if (value := getattr(args, name)) is not None:
            try:
                flags[name] = rule.read(value)
            except ValueError as exc:
                raise ValueError(f"--{name.replace('_', '-')} {value}: {exc}") from None
    model, tokenizer, path = load_model(args, announce="")  # says what loads, and on what
    Console(model, tokenizer, replace(settings_from_checkpoint(path), **flags)).run()
    return 0
