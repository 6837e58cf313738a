"""An interactive prompt loop: type (or pipe) prompts, watch the answers stream. Slash commands
change the settings live: trying a temperature is one line, not a reload."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .generation import MAX_SEED, stream
from .model import GPT
from .tokenizer import StreamDecoder, Tokenizer, prompt_tensor


@dataclass
class Settings:
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    max_new_tokens: int = 200
    seed: int | None = None


@dataclass(frozen=True)
class Rule:
    """One live setting: its field, how to read it from text, and which values it takes."""

    field: str
    parse: Callable[[str], object]
    ok: Callable[[object], bool]
    rule: str
    optional: bool = False  # "none"/"off" unsets it

    def check(self, value: object) -> object:
        if value is None and self.optional:
            return None
        kinds = (int,) if self.parse is int else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool) or not self.ok(value):
            raise ValueError(self.rule)
        return value

    def read(self, text: str) -> object:
        text = text.strip()
        if self.optional and text.lower() in ("none", "off"):
            return None
        try:
            return self.check(self.parse(text))
        except ValueError:
            raise ValueError(self.rule) from None


# command -> the setting it changes; the same rules check chat's start-up flags.
COMMANDS: dict[str, Rule] = {
    "/temp": Rule(
        "temperature", float, lambda v: 0 <= v < math.inf, "must be a number >= 0 (0 is greedy)"
    ),
    "/topk": Rule("top_k", int, lambda v: v >= 1, "must be >= 1, or none", True),
    "/topp": Rule("top_p", float, lambda v: 0 < v <= 1, "must be in (0, 1], or none", True),
    "/max": Rule("max_new_tokens", int, lambda v: v >= 1, "must be >= 1"),
    "/seed": Rule("seed", int, lambda v: 0 <= v < MAX_SEED, "must be in [0, 2**63), or none", True),
}
RULES: dict[str, Rule] = {rule.field: rule for rule in COMMANDS.values()}
BARE = ("help", "quit", "exit")  # understood without the slash: nobody means them as a prompt
HISTORY_LENGTH = 1000
EXAMPLES = {"/temp": "0.8", "/topk": "40", "/topp": "0.9", "/max": "200", "/seed": "1"}

HELP = """commands:
  /temp T     sampling temperature (0: greedy)
  /topk K     sample from the K likeliest tokens (none: all)
  /topp P     nucleus sampling threshold in (0, 1] (none: off)
  /max N      new tokens per answer
  /seed S     fixed seed for reproducible answers (none: random)
  /settings   show the current settings
  /help       this text
  /quit       leave (Ctrl-D too); Ctrl-C stops a generation
