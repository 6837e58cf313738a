"""``gpt2load generate``: continue a prompt, printing text as it is produced."""

from __future__ import annotations

import argparse
import sys

from ._common import add_model_arguments, add_sampling_arguments, load_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="continue a prompt with a model",
        description="Continue a prompt, streaming the text as each token is produced.",
    )
    add_model_arguments(parser)
    parser.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    add_sampling_arguments(parser)
    parser.add_argument("--num-samples", type=int, default=1, help="independent continuations")
    parser.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="stop a sample at <|endoftext|> (a character vocabulary has none: no effect)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..generation import check_sampling_args, stream
    from ..tokenizer import StreamDecoder, check_tokenizer_fits, prompt_tensor

    # Every argument is checked before the model loads and before the prompt is printed.
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    last_seed = None if args.seed is None else args.seed + args.num_samples - 1
    for seed in (args.seed, last_seed):  # sample i uses seed + i
        check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p, seed)
    model, tokenizer, _ = load_model(
        args.model, args.device, args.dtype, args.source, n_head=args.n_head
    )
    check_tokenizer_fits(tokenizer, model.config.vocab_size, args.model)
    idx = prompt_tensor(tokenizer, args.prompt, model.tok_emb.weight.device)
    out = sys.stdout
    for i in range(args.num_samples):
        if args.num_samples > 1:
            out.write(f"{'' if i == 0 else chr(10)}--- sample {i + 1} ---\n")
        out.write(args.prompt)
        out.flush()
        decoder = StreamDecoder(tokenizer)
        seed = None if args.seed is None else args.seed + i
        for token in stream(
            model,
            idx,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=tokenizer.eot_token if args.stop_at_eos else None,
            seed=seed,
            vocab_limit=tokenizer.n_vocab,
        ):
            out.write(decoder.push(int(token[0])))
            out.flush()
        out.write(decoder.flush() + "\n")
        out.flush()
    return 0
