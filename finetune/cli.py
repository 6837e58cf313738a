"""The ``finetune`` command line (also ``python -m finetune``).

Training flags are generated from :class:`finetune.config.TrainConfig`, so
``finetune pretrain --help`` lists every setting with the help text written
next to the field. User errors print one message and exit with code 2 (1 for a
run that started and then failed, see :mod:`finetune.errors`); no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from gpt2load import DownloadError, Gpt2loadError, parse_command_line, warnings_as_lines

from .config import FIXED_ON_RESUME, SUBCOMMAND_DEFAULTS, ConfigError, TrainConfig, coerce_values
from .flags import add_config_flags, build_config, load_toml

DESCRIPTION = """\
Fine-tune or pretrain GPT-2 on text: Tiny Shakespeare in one command, any text
files with `pretrain`, and exact resume of stopped runs. Needs a GPU unless you
pass --force-cpu."""

# The settings `finetune prepare` shares with training (flags generated from their fields).
PREPARE_FIELDS = ("data_dir", "val_fraction", "tokenizer", "tokenizer_dir")

EPILOG = """\
examples:
  finetune shakespeare --init gpt2 --wandb
  finetune shakespeare --init scratch --out runs/scratch
  finetune pretrain --data books/ notes.txt --init gpt2-medium --max-iters 5000
  finetune prepare shakespeare
  finetune resume runs/shakespeare --max-iters 800
  torchrun --nproc_per_node=4 -m finetune shakespeare --init gpt2-medium --grad-accum 8
  torchrun --nproc_per_node=8 -m finetune pretrain --data books/ --init gpt2-xl --fsdp"""


def _train_parser(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file of settings; flags given here override it"
    )
    add_config_flags(parser, defaults=SUBCOMMAND_DEFAULTS.get(name, {}))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _train_parser(sub, "shakespeare", "fine-tune on Tiny Shakespeare (downloaded and prepared)")
    _train_parser(sub, "pretrain", "continued pretraining (or from scratch) on your text files")

    prepare = sub.add_parser(
        "prepare",
        help="only tokenize data into train.bin/val.bin (cached)",
        description="Tokenize text into DATA_DIR/NAME/{train,val}.bin (uint16) and meta.json.",
        allow_abbrev=False,
    )
    prepare.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="'shakespeare', or text files / folders of .txt and .md files",
    )
    # The settings prepare shares with training come from the same fields (and help texts).
    add_config_flags(prepare, include=PREPARE_FIELDS)
    prepare.add_argument(
        "--name",
        help="dataset folder name (default: the first source's name plus a short hash of the "
        "source paths, so different sources never share a folder)",
    )
    prepare.add_argument(
        "--input",
        metavar="FILE",
        help="shakespeare only: a local copy of input.txt instead of downloading",
    )
    prepare.add_argument("--threads", type=int, help="tokenizer threads (default: all cores)")
    prepare.add_argument("--force", action="store_true", help="prepare again even if cached")

    resume = sub.add_parser(
        "resume",
        help="continue a stopped run from RUN_DIR/last",
        description="Continue a run from its last checkpoint. Flags change settings for the "
        "rest of the run (e.g. --max-iters to train longer); unset ones keep the run's own "
        "values. The model, the data, and what decides the batches and the eval set (--seed, "
        "--batch-size, --block-size, --eval-batches) stay as they were.",
        allow_abbrev=False,
    )
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of settings to change (the run's config.toml may be given: settings "
        "equal to the run's are fine, its 'out' is ignored); flags given here override it",
    )
    # The fixed settings are accepted (hidden) so that giving one says why it cannot change
    # instead of argparse's bare "unrecognized arguments".
    add_config_flags(resume, hidden=FIXED_ON_RESUME, show_defaults=False)
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import SHAKESPEARE, prepare_shakespeare, prepare_text

    given = {k: v for k, v in vars(args).items() if k in PREPARE_FIELDS}
    settings = TrainConfig(**coerce_values(given, source="command line"))
    how = {
        "val_fraction": settings.val_fraction,
        "tokenizer_dir": settings.tokenizer_dir,
        "char_vocab": settings.tokenizer == "char",
        "force": args.force,
        "threads": args.threads,
    }
    if [s.lower() for s in args.sources] == [SHAKESPEARE]:
        prepare_shakespeare(settings.data_dir, input_path=args.input, **how)
    elif args.input:
        raise ConfigError("--input is for `finetune prepare shakespeare`; give files directly")
    else:
        prepare_text(args.sources, settings.data_dir, name=args.name, **how)
    return 0


def _flags(args: argparse.Namespace, drop: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in drop}


def _who() -> str:
    """``[rank N] `` on the other processes of a torchrun launch, so a message that only
    one of them hit is not mistaken for rank 0's."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"[rank {rank}] " if world not in ("", "1") and rank not in ("", "0") else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    try:
        with warnings_as_lines(f"{_who()}finetune {args.command}"):
            return _run(args)
    except KeyboardInterrupt:
        print(f"\n{_who()}finetune: aborted", file=sys.stderr)
        return 130
    except (Gpt2loadError, FileNotFoundError) as exc:
        message = str(exc)
        if isinstance(exc, DownloadError):  # a download not worded by its caller
            message = (
                f"download failed: {' '.join(message.split())}. Set GPT2LOAD_MIRROR to a "
                f"reachable mirror, or fetch the files where there is a network and point "
                f"at them with a local path"
            )
        print(f"{_who()}finetune {args.command}: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        return _prepare(args)
    from . import launch

    if args.command == "resume":
        changes = load_toml(args.config) if args.config is not None else {}
        changes.pop("out", None)  # RUN_DIR says where the run is; a copied file may not
        changes.update(
            coerce_values(_flags(args, ("command", "run_dir", "config")), source="command line")
        )
        result = launch.resume(args.run_dir, changes)
    else:
        cfg = build_config(args.command, _flags(args, ("command", "config")), args.config)
        result = launch.start(cfg)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
