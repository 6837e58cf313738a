"""Continue a prompt, streaming the text as each token is produced."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, add_sampling_arguments, load_model, sampling_options

HELP = "continue a prompt with a model"


def register(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--prompt", default="", metavar="TEXT", help="text to continue (default: a new document)"
    )
    add_sampling_arguments(parser, samples=True)
    parser.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="stop a sample at <|endoftext|> (a character vocabulary has none: no effect) "
        "(default: go on to --max-new-tokens)",
    )


def run(args: argparse.Namespace) -> int:
    from ..generation import stream
    from ..tokenizer import StreamDecoder, prompt_tensor
    from ._common import status_after

    # Every argument is checked before the model loads and before the prompt is printed.
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    options = sampling_options(args, args.num_samples)
    with status_after(f"loading {args.model} ..."):  # stdout is for the text alone
        model, tokenizer, _ = load_model(args)
    idx = prompt_tensor(tokenizer, args.prompt, model.tok_emb.weight.device)
    options["eos_id"] = tokenizer.eot_token if args.stop_at_eos else None
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(("\n" if i else "") + f"--- sample {i + 1} ---")
        print(args.prompt, end="", flush=True)
        decoder = StreamDecoder(tokenizer)
        options["seed"] = None if args.seed is None else args.seed + i
        for token in stream(model, idx, vocab_limit=tokenizer.n_vocab, **options):
            print(decoder.push(int(token[0])), end="", flush=True)
        print(decoder.flush(), flush=True)
    return 0
