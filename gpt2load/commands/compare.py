"""Generate from the same prompts with the same seed using each model, print the texts side by side
and each model's loss, perplexity and bits per byte on an evaluation text. Loss per token compares
models of one tokenizer; bits per byte compares any (a character-level model with GPT-2, say)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import add_model_arguments, add_sampling_arguments, sampling_options

if TYPE_CHECKING:  # pragma: no cover
    from ..compare import Comparison
    from ..model import GPT
    from ..tokenizer import Tokenizer

DEFAULT_EVAL_TEXT = Path("data") / "shakespeare" / "val.bin"
HELP = "generate with several models side by side, with their loss on a text"


def register(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, nargs="+", n_head=False)
    add = parser.add_argument
    add(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="a prompt (repeatable; default: none)",
    )
    add(
        "--prompts-file",
        metavar="FILE",
        help="a file with one prompt per line, after any --prompt (default: none)",
    )
    add(
        "--eval-text",
        metavar="FILE",
        help="text (.txt) or token file (.bin, uint16: ids of the tokenizer its folder's "
        "meta.json or meta.pkl names, else GPT-2's) to score each model on "
        "(default: data/shakespeare/val.bin when prepared)",
    )
    add(
        "--eval-tokens",
        type=int,
        metavar="N",
        help="score at most this many (with different tokenizers: the text of the first "
        "model's N tokens, for every model) (default: the whole text)",
    )
    add(
        "--eval-context",
        type=int,
        metavar="N",
        help="score every model with windows of N tokens (default: the smallest context among "
        "the models, so that each prediction sees the same history in every model)",
    )
    add("--no-eval", action="store_true", help="skip scoring (default: score when a text is found)")
    add_sampling_arguments(parser, seed=0)
    add(
        "--out",
        metavar="FILE",
        help="also write the comparison to a .md or .html (.htm) file (default: the terminal only)",
    )


def _existing(flag: str, name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    return path


def run(args: argparse.Namespace) -> int:
    from ..compare import render_columns, render_html, render_markdown

    # Every argument is checked before any model loads.
    renderers = {".md": render_markdown, ".html": render_html, ".htm": render_html}
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in renderers:
        raise ValueError(f"--out {out}: use a .md or .html file name")
    sampling = sampling_options(args)
    for flag, value in (("--eval-tokens", args.eval_tokens), ("--eval-context", args.eval_context)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    prompts = list(args.prompt)
    if args.prompts_file:  # "\n" in a line is a newline in the prompt
        lines = _existing("--prompts-file", args.prompts_file).read_text(encoding="utf-8")
        prompts += [line.replace("\\n", "\n") for line in lines.splitlines() if line.strip()]
    if not prompts:
        raise ValueError("give a prompt with --prompt TEXT or --prompts-file FILE")
    eval_text = None
    if args.eval_text and not args.no_eval:
        eval_text = _existing("--eval-text", args.eval_text)
    elif not args.no_eval and DEFAULT_EVAL_TEXT.is_file():
        eval_text = DEFAULT_EVAL_TEXT
    elif not args.no_eval:
        print(
            f"note: no --eval-text and {DEFAULT_EVAL_TEXT} is not prepared "
            "(`finetune prepare shakespeare`), so models are not scored",
            file=sys.stderr,
        )
    comparison = compare(args, prompts, sampling, eval_text)
    print(render_columns(comparison))
    if out is not None:
        from ..fileio import atomic_write_text

        atomic_write_text(out, renderers[out.suffix.lower()](comparison))
        print(f"wrote {out}", file=sys.stderr)
    return 0


def compare(
    args: argparse.Namespace, prompts: list[str], sampling: dict[str, Any], eval_text: Path | None
) -> Comparison:
    """Generate and score with each model in turn, one in memory at a time; all score the same
    text (see ``--eval-tokens``) in windows of one size: each prediction sees the same history."""
    import gc

    import torch

    from ..compare import Comparison, ModelResult
    from ..evaluation import evaluate_tokens, read_eval_text
    from ..formats import inspect_checkpoint
    from ..loading import resolve
    from ..tokenizer import describe_tokenizer, get_tokenizer, tokenizer_key
    from ._common import load_model

    paths = [resolve(name, source=args.source) for name in args.model]
    text, cap, window = None, args.eval_tokens, None
    if eval_text is not None:
        # From the headers alone, so the window is known before any model is scored.
        contexts = [inspect_checkpoint(p).config.context_length for p in paths]
        smallest = min(contexts)
        if args.eval_context is not None and args.eval_context > smallest:
            raise ValueError(
                f"--eval-context {args.eval_context} is longer than the context of "
                f"{args.model[contexts.index(smallest)]} ({smallest} tokens); every model must "
                "see the same window"
            )
        window = args.eval_context or smallest
        text = read_eval_text(eval_text)
        if args.eval_tokens is not None:
            # Read before any model loads: a meta.pkl that is refused fails in seconds.
            tokenizers = [get_tokenizer(p) for p in paths]
            if len({tokenizer_key(t) for t in tokenizers}) > 1:
                # N tokens are N characters to one model and ~4N to another: cut the text
                # once, where the first model's N + 1 tokens end, and score it all everywhere.
                text, cap = text.prefix(tokenizers[0], args.eval_tokens + 1), None
    comparison = Comparison(prompts, sampling, eval_text and str(eval_text), eval_window=window)
    for i, (name, path) in enumerate(zip(args.model, paths, strict=True)):
        tag = f"[{i + 1}/{len(paths)}] "
        model, tokenizer, _ = load_model(args, path, name, announce=tag)
        samples = _generate(model, tokenizer, prompts, sampling, f"{tag}{name}: generating")
        result = ModelResult(name, str(path), model.num_parameters(), samples)
        result.tokenizer = describe_tokenizer(tokenizer)
        result.tokenizer_key = tokenizer_key(tokenizer)
        if text is not None:
            tokens, label = text.tokens_to_score(tokenizer, name), f"{tag}{name}: scoring"
            s = evaluate_tokens(
                model, tokens, cap, window=window, tokenizer=tokenizer, progress=label
            )
            result.loss, result.perplexity, result.eval_tokens = s.loss, s.perplexity, s.tokens
            result.eval_bytes, result.bits_per_byte = s.bytes, s.bits_per_byte
        comparison.results.append(result)
        print(f"done: {name}", file=sys.stderr, flush=True)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    counts = {r.eval_tokens for r in comparison.results}
    if text is not None and len(counts) == 1:
        comparison.eval_tokens = counts.pop()
    return comparison


def _generate(
    model: GPT, tokenizer: Tokenizer, prompts: list[str], sampling: dict[str, Any], label: str
) -> list[str]:
    """Each prompt with its continuation; a bar counts the tokens (minutes, on a CPU)."""
    from tqdm.auto import tqdm

    from ..compare import clean_text
    from ..generation import stream
    from ..tokenizer import prompt_tensor

    samples = []
    total = len(prompts) * sampling["max_new_tokens"]
    with tqdm(total=total, desc=label, unit="tok", file=sys.stderr, dynamic_ncols=True) as bar:
        for prompt in prompts:
            idx = prompt_tensor(tokenizer, prompt, model.tok_emb.weight.device)
            new = []
            for token in stream(model, idx, vocab_limit=tokenizer.n_vocab, **sampling):
                new.append(int(token[0]))
                bar.update(1)
            samples.append(clean_text(prompt + tokenizer.decode(new)))
    return samples
