"""``gpt2load convert SRC DST --to hf|openai|native``: rewrite a checkpoint in another format."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="write a checkpoint as Hugging Face, OpenAI TensorFlow or native files",
        description=(
            "Load SRC (any supported format) and write it to the folder DST: 'hf' writes "
            "model.safetensors + config.json for transformers, 'openai' a TensorFlow checkpoint "
            "in the original release layout with hparams.json (needs TensorFlow), 'native' "
            "gpt2load's own model.safetensors. Tokenizer files beside SRC (or in --tokenizer-dir) "
            "are copied along, under each format's names; 'openai' also looks in "
            "$GPT2LOAD_TOKENIZER_DIR and warns when it writes a folder without them."
        ),
    )
    parser.add_argument("src", help="checkpoint file or folder, or a model name (gpt2, 355M, ...)")
    parser.add_argument("dst", help="output folder (for native also a .safetensors file)")
    parser.add_argument(
        "--to", required=True, choices=("hf", "openai", "native"), help="output format"
    )
    parser.add_argument(
        "--dtype", default=None, help="cast the weights (float32, bf16, fp16); default: as stored"
    )
    parser.add_argument(
        "--tokenizer-dir",
        default=None,
        help="copy encoder.json/vocab.bpe from this folder instead of from beside SRC",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from ..formats import convert
    from ..loading import resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = convert(
            resolve(args.src), args.dst, args.to, dtype=args.dtype, tokenizer_dir=args.tokenizer_dir
        )
    print(f"wrote {args.to} checkpoint to {args.dst}:")
    for path in written:
        print(f"  {path}")
    for warning in caught:  # after the list, so that it is the last thing on the screen
        print(f"gpt2load convert: WARNING: {warning.message}", file=sys.stderr)
    return 0
