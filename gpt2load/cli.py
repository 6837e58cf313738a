"""The ``gpt2load`` command line.

Each sub-command lives in its own module under ``gpt2load.commands`` and is
found there at start-up, so adding a command never means editing this file.
Command modules keep heavy imports (torch, tensorflow) inside ``run`` so that
``gpt2load --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence

from . import commands
from .errors import Gpt2loadError, redact


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


# Exceptions that are the user's to fix: reported in one line, exit code 2.
USER_ERRORS = (Gpt2loadError, FileNotFoundError, ValueError, KeyError)


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


def _os_error_line(exc: OSError) -> str | None:
    """One line for an OSError of the kinds in ``_OS_ERROR_ADVICE``; None for the others."""
    if exc.errno not in _OS_ERROR_ADVICE:
        return None
    from .fileio import UnsafePathError  # stdlib only: cheap

    what = exc.strerror or str(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    text = f"{where}: {what}" if where else what
    if isinstance(exc, UnsafePathError):  # its own words say what to do
        return text
    return f"{text} ({_OS_ERROR_ADVICE[exc.errno]})"


def user_error_line(exc: BaseException) -> str | None:
    """The one line to show for an error that is the user's to fix; None for a bug.

    Credentials in any URL in it are redacted (a mirror may be given as user:pw@host).
    """
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        line = _os_error_line(exc)
    elif isinstance(exc, USER_ERRORS):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        line = str(message)
    else:
        line = None
    if line is None:
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
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Gpt2loadError(
                f"--device {spec}: no CUDA GPU is available here (torch.cuda.is_available() "
                f"is False, torch {torch.__version__}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise Gpt2loadError(f"--device {spec}: only {count} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise Gpt2loadError(
                f"--device {spec}: Apple's MPS backend is not available on this machine or "
                f"PyTorch build; use --device cpu"
            )
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise Gpt2loadError(f"--device {spec}: no {device.type} device is available here")


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
        line = user_error_line(exc)
        if line is None:
            raise
        print(f"gpt2load {args.command}: error: {line}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
