"""An interactive prompt loop: type a prompt, watch the continuation stream in.

Settings change live through slash commands, so trying a temperature or a
top-k means typing one line, not restarting and reloading the model. The loop
also reads prompts piped into stdin (one per line), which is how it is tested.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TextIO

from .generation import MAX_SEED


@dataclass
class Settings:
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    max_new_tokens: int = 200
    seed: int | None = None


@dataclass(frozen=True)
class Rule:
    """One live setting: its field, how to read it from text, and what values it takes."""

    field: str
    parse: Callable[[str], object]
    ok: Callable[[object], bool]
    rule: str
    optional: bool = False  # "none"/"off" unsets it

    def check(self, value: object) -> object:
        """``value`` if allowed, else ``ValueError(rule)``."""
        if value is None and self.optional:
            return None
        if value is None or isinstance(value, bool) or not self.ok(value):
            raise ValueError(self.rule)
        return value

    def read(self, text: str) -> object:
        """Parse and check ``text``; ``ValueError(rule)`` on anything unreadable or out of range."""
        text = text.strip()
        if self.optional and text.lower() in ("none", "off"):
            return None
        try:
            value = self.parse(text)
        except ValueError:
            raise ValueError(self.rule) from None
        return self.check(value)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# command -> the setting it changes; the same rules check start-up flags and run configs.
COMMANDS: dict[str, Rule] = {
    "/temp": Rule(
        "temperature", float, lambda v: _finite(v) and v >= 0, "must be a number >= 0 (0 is greedy)"
    ),
    "/topk": Rule(
        "top_k", int, lambda v: isinstance(v, int) and v >= 1, "must be >= 1, or none", True
    ),
    "/topp": Rule(
        "top_p", float, lambda v: _finite(v) and 0 < v <= 1, "must be in (0, 1], or none", True
    ),
    "/max": Rule("max_new_tokens", int, lambda v: isinstance(v, int) and v >= 1, "must be >= 1"),
    "/seed": Rule(
        "seed",
        int,
        lambda v: isinstance(v, int) and 0 <= v < MAX_SEED,
        "must be in [0, 2**63), or none",
        True,
    ),
}
RULES: dict[str, Rule] = {rule.field: rule for rule in COMMANDS.values()}
EXAMPLES = {"/temp": "0.8", "/topk": "40", "/topp": "0.9", "/max": "200", "/seed": "1"}

HELP = """commands:
  /temp T     sampling temperature (0: greedy)
  /topk K     sample from the K likeliest tokens (none: all)
  /topp P     nucleus sampling threshold in (0, 1] (none: off)
  /max N      new tokens per answer
  /seed S     fixed seed for reproducible answers (none: random)
  /settings   show the current settings
  /help       this text
  /quit       leave (Ctrl-D too); Ctrl-C stops a generation"""


def settings_from_checkpoint(checkpoint: str | os.PathLike[str]) -> Settings:
    """Defaults from the sampling settings that travel with ``checkpoint`` (a fine-tuned
    model's, or a Hugging Face ``generation_config.json``; see
    :func:`gpt2load.native.generation_config`). Values a setting does not accept are
    skipped, leaving that setting at its default."""
    from .native import generation_config

    settings = Settings()
    for name, value in generation_config(checkpoint).items():
        rule = RULES[name]
        try:
            if name == "temperature" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            setattr(settings, name, rule.check(value))
        except ValueError:
            continue
    return settings


class Console:
    """The loop's state: a loaded model, its tokenizer and the live settings."""

    def __init__(self, model, tokenizer, settings: Settings, out: TextIO = sys.stdout) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.out = out

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def show_settings(self) -> None:
        self.say("  ".join(f"{f.name}={getattr(self.settings, f.name)}" for f in fields(Settings)))

    def set(self, command: str, text: str) -> None:
        """Apply ``/command VALUE`` to the settings; ``ValueError`` with the rule when bad."""
        rule = COMMANDS[command]
        setattr(self.settings, rule.field, rule.read(text))

    def command(self, line: str) -> bool:
        """Apply one slash command; False means leave the console."""
        name, _, value = line.strip().partition(" ")
        name, value = name.lower(), value.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/settings":
            self.show_settings()
        elif name in COMMANDS:
            if not value:
                self.say(f"error: {name} needs a value, e.g. {name} {EXAMPLES[name]}")
                return True
            try:
                self.set(name, value)
            except ValueError as exc:
                self.say(f"error: bad value {_one_line(value)!r} for {name}: {exc}")
                return True
            field_name = COMMANDS[name].field
            self.say(f"{field_name} = {getattr(self.settings, field_name)}")
        else:
            self.say(f"error: unknown command {_one_line(name)!r}; /help lists the commands")
        return True

    def answer(self, prompt: str) -> None:
        """Stream a continuation; Ctrl-C ends it early and returns to the prompt.

        Any other error ends this answer with a one-line message; the console goes on.
        """
        from .generation import stream
        from .tokenizer import StreamDecoder, prompt_tensor

        s = self.settings
        decoder = StreamDecoder(self.tokenizer)
        self.out.write(prompt)
        self.out.flush()
        try:
            idx = prompt_tensor(self.tokenizer, prompt, self.model.tok_emb.weight.device)
            for token in stream(
                self.model,
                idx,
                s.max_new_tokens,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                seed=s.seed,
                vocab_limit=self.tokenizer.n_vocab,
            ):
                self.out.write(decoder.push(int(token[0])))
                self.out.flush()
            self.say(decoder.flush())
        except KeyboardInterrupt:
            self.say(decoder.flush() + "\n[stopped]")
        except Exception as exc:  # one bad answer must not end the session
            self.say(decoder.flush())
            self.say(f"error: {type(exc).__name__}: {_one_line(str(exc))}")

    def handle(self, line: str) -> bool:
        line = line.rstrip("\n")
        if line.startswith("/"):
            return self.command(line)
        if line.strip():
            self.answer(line.replace("\\n", "\n"))
        return True

    def run(self, stdin: TextIO = sys.stdin) -> None:
        with _ctrl_c_interrupts():
            self._loop(stdin)

    def _loop(self, stdin: TextIO) -> None:
        interactive = stdin.isatty()
        if interactive:
            self.say("type a prompt and press Enter; /help lists the commands")
            self.show_settings()
        while True:
            try:
                line = input("> ") if interactive else stdin.readline()
            except KeyboardInterrupt:
                self.say("")
                continue
            except EOFError:
                break
            if not interactive and line == "":
                break
            if not self.handle(line):
                break


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Make Ctrl-C (SIGINT) raise ``KeyboardInterrupt`` while the console runs.

    A process started with SIGINT ignored (a background job of a non-interactive
    shell, some test runners and supervisors) inherits that, and Python then
    never installs its handler: Ctrl-C would not stop a generation. The console
    relies on it, so it installs the handler itself and restores the old one.
    """
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
