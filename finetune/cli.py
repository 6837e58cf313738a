"""The ``finetune`` command line (also ``python -m finetune``). Training flags are generated
from :class:`finetune.config.TrainConfig`'s fields and their help text. User errors print one
line and exit with code 2 (1 for a run that started and then failed, see finetune.errors)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gpt2load import Gpt2loadError, __version__, parse_command_line, warnings_as_lines

from .config import FIXED_ON_RESUME, SUBCOMMAND_DEFAULTS, ConfigError, TrainConfig
from .flags import add_config_flags, build_config, flag_values, load_toml

DESCRIPTION = """\
Fine-tune or pretrain GPT-2 on text: Tiny Shakespeare in one command, any text
files with `pretrain`, and exact resume of stopped runs. Needs a GPU unless you
pass --force-cpu."""
EPILOG = """\
examples:
  finetune shakespeare --init gpt2 --wandb
  finetune shakespeare --init scratch --out runs/scratch
  finetune pretrain --data books/ notes.txt --init gpt2-medium --max-iters 5000
  finetune prepare shakespeare
  finetune resume runs/shakespeare --max-iters 800
  torchrun --nproc_per_node=4 -m finetune shakespeare --init gpt2-medium --grad-accum 8
  torchrun --nproc_per_node=8 -m finetune pretrain --data books/ --init gpt2-xl --fsdp"""
TRAIN_COMMANDS = {
    "shakespeare": "fine-tune on Tiny Shakespeare (downloaded and prepared)",
    "pretrain": "continued pretraining (or from scratch) on your text files",
}
RESUME = """\
Continue a stopped run from RUN_DIR/last, exactly where it stopped.

--max-iters is the step to reach, not a number of extra steps: a run that
finished 500 steps trains 300 more with --max-iters 800.

Every setting not given keeps the run's own value (a --min-lr the run derived
from --lr is derived again from a new --lr). What can change is listed below:
the optimizer and its schedule, evaluation, samples and checkpoints, the device
and the logging. What cannot: the model (--init, --n-layer, --n-head, --n-embd),
the data and its tokenizer, and what decides the batches and the fixed eval set
(--seed, --batch-size, --block-size, --eval-batches)."""
RAW = argparse.RawDescriptionHelpFormatter
PREPARE = "only tokenize data into train.bin/val.bin (cached)"
# The settings `finetune prepare` shares with training (flags generated from their fields).
PREPARE_FIELDS = ("data_dir", "val_fraction", "tokenizer", "tokenizer_dir")
PREPARE_HELPS = {  # prepare has no --init to take a tokenizer from
    "tokenizer": "auto and gpt2: GPT-2's BPE; char: one token per character of the text",
}
# fmt: off
PREPARE_FLAGS: dict[str, dict[str, Any]] = {
    "--name": {"help": "dataset folder name (default: the first source's name plus a short hash "
        "of the source paths, so different sources never share a folder)"},
    "--input": {"metavar": "FILE", "help": "shakespeare only: a local input.txt (default: "
        "download)"},
    "--threads": {"type": int, "metavar": "N", "help": "tokenizer threads (default: all cores)"},
    "--force": {"action": "store_true", "help": "prepare again even if cached (default: no)"},
}
# fmt: on


def _parser(make: Callable, name: str, description: str, **kw: Any) -> argparse.ArgumentParser:
    """Every parser alike: no abbreviated flags (a typo is not a guess), text kept as written."""
    return make(name, description=description, formatter_class=RAW, allow_abbrev=False, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _parser(argparse.ArgumentParser, "finetune", DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, about in TRAIN_COMMANDS.items():
        train = _parser(sub.add_parser, name, about, help=about)
        settings = "TOML file of settings (a run's config.toml, say); flags given here override "
        train.add_argument("--config", metavar="FILE", help=settings + "it (default: none)")
        add_config_flags(train, defaults=SUBCOMMAND_DEFAULTS[name])

    about = "Tokenize text into DATA_DIR/NAME/{train,val}.bin (uint16) and meta.json."
    prepare = _parser(sub.add_parser, "prepare", about, help=PREPARE)
    sources = "'shakespeare', or text files / folders of .txt and .md files"
    prepare.add_argument("sources", nargs="+", metavar="SOURCE", help=sources)
    add_config_flags(prepare, include=PREPARE_FIELDS, helps=PREPARE_HELPS)
    for flag, kw in PREPARE_FLAGS.items():
        prepare.add_argument(flag, **kw)

    about = "continue a stopped run from RUN_DIR/last (--max-iters: the step to reach)"
    resume = _parser(sub.add_parser, "resume", RESUME, help=about)
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to continue")
    changes = "TOML file of settings to change (the run's config.toml may be given: settings "
    changes += "equal to the run's are fine, its 'out' is ignored); flags given here override it"
    resume.add_argument("--config", metavar="FILE", help=changes)
    # The fixed settings are accepted (hidden) so that giving one says why it cannot change
    # instead of argparse's bare "unrecognized arguments".
    add_config_flags(resume, hidden=FIXED_ON_RESUME, show_defaults=False)
    return parser


def _who() -> str:
    """``[rank N] `` on other torchrun processes: one rank's message is not taken for rank 0's."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return f"[rank {rank}] " if world not in ("", "1") and rank not in ("", "0") else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_command_line(build_parser(), argv)
    try:
        with warnings_as_lines(f"{_who()}finetune {args.command}"):
            return _run(args)
    except KeyboardInterrupt:
        print(f"\n{_who()}finetune: aborted", file=sys.stderr)
        return 130
    except (Gpt2loadError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split())  # a download error says itself what to do
        print(f"{_who()}finetune {args.command}: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        return _prepare(args)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "run_dir")}
    if args.command == "resume":
        changes = load_toml(args.config) if args.config is not None else {}
        changes.pop("out", None)  # RUN_DIR says where the run is; a copied file may not
        changes |= flag_values(flags)
        from . import launch  # torch: only once the command line is known to be good

        return launch.resume(args.run_dir, changes).exit_code
    from .prepare import check_shakespeare_data

    cfg = build_config(args.command, flags, args.config)
    check_shakespeare_data(args.command, cfg.data)  # from the flags or the --config file
    from . import launch

    return launch.start(cfg).exit_code


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import SHAKESPEARE, prepare_shakespeare, prepare_text
    from .vocab import check_tokenizer_dir

    given = {k: v for k, v in vars(args).items() if k in PREPARE_FIELDS}
    cfg = TrainConfig(**flag_values(given))
    shakespeare = [s.lower() for s in args.sources] == [SHAKESPEARE]
    if shakespeare and args.name:
        raise ConfigError(
            f"--name is for text files; `finetune prepare shakespeare` always prepares "
            f"{cfg.data_dir}/shakespeare (shakespeare_char with --tokenizer char), where "
            f"training looks for it: drop --name"
        )
    if cfg.tokenizer_dir is not None:  # a mistyped folder is told, as a mistyped source is
        check_tokenizer_dir(cfg.tokenizer_dir)
    how = {"val_fraction": cfg.val_fraction, "tokenizer_dir": cfg.tokenizer_dir}
    how |= {"char_vocab": cfg.tokenizer == "char", "force": args.force, "threads": args.threads}
    if shakespeare:
        prepare_shakespeare(cfg.data_dir, input_path=args.input, **how)
    elif args.input:
        raise ConfigError("--input is for `finetune prepare shakespeare`; give files directly")
    else:
        prepare_text(args.sources, cfg.data_dir, name=args.name, **how)
    return 0
