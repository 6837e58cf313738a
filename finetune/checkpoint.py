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
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2load.config import GPTConfig
from gpt2load.fileio import atomic_path, atomic_write_text
from gpt2load.model import GPT
from gpt2load.native import NATIVE_FILENAME, save_native

from .errors import CheckpointError

TRAINER_FILE = "trainer.pt"
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
) -> Path:
    """Write ``run_dir/name`` (model, trainer state, info) as one atomic swap.

    ``model_state``, when given, is written instead of ``model.state_dict()``:
    under FSDP the module only holds this rank's shards, and the whole state
    has been gathered for rank 0. ``extra_files`` (name -> source) are copied in,
    so that the tokenizer travels with the weights and the folder works alone.
    """
    if model_state is not None:
        model = _GatheredModel(model.config, model_state)  # type: ignore[arg-type]
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    old = run_dir / f".{name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_native(model, tmp, model_metadata)
        state = {"format": TRAINER_FORMAT, "version": TRAINER_VERSION, **trainer_state}
        with atomic_path(tmp / TRAINER_FILE) as path:
            torch.save(state, path)
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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
    path = folder / TRAINER_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {TRAINER_FILE}; it cannot be resumed") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != TRAINER_FORMAT:
        raise CheckpointError(f"{path} is not a finetune trainer state")
    state["loaded_from"] = str(path)  # for errors about its contents, later
    return state


def read_model_config(folder: Path) -> GPTConfig:
    """The config stored in a native ``model.safetensors``, without reading the tensors."""
    from safetensors import safe_open

    path = folder / NATIVE_FILENAME
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if "config" not in meta:
        raise CheckpointError(f"{path} carries no model config; it was not written by gpt2load")
    return GPTConfig.from_dict(json.loads(meta["config"]))


def describe_shape(config: GPTConfig) -> str:
    return (
        f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}, "
        f"context={config.context_length}, vocab={config.vocab_size}"
    )


def same_shape(a: GPTConfig, b: GPTConfig) -> bool:
    return not a.shape_differences(b)


def load_model_weights(model: GPT, folder: Path) -> None:
    """Copy a native checkpoint's weights into ``model``, which must be of the same size."""
    from safetensors.torch import load_file

    stored = read_model_config(folder)
    if not same_shape(stored, model.config):
        raise CheckpointError(
            f"checkpoint {folder} holds a model of another size ({describe_shape(stored)}) "
            f"than this run's ({describe_shape(model.config)})"
        )
    state = load_file(str(folder / NATIVE_FILENAME), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "out_head.weight"]  # tied to tok_emb, stored once
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.tie_weights()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
