"""The ``gpt2load`` command line: one module per sub-command under ``gpt2load.commands``
(``HELP``, ``register(parser)``, ``run(args)``), found at start-up. They import torch only
inside ``run``, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import functools
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

from . import __version__, commands
from .errors import Gpt2loadError, redact
from .fileio import UnsafePathError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2load",
        description="Download, verify, inspect, convert and run OpenAI's GPT-2 weights.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        if not name.startswith("_"):  # each module: its help, description (__doc__) and options
            module = importlib.import_module(f"{commands.__name__}.{name}")
            command = sub.add_parser(name, help=module.HELP, description=module.__doc__)
            command.set_defaults(func=module.run)
            module.register(command)
    return parser


# What the operating system says when the disk, the permissions or a path a user gave are
# wrong: theirs to fix, so one line naming the file, with what to do (not a traceback).
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "the disk is full: free space and run again (a partial download resumes)",
    errno.EDQUOT: "the disk quota is used up: free space and run again",
    errno.EFBIG: "the file outgrew what this process may write (ulimit -f) or the file "
    "system holds: raise the limit or choose another disk (a partial download resumes)",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.EACCES: "no permission: choose a folder you can write to, or change its permissions",
    errno.EPERM: "not permitted: choose a folder you can write to, or change its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "a folder is there, where a file was expected",
    errno.EEXIST: "something else is already there",
    errno.ENAMETOOLONG: "the name is longer than the file system allows",
    errno.ELOOP: "symbolic links are in the way (or loop); gpt2load writes through no link",
    errno.EMLINK: "the folder holds too many entries",
}


def user_error_line(exc: BaseException) -> str | None:
    """The one line to show for an error that is the user's to fix (None: a bug), with the
    credentials of any URL in it redacted (a mirror may be given as user:pw@host)."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        if exc.errno not in _OS_ERROR_ADVICE:
            return None
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        line = f"{where}: {exc.strerror or exc}" if where else exc.strerror or str(exc)
        if not isinstance(exc, UnsafePathError):  # whose own words say what to do
            line += f" ({_OS_ERROR_ADVICE[exc.errno]})"
    elif isinstance(exc, (Gpt2loadError, FileNotFoundError, ValueError, KeyError)):
        line = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    else:
        return None
    return redact(" ".join(line.split("\n")))


def check_device(spec: str | None) -> None:
    """Refuse a ``--device`` that names no device, or one this machine does not have."""
    if spec is None or spec.strip().lower() == "cpu":
        return
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise Gpt2loadError(
            f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or mps"
        ) from None
    missing = {
        "cuda": "no CUDA GPU is available here (torch.cuda.is_available() is False, torch "
        f"{torch.__version__})",
        "mps": "Apple's MPS backend is not available on this machine or PyTorch build",
    }.get(device.type, f"no {device.type} device is available here")
    available = getattr(getattr(torch, device.type, None), "is_available", None)
    if callable(available) and not available():
        raise Gpt2loadError(f"--device {spec}: {missing}; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise Gpt2loadError(
            f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        )


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """``parser.parse_args``, kinder: no arguments print the help; a mistyped sub-command or flag
    gets an error line naming the closest real one (argparse prints the usage, no suggestion)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        raise SystemExit(0)
    commands = next(
        (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {}
    )
    for each in (parser, *commands.values()):  # a bad value too: two lines, not the usage
        each.error = functools.partial(_usage_error, each, typed="", known=[])
    top = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    if commands and not argv[0].startswith("-") and argv[0] not in commands:
        _usage_error(parser, f"unknown command {argv[0]!r}", argv[0], list(commands))
    if commands and argv[0].startswith("--") and argv[0].split("=")[0] not in top:
        _usage_error(parser, f"unrecognized arguments: {argv[0]}", argv[0], top)
    args, extras = parser.parse_known_args(argv)
    if extras:
        target = commands.get(getattr(args, "command", None), parser)
        flags = [o for a in target._actions for o in a.option_strings if o.startswith("--")]
        typed = next((e.split("=")[0] for e in extras if e.startswith("--")), "")
        _usage_error(target, f"unrecognized arguments: {' '.join(extras)}", typed, flags)
    return args


def _usage_error(
    parser: argparse.ArgumentParser, message: str, typed: str, known: list[str]
) -> NoReturn:
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6) if typed else []
    hint = f"; did you mean {close[0]}?" if close else ""
    print(f"usage: {parser.prog} ... (every option: {parser.prog} --help)", file=sys.stderr)
    print(f"{parser.prog}: error: {message}{hint}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def warnings_as_lines(program: str) -> Iterator[None]:
    """While a command runs, each Python warning is one ``PROGRAM: warning: ...`` line."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"{program}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    with warnings.catch_warnings():  # which puts the previous showwarning back
        warnings.showwarning = show
        yield


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
        line = user_error_line(exc)
        if line is None:
            raise
        print(f"gpt2load {args.command}: error: {line}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
