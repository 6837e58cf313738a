"""Settings from a TOML file and from flags, both checked by :mod:`finetune.config`'s rules. A
``--config`` file sits between the defaults and the flags, so an absent flag stays out of the
namespace rather than filling in its default. A run's ``config.toml`` is such a file."""

from __future__ import annotations

import argparse
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import (
    FIELDS,
    GROUP_TITLES,
    SUBCOMMAND_DEFAULTS,
    TrainConfig,
    coerce_value,
    coerce_values,
    field_type,
)
from .errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few lines; /dev/zero never ends
_OWN_DEFAULT = re.compile(r" \(default[^)]*\)")  # a field's own words on its default


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file (top-level keys or a ``[train]`` table). Only a regular text
    file is read, and at most :data:`MAX_CONFIG_BYTES` of it: a folder, device or FIFO given
    by mistake is refused rather than read for ever."""
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"config file {path} is {what}; give a .toml file")
    with os.fdopen(fd, "rb", buffering=0) as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a "
            f"settings file is a few lines of TOML"
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not text (byte {exc.start} is not UTF-8); give a .toml file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be settings") from None
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return coerce_values(data, source=f"config file {path}")


def to_toml(config: TrainConfig) -> str:
    """The config as TOML that ``--config`` reads back: an unset number whose default is set
    is written "none" (TOML has no null); other unset fields are left out."""
    import tomli_w

    values = {
        k: "none" if v is None else v
        for k, v in config.to_dict().items()
        if v is not None or FIELDS[k].default is not None
    }
    header = "# finetune run configuration; reuse with: finetune pretrain --config this-file\n"
    return header + tomli_w.dumps(values)


def flag_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed flags as settings, checked like a file's but each error naming its flag."""
    return {k: coerce_value(k, v, source="--" + k.replace("_", "-")) for k, v in flags.items()}


def build_config(
    command: str, flags: Mapping[str, Any], config_file: str | os.PathLike[str] | None = None
) -> TrainConfig:
    """Merge the layers: field defaults < sub-command defaults < TOML file < flags."""
    values = dict(SUBCOMMAND_DEFAULTS.get(command, {}))
    values.update(load_toml(config_file) if config_file is not None else {})
    return TrainConfig(**values | flag_values(flags))


def _none_or(base: type):
    def convert(text: str):
        return None if text.strip().lower() in ("none", "null", "") else base(text)

    convert.__name__ = base.__name__  # argparse names the type in its error message
    return convert


def add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    defaults: Mapping[str, Any] | None = None,
    include: Iterable[str] | None = None,
    hidden: Iterable[str] = (),
    show_defaults: bool = True,
    helps: Mapping[str, str] | None = None,
) -> None:
    """One flag per field (``include``: only those), under its section's title. ``defaults``
    are the command's own, said instead of the field's, and ``helps`` its own words where the
    field's speak of what the command has not (``prepare`` has no --init); ``hidden`` flags
    are accepted but not listed (so a command can refuse them with its own reason);
    ``show_defaults=False`` says no default where the real one is not the field's (resume:
    the run's own setting)."""
    given, hidden, groups, fields = dict(defaults or {}), set(hidden), {}, TrainConfig()
    for name in include if include is not None else FIELDS:
        meta, (base, optional, is_list) = FIELDS[name].metadata, field_type(name)
        default = given[name] if name in given else getattr(fields, name)
        text = (helps or {}).get(name, meta["help"])
        if name in given or not show_defaults:
            text = _OWN_DEFAULT.sub("", text)
        if show_defaults and default not in (None, [], ""):
            text += f" (default: {default!r})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        kw["help"] = argparse.SUPPRESS if name in hidden else text.replace("%", "%%")
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif meta["choices"]:  # the other spellings of a choice (bf16) are choices too
            kw["choices"] = (*meta["choices"], *meta.get("aliases", ()))
            kw["type"] = str.lower if meta.get("aliases") else str
            kw["metavar"] = meta.get("metavar")
        else:
            kw["type"] = _none_or(base) if optional else base
            kw["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(base, "TEXT")
        if is_list:
            kw["nargs"] = "+"
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(GROUP_TITLES[meta["group"]])
        groups[meta["group"]].add_argument("--" + name.replace("_", "-"), **kw)
