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
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2load import (
    NATIVE_FILENAME,
    CheckpointError,
    GPTConfig,
    atomic_path,
    atomic_write_text,
    save_native,
)

from .errors import SaveError, is_disk_error, os_reason

TRAINER_FILE = "trainer.pt"
CONFIG_FILE = "config.toml"  # the run's resolved settings, beside its checkpoints
INFO_FILE = "info.json"
TRAINER_FORMAT = "finetune-trainer"
TRAINER_VERSION = 1
LAST = "last"
BEST = "best"


# ------------------------------------------------------------------ RNG
def rng_state(all_devices: bool = True) -> dict[str, Any]:
    """Every random generator a training step may draw from (dropout, numpy, python).

    ``all_devices=False`` records only the current GPU's generator: a rank of a
    data-parallel run uses one GPU, and asking for every GPU's state would make
    each rank touch all of them.
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if all_devices:
            state["cuda"] = torch.cuda.get_rng_state_all()
        else:
            state["cuda_current"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], all_devices: bool = True) -> None:
    """Restore :func:`rng_state`; ``all_devices=False`` leaves other GPUs' generators alone."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if not torch.cuda.is_available():
        return
    if "cuda_current" in state:
        torch.cuda.set_rng_state(state["cuda_current"])
    elif "cuda" in state and all_devices:
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _numpy_state() -> tuple:
    # Stored as tensors and plain numbers so torch.load(weights_only=True) can read it back.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _python_state() -> tuple:
    version, internal, gauss = random.getstate()
    return (version, list(internal), gauss)


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


# ------------------------------------------------------------------ load
def find_checkpoint(run_dir: str | os.PathLike[str], name: str = LAST) -> Path | None:
    """``run_dir/name``, or the copy a save interrupted between its two renames left."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / name, run_dir / f".{name}.old"):
        if (candidate / NATIVE_FILENAME).is_file() and (candidate / TRAINER_FILE).is_file():
            return candidate
    return None


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """``folder/trainer.pt``, checked to hold what resuming reads from it, so a damaged
    or hand-edited file is named with its fault instead of failing deep in the restore."""
    path = folder / TRAINER_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {TRAINER_FILE}; it cannot be resumed") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {os_reason(exc)}") from None
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file; it cannot be resumed")
    if size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): the save that wrote it was cut short or its disk was "
            f"full, so the run cannot be resumed from it. {_weights_advice(folder)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"cannot read {path} ({size:,} bytes; {reason}): it is damaged or not a trainer "
            f"state. {_weights_advice(folder)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != TRAINER_FORMAT:
        raise CheckpointError(f"{path} is not a finetune trainer state")
    problems = _state_problems(state)
    if problems:
        raise CheckpointError(
            f"{path} is damaged or was edited: {'; '.join(problems[:4])}. It cannot be "
            f"resumed; {_weights_advice(folder)}"
        )
    state["loaded_from"] = str(path)  # for errors about its contents, later
    return state


def _weights_advice(folder: Path) -> str:
    return (
        f"Its weights can still start a new run: finetune pretrain --init {folder} "
        f"--out NEW_RUN ..."
    )


_Types = type | tuple[type, ...]
# What resuming reads from trainer.pt: key -> accepted types (None: may be absent).
_REQUIRED: dict[str, _Types] = {
    "step": int,
    "optimizer": dict,
    "scheduler": dict,
    "rng": dict,
    "data": dict,
    "config": dict,
    "model_config": dict,
}
_OPTIONAL: dict[str, _Types] = {
    "scaler": (dict, type(None)),
    "best_val_loss": (int, float, type(None)),
    "val_loss": (int, float, type(None)),
    "evals_without_improvement": int,
    "tokens_seen": int,
    "elapsed_s": (int, float),
    "dataset": (str, type(None)),
    "wandb_run_id": (str, type(None)),
    "rng_ranks": list,
    "world_size": int,
    "derived": list,
}


def _state_problems(state: dict[str, Any]) -> list[str]:
    """What is missing or of the wrong type in a trainer state (empty when it is sound)."""
    problems = []

    def check(where: str, value: Any, types: _Types) -> None:
        ok = isinstance(value, types) and not (
            isinstance(value, bool) and bool not in _tuple(types)
        )
        if not ok:
            problems.append(
                f"{where} is {type(value).__name__} {_short(value)}, not {_names(types)}"
            )
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            problems.append(f"{where} is negative ({value})")

    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        problems.append(f"it lacks {', '.join(repr(k) for k in missing)}")
    for key, types in _REQUIRED.items():
        if key in state:
            check(repr(key), state[key], types)
    for key, types in _OPTIONAL.items():
        if key in state:
            check(repr(key), state[key], types)
    data = state.get("data")
    if isinstance(data, dict):
        if "position" not in data:
            problems.append("'data' lacks 'position'")
        else:
            check("data['position']", data["position"], int)
    rng = state.get("rng")
    if isinstance(rng, dict) and not isinstance(rng.get("torch"), torch.Tensor):
        problems.append("'rng' lacks the torch generator state")
    for key in ("optimizer", "scheduler"):
        value = state.get(key)
        if isinstance(value, dict) and not value:
            problems.append(f"{key!r} is empty")
    model_config = state.get("model_config")
    if isinstance(model_config, dict):
        try:
            GPTConfig.from_dict(model_config)
        except Exception as exc:  # whatever the config class objects to, it is this file's fault
            problems.append(f"'model_config' is not a model config ({exc})")
    return problems


def _tuple(types: _Types) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: _Types) -> str:
    names = {"NoneType": "None", "int": "an integer", "float": "a number", "dict": "a table"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in _tuple(types))


def _short(value: Any) -> str:
    text = repr(value)
    return f"({text[:40]}{'...' if len(text) > 40 else ''})"


def read_info(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``info.json`` summary; a courtesy, so anything wrong with it is {}."""
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
