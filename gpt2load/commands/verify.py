"""Re-hash the files against the sha256 recorded at download time and the published values,
load the checkpoint (every tensor present, right shape, finite) and, for OpenAI's 124M weights,
check the greedy continuation of 'Every effort moves'. Exit code 0 when everything holds, 1
otherwise."""

from __future__ import annotations

import argparse

HELP = "check a checkpoint: hashes, tensors, and a known answer for OpenAI's 124M"


def register(parser: argparse.ArgumentParser) -> None:
    from ..releases import SOURCES
    from ._common import add_n_head_argument

    parser.add_argument(
        "target",
        metavar="MODEL_OR_PATH",
        help="a checkpoint file or folder, or a model name whose download folder to check "
        "(never downloaded: verify checks what is here)",
    )
    first = ", ".join(SOURCES)
    which = f"with a model name: which download to check (default: the first found of {first})"
    parser.add_argument("--source", choices=SOURCES, default=None, help=which)
    parser.add_argument("--device", default="cpu", help="where to run the model (default: cpu)")
    parser.add_argument(
        "--no-known-answer",
        action="store_true",
        help="skip the known-answer generation (default: run it for OpenAI's 124M weights)",
    )
    add_n_head_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..verify import verify

    options = dict(source=args.source, device=args.device, n_head=args.n_head)
    report = verify(args.target, known_answer=None if args.no_known_answer else "auto", **options)
    print(report.format())
    return 0 if report.ok else 1
