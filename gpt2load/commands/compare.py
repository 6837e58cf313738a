"""``gpt2load compare``: several models on the same prompts and seed, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import SOURCES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="generate with several models side by side, with their loss on a text",
        description="Generate from the same prompts with the same seed using each model, print "
        "the texts side by side and each model's loss, perplexity and bits per byte on an "
        "evaluation text. Loss per token compares models of one tokenizer; bits per byte "
        "compares any (a character-level model with GPT-2, say).",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL_OR_PATH")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", help="a file with one prompt per line")
    parser.add_argument(
        "--eval-text",
        help="text (.txt) or token file (.bin, uint16: ids of the tokenizer its folder's "
        "meta.json or meta.pkl names, else GPT-2's) to score each model on "
        "(default: data/shakespeare/val.bin when prepared)",
    )
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        help="score at most this many (with different tokenizers: the text of the first "
        "model's N tokens, for every model)",
    )
    parser.add_argument(
        "--eval-context",
        type=int,
        default=None,
        metavar="N",
        help="score every model with windows of N tokens (default: the smallest context among "
        "the models, so that each prediction sees the same history in every model)",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip scoring")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", help="also write the comparison to report.md or report.html (.htm)"
    )
    parser.add_argument("--source", choices=SOURCES, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.set_defaults(func=run)


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist")
        prompts += [
            line.replace("\\n", "\n")
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    if not prompts:
        raise ValueError("give a prompt with --prompt TEXT or --prompts-file FILE")
    return prompts


def run(args: argparse.Namespace) -> int:
    from ..compare import (
        DEFAULT_EVAL_TEXT,
        Sampling,
        compare_models,
        render_columns,
        render_html,
        render_markdown,
    )
    from ..generation import check_sampling_args

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".md", ".html", ".htm"):
        raise ValueError(f"--out {out}: use a .md or .html file name")
    check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    if args.eval_tokens is not None and args.eval_tokens < 1:
        raise ValueError(f"--eval-tokens must be >= 1, got {args.eval_tokens}")
    if args.eval_context is not None and args.eval_context < 1:
        raise ValueError(f"--eval-context must be >= 1, got {args.eval_context}")
    prompts = _prompts(args)
    eval_text = None
    if not args.no_eval:
        if args.eval_text:
            eval_text = Path(args.eval_text)
            if not eval_text.is_file():
                raise FileNotFoundError(f"--eval-text {eval_text} does not exist")
        elif DEFAULT_EVAL_TEXT.is_file():
            eval_text = DEFAULT_EVAL_TEXT
        else:
            print(
                f"note: no --eval-text and {DEFAULT_EVAL_TEXT} is not prepared "
                "(`finetune prepare shakespeare`), so models are not scored",
                file=sys.stderr,
            )
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    comparison = compare_models(
        args.models,
        prompts,
        sampling,
        eval_text=eval_text,
        eval_tokens=args.eval_tokens,
        eval_context=args.eval_context,
        device=args.device,
        dtype=args.dtype,
        source=args.source,
        on_model_done=lambda r: print(f"done: {r.name}", file=sys.stderr, flush=True),
    )
    print(render_columns(comparison))
    if out is not None:
        from ..fileio import atomic_write_text

        markdown = out.suffix.lower() == ".md"
        page = render_markdown(comparison) if markdown else render_html(comparison)
        atomic_write_text(out, page)
        print(f"wrote {out}", file=sys.stderr)
    return 0
