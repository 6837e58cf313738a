"""Checkpoint folders ``RUN/last`` and ``RUN/best``.

Each folder holds:

- ``model.safetensors``: the weights in gpt2load's native format, so
  ``gpt2load.load("RUN/best")`` and every ``gpt2load`` command read it;
- ``trainer.pt``: what resuming needs beyond the weights (optimizer, scheduler,
  grad scaler, step, RNG states, data position, early-stopping state, config);
- ``info.json``: a small human-readable summary.

A folder is written complete under a temporary name and then swapped in by
renames, so a crash or a second Ctrl-C mid-save leaves the previous checkpoint
intact. Between the two renames the old folder sits at ``.NAME.old``, which
:func:`find_checkpoint` also accepts.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gpt2load import (
    NATIVE_FILENAME,
    GPTConfig,
    atomic_path,
    atomic_write_text,
    save_native,
)

from .errors import SaveError, is_disk_error, os_reason
from .state import TRAINER_FILE, TRAINER_FORMAT, TRAINER_VERSION, rng_state, snapshot

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

CONFIG_FILE = "config.toml"  # the run's resolved settings, beside its checkpoints
INFO_FILE = "info.json"
LAST = "last"
BEST = "best"


# ------------------------------------------------------------------ save
def write_checkpoint(
    run_dir: Path,
    name: str,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    info: dict[str, Any],
    model_metadata: dict[str, Any] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    extra_files: Mapping[str, Path] | None = None,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/name`` (model, trainer state, info) as one atomic swap.

    ``model_state``, when given, is written instead of ``model.state_dict()``:
    under FSDP the module only holds this rank's shards, and the whole state
    has been gathered for rank 0. ``extra_files`` (name -> source) are copied in,
    so that the tokenizer travels with the weights and the folder works alone.
    """
    if model_state is not None:
        model = _GatheredModel(model.config, model_state)  # type: ignore[arg-type]
    final = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    old = run_dir / f".{name}.old"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise save_failed(run_dir, name, exc) from exc
    try:
        save_native(model, tmp, model_metadata, generation=generation)
        state = {"format": TRAINER_FORMAT, "version": TRAINER_VERSION, **trainer_state}
        with atomic_path(tmp / TRAINER_FILE) as path, path.open("wb") as fh:
            torch.save(state, fh)  # through a Python file: a full disk surfaces as an OSError
        atomic_write_text(tmp / INFO_FILE, json.dumps(info, indent=2, default=str) + "\n")
        for filename, source in (extra_files or {}).items():
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
        if isinstance(exc, Exception) and is_disk_error(exc):
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
    last = find_checkpoint(run_dir, LAST)
    then = f"`finetune resume {run_dir}`" if last is not None else "start the run again"
    return SaveError(
        f"could not save checkpoint {run_dir / name}: {reason}; {what}. Free space on that "
        f"disk (or make {run_dir} writable), then {then}"
    )


class _GatheredModel:
    """What ``save_native`` reads from a model (its config and state dict), for a state
    dict that no single module holds."""

    def __init__(self, config: GPTConfig, state: dict[str, torch.Tensor]) -> None:
        self.config = config
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(trainer: Trainer, name: str) -> Path | None:
    """Write checkpoint ``name`` (``last`` or ``best``). Every rank must call it: FSDP
    gathers weights and optimizer state from all shards, and every rank's RNG state is
    collected so a resume with as many processes continues each exactly."""
    strategy = trainer.strategy
    model_state = strategy.model_state(trainer.raw_model)
    optimizer_state = strategy.optimizer_state(trainer.raw_model, trainer.optimizer)
    rng_ranks = (
        strategy.all_gather_object(rng_state(all_devices=False))
        if strategy.is_distributed
        else None
    )
    if not strategy.is_main:
        return None
    best = None if math.isinf(trainer.best_val_loss) else trainer.best_val_loss
    info = {
        "kind": name,
        "step": trainer.step,
        "val_loss": trainer.last_val_loss,
        "best_val_loss": best,
        "tokens_seen": trainer.tokens_seen,
        "init": trainer.cfg.init,
        "dataset": str(trainer.data.folder),
        "saved_at": now_iso(),
        "resume": f"finetune resume {trainer.run_dir}",
    }
    metadata = {
        "source": "finetune",
        "step": trainer.step,
        "val_loss": trainer.last_val_loss,
        "train_config": trainer.cfg.to_dict(),
    }
    generation = {
        "temperature": trainer.cfg.temperature,
        "top_k": trainer.cfg.top_k,
        "max_new_tokens": trainer.cfg.sample_tokens,
    }
    return write_checkpoint(
        trainer.run_dir,
        name,
        trainer.raw_model,
        snapshot(trainer, optimizer_state, rng_ranks),
        info,
        metadata,
        model_state=model_state,
        extra_files=trainer.carry_files,
        generation=generation,
    )


# ------------------------------------------------------------------ load
def find_checkpoint(run_dir: str | os.PathLike[str], name: str = LAST) -> Path | None:
    """``run_dir/name``, or the copy a save interrupted between its two renames left."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / name, run_dir / f".{name}.old"):
        if (candidate / NATIVE_FILENAME).is_file() and (candidate / TRAINER_FILE).is_file():
            return candidate
    return None


def write_run_config(run_dir: Path, toml: str) -> None:
    """The run's resolved settings as ``RUN/config.toml``, which ``--config`` reads back."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
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


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