help, quit and exit work without the slash too"""


def settings_from_checkpoint(checkpoint: str | os.PathLike[str]) -> Settings:
    """Defaults from the sampling settings that travel with ``checkpoint`` (see
    :func:`gpt2load.native.generation_config`); a value its rule refuses is skipped."""
    from .native import generation_config

    settings = Settings()
    for name, value in generation_config(checkpoint).items():
        if name == "temperature" and type(value) is int:
            value = float(value)
        with contextlib.suppress(ValueError):
            setattr(settings, name, RULES[name].check(value))
    return settings


@dataclass
class Console:
    """The loop's state: a loaded model, its tokenizer and the live settings."""

    model: GPT
    tokenizer: Tokenizer
    settings: Settings
    out: TextIO | None = None  # None: sys.stdout as it is then (a test may have replaced it)

    def say(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out or sys.stdout, flush=True)

    def show_settings(self) -> None:
        self.say("  ".join(f"{name}={value}" for name, value in vars(self.settings).items()))

    def handle(self, line: str) -> bool:
        """A prompt (``\\n`` in it is a newline) or a /command; False: leave the console."""
        line = line.rstrip("\n")
        if line.strip().lower() in BARE:
            line = "/" + line.strip().lower()
        if not line.startswith("/"):
            if line.strip():
                self.answer(line.replace("\\n", "\n"))
            return True
        name, _, value = line.strip().partition(" ")
        name, value = name.lower(), value.strip()
        rule = COMMANDS.get(name)
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/settings":
            self.show_settings()
        elif rule is None:
            self.say(f"error: unknown command {_one_line(name)!r}; /help lists the commands")
        elif not value:
            self.say(f"error: {name} needs a value, e.g. {name} {EXAMPLES[name]}")
        else:
            try:
                setattr(self.settings, rule.field, rule.read(value))
            except ValueError as exc:
                self.say(f"error: bad value {_one_line(value)!r} for {name}: {exc}")
            else:
                self.say(f"{rule.field} = {getattr(self.settings, rule.field)}")
        return True

    def answer(self, prompt: str) -> None:
        """Stream a continuation; Ctrl-C or an error ends it (in one line), not the console."""
        decoder = StreamDecoder(self.tokenizer)
        self.say(prompt, end="")
        try:
            idx = prompt_tensor(self.tokenizer, prompt, self.model.tok_emb.weight.device)
            options = vars(self.settings)
            for token in stream(self.model, idx, vocab_limit=self.tokenizer.n_vocab, **options):
                self.say(decoder.push(int(token[0])), end="")
            self.say(decoder.flush())
        except KeyboardInterrupt:
            self.say(decoder.flush() + "\n[stopped]")
        except Exception as exc:  # one bad answer must not end the session
            self.say(decoder.flush())
            self.say(f"error: {type(exc).__name__}: {_one_line(str(exc))}")

    def run(self, stdin: TextIO | None = None) -> None:
        stdin = stdin or sys.stdin
        interactive = stdin.isatty()
        editing = line_editing(history_path()) if interactive else contextlib.nullcontext()
        with _ctrl_c_interrupts(), editing:
            if interactive:
                self.say("type a prompt and press Enter; help lists the commands, Ctrl-D leaves")
                self.show_settings()
            while True:
                try:
                    line = input("> ") if interactive else stdin.readline()
                except KeyboardInterrupt:
                    self.say("")
                    continue
                except EOFError:
                    self.say("")  # the shell's prompt starts on a line of its own
                    break
                if (not interactive and line == "") or not self.handle(line):
                    break


def history_path() -> Path | None:
    """``$GPT2LOAD_CHAT_HISTORY`` (empty: None, keep none), else the user's cache folder."""
    if (moved := os.environ.get("GPT2LOAD_CHAT_HISTORY")) is not None:
        return Path(moved).expanduser() if moved else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "gpt2load" / "chat_history"


@contextlib.contextmanager
def line_editing(history: Path | None) -> Iterator[None]:
    """readline for ``input`` (where Python has it), this session's lines appended to
    ``history`` at the end (two consoles at once both keep theirs); a failure is a warning."""
    try:
        import readline
    except ImportError:  # Windows
        yield
        return
    readline.clear_history()
    readline.set_history_length(HISTORY_LENGTH)  # append_history_file cuts the file to it
    try:
        if history is not None and history.is_file():
            readline.read_history_file(history)
    except OSError as exc:
        warnings.warn(
            f"cannot read the chat history {history}: {exc.strerror or exc}", stacklevel=3
        )
    start = readline.get_current_history_length()
    try:
        yield
    finally:
        new = readline.get_current_history_length() - start
        try:
            if history is not None and new > 0:
                history.parent.mkdir(parents=True, exist_ok=True)
                history.touch()
                readline.append_history_file(new, history)
        except OSError as exc:
            warnings.warn(
                f"cannot save the chat history to {history}: {exc.strerror or exc} "
                "(GPT2LOAD_CHAT_HISTORY moves it; empty keeps none)",
                stacklevel=3,
            )


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` while the console runs, even in a process started
    with SIGINT ignored (a background job, some supervisors), where Python leaves it ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
