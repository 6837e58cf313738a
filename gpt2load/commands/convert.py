"""Load MODEL_OR_PATH (any supported format) and write it to the folder DST: 'hf' writes
model.safetensors + config.json for transformers, 'openai' a TensorFlow checkpoint in the
original release layout with hparams.json (needs TensorFlow), 'nanogpt' a ckpt.pt for nanoGPT's
sample.py (init_from='resume'), 'rasbt' the book's model.pth (strict load_state_dict into
GPTModel) with its cfg dict as config.json, 'native' gpt2load's own model.safetensors. A model
the target cannot compute is refused with the reason, and so is a DST that is the model's own
folder. Tokenizer files beside it (or in --tokenizer-dir), checked as generate checks them, or a
character model's meta.pkl are copied along, under each format's names; 'openai' also looks in
$GPT2LOAD_TOKENIZER_DIR and warns when it writes a folder without them."""

from __future__ import annotations

import argparse

HELP = "write a checkpoint as Hugging Face, OpenAI, nanoGPT, book or native files"
TARGETS = ("hf", "openai", "nanogpt", "rasbt", "native")  # formats.convert.WRITERS, without torch


def register(parser: argparse.ArgumentParser) -> None:
    from ._common import MODEL_HELP, add_dtype_argument, add_n_head_argument

    parser.add_argument("src", metavar="MODEL_OR_PATH", help=MODEL_HELP)
    parser.add_argument(
        "dst", metavar="DST", help="output folder (for native also a .safetensors file)"
    )
    parser.add_argument(
        "--to", required=True, choices=TARGETS, help="output format (required; no default)"
    )
    add_n_head_argument(parser)
    add_dtype_argument(parser, "cast the weights to this dtype")
    parser.add_argument(
        "--tokenizer-dir",
        metavar="DIR",
        help="copy encoder.json/vocab.bpe from this folder (default: from beside MODEL_OR_PATH)",
    )


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from ..formats import convert
    from ..loading import resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options = dict(dtype=args.dtype, tokenizer_dir=args.tokenizer_dir, n_head=args.n_head)
        written = convert(resolve(args.src), args.dst, args.to, **options)
    print(f"wrote {args.to} checkpoint to {args.dst}:")
    print("\n".join(f"  {path}" for path in written))
    for warning in caught:  # after the list, so that it is the last thing on the screen
        print(f"gpt2load convert: WARNING: {warning.message}", file=sys.stderr)
    return 0
