"""What resuming needs beyond the weights: ``trainer.pt``, written with every checkpoint.

It holds the optimizer, scheduler and grad scaler, the step, the data position, the
early-stopping state, every random generator and the run's settings, so a resumed run
continues exactly. It is read back with ``torch.load(weights_only=True)`` and checked key by key,
so a damaged or hand-edited file is named with its fault, not a traceback deep in the restore.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gpt2load import CheckpointError, GPTConfig

from .errors import os_reason
from .strategy import rank_seed

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

TRAINER_FILE = "trainer.pt"
TRAINER_FORMAT = "finetune-trainer"
TRAINER_VERSION = 1


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


def snapshot(
    trainer: Trainer, optimizer_state: dict | None = None, rng_ranks: list[dict] | None = None
) -> dict[str, Any]:
    """What resuming needs beyond the weights (several processes: the gathered optimizer
    state and every rank's RNG states)."""
    cfg = trainer.cfg
    wandb = trainer.wandb
    state = {
        "step": trainer.step,
        "optimizer": trainer.optimizer.state_dict() if optimizer_state is None else optimizer_state,
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "rng": rng_ranks[0] if rng_ranks else rng_state(),
        "data": {
            "position": trainer.data_position,
            "seed": cfg.seed,
            "grad_accum": cfg.grad_accum,
            "batch_size": cfg.batch_size,
            "block_size": cfg.block_size,
            "source_key": trainer.data_key,
        },
        "best_val_loss": None if math.isinf(trainer.best_val_loss) else trainer.best_val_loss,
        "val_loss": trainer.last_val_loss,
        "evals_without_improvement": trainer.evals_without_improvement,
        "tokens_seen": trainer.tokens_seen,
        "elapsed_s": trainer.elapsed_s,
        "config": cfg.to_dict(),
        "model_config": trainer.raw_model.config.to_dict(),
        "dataset": str(trainer.data.folder.resolve()),
        "wandb_run_id": wandb.run_id if wandb and wandb.run else trainer.wandb_run_id,
        "world_size": trainer.strategy.world_size,
        "derived": list(trainer.plan.derived),
    }
    if rng_ranks and len(rng_ranks) > 1:
        state["rng_ranks"] = rng_ranks
    return state


def restore(trainer: Trainer, state: dict[str, Any]) -> None:
    """Put a trainer back where :func:`snapshot` left it: optimizer, schedule (the config's, so
    a resume may train longer or at another lr), scaler, counters and every random stream."""
    source = state.get("loaded_from", "the trainer state")
    trainer.strategy.load_optimizer_state(
        trainer.raw_model, trainer.optimizer, state["optimizer"], source
    )
    settings = dict(vars(trainer._schedule))
    trainer.scheduler.load_state_dict(state["scheduler"])
    vars(trainer._schedule).update(settings)  # the (maybe extended) config's, not the file's
    # The peak lr is the config's too: a resume with a lower --lr must train at it.
    trainer.scheduler.base_lrs = [trainer.cfg.lr for _ in trainer.optimizer.param_groups]
    for group in trainer.optimizer.param_groups:
        group["initial_lr"] = trainer.cfg.lr
        group["lr"] = trainer.cfg.lr * trainer._schedule(trainer.scheduler.last_epoch)
    if state.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = trainer.start_step = int(state["step"])
    trainer.data_position = int(state["data"]["position"])
    best = state.get("best_val_loss")
    trainer.best_val_loss = math.inf if best is None else float(best)
    trainer.evals_without_improvement = int(state.get("evals_without_improvement", 0))
    trainer.tokens_seen = int(state.get("tokens_seen", 0))
    trainer.elapsed_s = float(state.get("elapsed_s", 0.0))
    trainer.last_val_loss, trainer.wandb_run_id = state.get("val_loss"), state.get("wandb_run_id")
    # Each rank continues its own random streams when the process count is unchanged;
    # otherwise the other ranks get fresh seeds, which only changes dropout masks.
    per_rank, strategy = state.get("rng_ranks"), trainer.strategy
    if not strategy.is_distributed:
        set_rng_state(state["rng"])
    elif per_rank and len(per_rank) == strategy.world_size:
        set_rng_state(per_rank[strategy.rank], all_devices=False)
    else:
        set_rng_state(state["rng"], all_devices=False)
        if strategy.rank:
            torch.manual_seed(rank_seed(trainer.cfg.seed, strategy.rank, trainer.step))


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
