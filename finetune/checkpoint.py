"""Checkpoint folders ``RUN/last`` and ``RUN/best``: ``model.safetensors`` (gpt2load's
native format, so every ``gpt2load`` command reads it), ``trainer.pt`` (see
:mod:`finetune.state`), ``info.json`` (a summary for people) and the tokenizer's files.

A folder is written whole under a temporary name, then swapped in by renames, so a crash or
a second Ctrl-C mid-save leaves the previous checkpoint intact; between the two renames it
sits at ``.NAME.old``, which :func:`find_checkpoint` also accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from gpt2load import NATIVE_FILENAME, atomic_write_text, save_native

from .errors import SaveError, is_disk_error, os_reason
from .state import TRAINER_FILE, rng_state, snapshot

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

CONFIG_FILE = "config.toml"  # the run's resolved settings, beside its checkpoints
INFO_FILE = "info.json"
LAST = "last"
BEST = "best"


def save_checkpoint(trainer: Trainer, name: str) -> Path | None:
    """Write ``RUN/name`` whole or not at all; the main rank's path. Every rank must call it:
    FSDP gathers weights and optimizer state from all shards, and every rank's RNG state is
    collected so a resume with as many processes continues each exactly."""
    cfg, run_dir, strategy = trainer.cfg, trainer.run_dir, trainer.strategy
    model = trainer.raw_model
    weights = strategy.model_state(model)
    optimizer = strategy.optimizer_state(model, trainer.optimizer)
    rng = strategy.all_gather_object(rng_state(trainer.plan.device.device))
    if not strategy.is_main:
        return None
    if weights is not None:  # gathered for rank 0: no single module holds them
        model = SimpleNamespace(config=model.config, state_dict=lambda: weights)
    state = snapshot(trainer, optimizer, rng)
    info = {k: state[k] for k in ("step", "val_loss", "best_val_loss", "tokens_seen", "dataset")}
    info |= {"kind": name, "init": cfg.init, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info["resume"] = f"finetune resume {run_dir}"
    metadata = {"source": "finetune", "step": trainer.step, "val_loss": trainer.last_val_loss}
    metadata["train_config"] = cfg.to_dict()
    generation = {"temperature": cfg.temperature, "top_k": cfg.top_k}
    generation["max_new_tokens"] = cfg.sample_tokens
    final, tmp, old = run_dir / name, run_dir / f".{name}.tmp", run_dir / f".{name}.old"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_native(model, tmp, metadata, generation=generation)
        with (tmp / TRAINER_FILE).open("wb") as fh:  # a full disk surfaces as an OSError
            torch.save(state, fh)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        for filename, source in trainer.carry_files.items():
            try:  # a convenience beside the weights: never the reason a save fails
                shutil.copyfile(source, tmp / filename)
            except OSError:
                (tmp / filename).unlink(missing_ok=True)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) or (isinstance(exc, Exception) and is_disk_error(exc)):
            raise save_failed(run_dir, name, exc) from exc
        raise
    return final


def save_failed(run_dir: Path, name: str, exc: BaseException) -> SaveError:
    """The one-line error for a checkpoint the file system would not take, saying what is
    still there and how to go on (resume only when there is a ``last`` to resume from)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    code = re.search(r"os error (\d+)", str(exc))  # safetensors' Rust errors name only this
    if cause is None and code is not None:
        cause = OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    reason = os_reason(cause) if cause is not None else " ".join(str(exc).split())
    kept = find_checkpoint(run_dir, name)
    what = f"the previous {name} checkpoint is intact" if kept else "nothing was written"
    if kept is not None and read_info(kept).get("step") is not None:
        what += f" (step {read_info(kept)['step']})"
    then = (
        f"`finetune resume {run_dir}`" if find_checkpoint(run_dir, LAST) else "start the run again"
    )
    return SaveError(
        f"could not save checkpoint {run_dir / name}: {reason}; {what}. Free space on that "
        f"disk (or make {run_dir} writable), then {then}"
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # platforms without directory fds skip it
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def find_checkpoint(run_dir: str | os.PathLike[str], name: str = LAST) -> Path | None:
    """``run_dir/name``, or the copy a save interrupted between its two renames left."""
    for candidate in (Path(run_dir) / name, Path(run_dir) / f".{name}.old"):
        if (candidate / NATIVE_FILENAME).is_file() and (candidate / TRAINER_FILE).is_file():
            return candidate
    return None


def write_run_config(run_dir: Path, toml: str) -> None:
    """The run's resolved settings as ``RUN/config.toml``, which ``--config`` reads back."""
    try:
        atomic_write_text(run_dir / CONFIG_FILE, toml)
    except OSError as exc:
        raise SaveError(
            f"cannot write {run_dir / CONFIG_FILE}: {os_reason(exc)}. Free space or make "
            f"{run_dir} writable, then run the command again"
        ) from None


def read_info(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``info.json`` summary; a courtesy, so anything wrong with it is {}."""
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
