"""An interactive prompt loop: type a prompt, watch the continuation stream in.

Settings change live through slash commands, so trying a temperature or a
top-k means typing one line, not restarting and reloading the model. The loop
also reads prompts piped into stdin (one per line), which is how it is tested.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TextIO


@dataclass
class Settings:
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    max_new_tokens: int = 200
    seed: int | None = None


def _optional(parse: Callable[[str], float | int]) -> Callable[[str], float | int | None]:
    return lambda text: None if text.lower() in ("none", "off") else parse(text)


def _checked(parse, ok: Callable[[object], bool], rule: str):
    def parse_and_check(text: str):
        value = parse(text)
        if value is not None and not ok(value):
            raise ValueError(rule)
        return value

    return parse_and_check


# command -> (settings field, parser that raises ValueError with the rule on bad input)
COMMANDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "/temp": ("temperature", _checked(float, lambda v: v >= 0, "must be >= 0 (0 is greedy)")),
    "/topk": ("top_k", _checked(_optional(int), lambda v: v >= 1, "must be >= 1, or none")),
    "/topp": (
        "top_p",
        _checked(_optional(float), lambda v: 0 < v <= 1, "must be in (0, 1], or none"),
    ),
    "/max": ("max_new_tokens", _checked(int, lambda v: v >= 1, "must be >= 1")),
    "/seed": ("seed", _checked(_optional(int), lambda v: v >= 0, "must be >= 0, or none")),
}

HELP = """commands:
  /temp T     sampling temperature (0: greedy)
  /topk K     sample from the K likeliest tokens (none: all)
  /topp P     nucleus sampling threshold in (0, 1] (none: off)
  /max N      new tokens per answer
  /seed S     fixed seed for reproducible answers (none: random)
  /settings   show the current settings
  /help       this text
  /quit       leave (Ctrl-D too); Ctrl-C stops a generation"""

# Keys of finetune's run config.toml that set sampling defaults.
RUN_CONFIG_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "sample_tokens": "max_new_tokens",
}


def settings_from_run(checkpoint: str | os.PathLike[str]) -> Settings:
    """Defaults from the run that produced ``checkpoint`` (``RUN/config.toml``), when there is one."""
    settings = Settings()
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "config.toml", folder.parent / "config.toml"):
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return settings
            for key, name in RUN_CONFIG_KEYS.items():
                value = data.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    setattr(settings, name, value)
            return settings
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

    def command(self, line: str) -> bool:
        """Apply one slash command; False means leave the console."""
        name, _, value = line.strip().partition(" ")
        name = name.lower()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/settings":
            self.show_settings()
        elif name in COMMANDS:
            field_name, parse = COMMANDS[name]
            if not value.strip():
                self.say(f"error: {name} needs a value, e.g. {name} {self._example(name)}")
                return True
            try:
                setattr(self.settings, field_name, parse(value.strip()))
            except ValueError as exc:
                rule = str(exc) if not str(exc).startswith(("could not", "invalid")) else ""
                self.say(
                    f"error: bad value {value.strip()!r} for {name}{': ' + rule if rule else ''}"
                )
                return True
            self.say(f"{field_name} = {getattr(self.settings, field_name)}")
        else:
            self.say(f"error: unknown command {name!r}; /help lists the commands")
        return True

    @staticmethod
    def _example(name: str) -> str:
        return {"/temp": "0.8", "/topk": "40", "/topp": "0.9", "/max": "200", "/seed": "1"}[name]

    def answer(self, prompt: str) -> None:
        """Stream a continuation; Ctrl-C ends it early and returns to the prompt."""
        from .commands._common import encode_prompt
        from .generation import stream
        from .tokenizer import StreamDecoder

        s = self.settings
        idx = encode_prompt(self.tokenizer, prompt, self.model.tok_emb.weight.device)
        decoder = StreamDecoder(self.tokenizer)
        self.out.write(prompt)
        try:
            for token in stream(
                self.model,
                idx,
                s.max_new_tokens,
                temperature=s.temperature,
                top_k=s.top_k,
                top_p=s.top_p,
                seed=s.seed,
            ):
                self.out.write(decoder.push(int(token[0])))
                self.out.flush()
            self.say(decoder.flush())
        except KeyboardInterrupt:
            self.say(decoder.flush() + "\n[stopped]")

    def handle(self, line: str) -> bool:
        line = line.rstrip("\n")
        if line.startswith("/"):
            return self.command(line)
        if line.strip():
            self.answer(line.replace("\\n", "\n"))
        return True

    def run(self, stdin: TextIO = sys.stdin) -> None:
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
