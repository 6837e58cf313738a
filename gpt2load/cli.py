"""The ``gpt2load`` command line.

Each sub-command lives in its own module under ``gpt2load.commands`` and is
found there at start-up, so adding a command never means editing this file.
Command modules keep heavy imports (torch, tensorflow) inside ``run`` so that
``gpt2load --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence

from . import commands


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2load",
        description="Download, verify, inspect, convert and run OpenAI's GPT-2 weights.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: reported in one line, exit code 2.

    ``DownloadError`` is looked up only once its module is loaded (it cannot be raised
    before), so ``gpt2load --help`` does not pay for importing requests.
    """
    types: list[type[BaseException]] = [CLIError, FileNotFoundError, ValueError, KeyError]
    transfer = sys.modules.get("gpt2load.downloads.transfer")
    if transfer is not None:
        types.append(transfer.DownloadError)
    return tuple(types)


def check_device(spec: str | None) -> None:
    """Refuse a ``--device`` that names no device, or one this machine does not have."""
    if spec is None or spec.strip().lower() == "cpu":
        return
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise CLIError(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(
                f"--device {spec}: no CUDA GPU is available here (torch.cuda.is_available() "
                f"is False, torch {torch.__version__}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {spec}: only {count} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(
                f"--device {spec}: Apple's MPS backend is not available on this machine or "
                f"PyTorch build; use --device cpu"
            )
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise CLIError(f"--device {spec}: no {device.type} device is available here")


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """``parser.parse_args``, except that a mistyped flag after a command is reported by that
    command's parser, with its own usage line, rather than by the top-level one."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command = getattr(args, "command", None)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                action.choices[command].error(f"unrecognized arguments: {' '.join(extras)}")
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


@contextlib.contextmanager
def warnings_as_lines(program: str) -> Iterator[None]:
    """Show Python warnings (a guessed head count, a folder written without a tokenizer) as
    one ``PROGRAM: warning: ...`` line, not with the source file and line that raised them;
    only while the command runs, so a caller's own warning display is left as it was."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = " ".join(str(message).split())
        print(f"{program}: warning: {text}", file=file or sys.stderr)

    before = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    try:
        check_device(getattr(args, "device", None))
        with warnings_as_lines(f"gpt2load {args.command}"):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if not isinstance(exc, _user_error_types()):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        line = " ".join(str(message).split("\n"))
        print(f"gpt2load {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
