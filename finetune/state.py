"""``trainer.pt``: what resuming needs beyond the weights, written with every checkpoint.

Optimizer, scheduler, grad scaler, step, data position, early-stopping state, the random
generators and the run's settings, so a resumed run continues exactly. It is read back with
``torch.load(weights_only=True)`` and checked key by key, so a damaged or hand-edited file is
named with its fault, not a traceback deep in the restore.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gpt2load import CheckpointError, GPTConfig

from .errors import os_reason
from .strategy import rank_seed

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

TRAINER_FILE = "trainer.pt"
TRAINER_FORMAT = "finetune-trainer"
TRAINER_VERSION = 1


def rng_state(device: torch.device) -> dict[str, Any]:
    """The generators a step draws from: dropout's, on the CPU and on this process's GPU
    (batches come from generators of their own, see :mod:`finetune.batches`)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_current"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda_current" in state:
        torch.cuda.set_rng_state(state["cuda_current"], device)
    elif len(state.get("cuda", ())) > (device.index or 0):  # older files: every GPU's, in order
        torch.cuda.set_rng_state(state["cuda"][device.index or 0], device)


def snapshot(trainer: Trainer, optimizer_state: dict, rng_ranks: list[dict]) -> dict[str, Any]:
    """The trainer state, with the optimizer's as the strategy gathered it and every rank's
    random generators."""
    cfg, wandb = trainer.cfg, trainer.wandb
    state = {
        "format": TRAINER_FORMAT,
        "version": TRAINER_VERSION,
        "step": trainer.step,
        "optimizer": optimizer_state,
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "rng": rng_ranks[0],
        "data": {"position": trainer.data_position, "source_key": trainer.data_key},
        "best_val_loss": None if math.isinf(trainer.best_val_loss) else trainer.best_val_loss,
        "val_loss": trainer.last_val_loss,
        "evals_without_improvement": trainer.evals_without_improvement,
        "tokens_seen": trainer.tokens_seen,
        "elapsed_s": trainer.elapsed_s,
        "config": cfg.to_dict(),
        "model_config": trainer.raw_model.config.to_dict(),
        "dataset": str(trainer.data.folder.resolve()),
        "wandb_run_id": wandb.run_id if wandb and wandb.run else trainer.wandb_run_id,
        "derived": list(trainer.plan.derived),
    }
    return state | ({"rng_ranks": rng_ranks} if len(rng_ranks) > 1 else {})


def restore(trainer: Trainer, state: dict[str, Any]) -> None:
    """Put a trainer back where :func:`snapshot` left it. The schedule and the peak lr are the
    config's, not the file's, so a resume may train longer or at another (lower) lr."""
    cfg, strategy = trainer.cfg, trainer.strategy
    source = state.get("loaded_from", "the trainer state")
    strategy.load_optimizer_state(trainer.raw_model, trainer.optimizer, state["optimizer"], source)
    groups = trainer.optimizer.param_groups  # new ones: loading replaces them
    trainer.step = trainer.start_step = trainer.scheduler.last_epoch = int(state["step"])
    trainer.scheduler.base_lrs = [cfg.lr for _ in groups]
    for group in groups:
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * trainer.scheduler.lr_lambdas[0](trainer.step)
    if state.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.data_position = int(state["data"]["position"])
    best = state.get("best_val_loss")
    trainer.best_val_loss = math.inf if best is None else float(best)
    trainer.evals_without_improvement = int(state.get("evals_without_improvement", 0))
    trainer.tokens_seen = int(state.get("tokens_seen", 0))
    trainer.elapsed_s = float(state.get("elapsed_s", 0.0))
    trainer.last_val_loss, trainer.wandb_run_id = state.get("val_loss"), state.get("wandb_run_id")
    # Each rank continues its own random streams when the process count is unchanged;
    # otherwise the other ranks get fresh seeds, which only changes dropout masks.
    per_rank, device = state.get("rng_ranks") or [state["rng"]], trainer.plan.device.device
    same = len(per_rank) == strategy.world_size
    _set_rng_state(per_rank[strategy.rank] if same else state["rng"], device)
    if strategy.rank and not same:
        torch.manual_seed(rank_seed(cfg.seed, strategy.rank, trainer.step))


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """``folder/trainer.pt``, checked to hold what resuming reads from it."""
    path = folder / TRAINER_FILE
    advice = f"Its weights can still start a new run: finetune pretrain --init {folder} "
    advice += "--out NEW_RUN ..."
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
            f"full, so the run cannot be resumed from it. {advice}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"cannot read {path} ({size:,} bytes; {reason}): it is damaged or not a trainer "
            f"state. {advice}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != TRAINER_FORMAT:
        raise CheckpointError(f"{path} is not a finetune trainer state")
    if problems := _problems(state):
        raise CheckpointError(
            f"{path} is damaged or was edited: {'; '.join(problems[:4])}. It cannot be "
            f"resumed; {advice}"
        )
    return state | {"loaded_from": str(path)}  # for errors about its contents, later


_NUMBER, _NONE = (int, float), type(None)
# What resuming reads from trainer.pt, with the types it accepts; the first seven are required.
# fmt: off
_KEYS: dict[str, tuple[type, ...]] = {
    "step": (int,), "optimizer": (dict,), "scheduler": (dict,), "rng": (dict,), "data": (dict,),
    "config": (dict,), "model_config": (dict,), "scaler": (dict, _NONE),
    "best_val_loss": (*_NUMBER, _NONE), "val_loss": (*_NUMBER, _NONE), "elapsed_s": _NUMBER,
    "evals_without_improvement": (int,), "tokens_seen": (int,), "dataset": (str, _NONE),
    "wandb_run_id": (str, _NONE), "rng_ranks": (list,), "world_size": (int,), "derived": (list,),
}
# fmt: on
_TYPE_NAMES = {int: "an integer", float: "a number", dict: "a table", _NONE: "None"}


def _problems(state: dict[str, Any]) -> list[str]:
    """What is missing or of the wrong type in a trainer state (empty when it is sound)."""
    missing = [repr(key) for key in list(_KEYS)[:7] if key not in state]
    problems = [f"it lacks {', '.join(missing)}"] if missing else []
    checks = [(repr(key), state[key], types) for key, types in _KEYS.items() if key in state]
    data, rng = state.get("data"), state.get("rng")
    if isinstance(data, dict) and "position" not in data:
        problems.append("'data' lacks 'position'")
    elif isinstance(data, dict):
        checks.append(("data['position']", data["position"], (int,)))
    for where, value, types in checks:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            text, names = repr(value), " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            text = text if len(text) <= 40 else text[:40] + "..."
            problems.append(f"{where} is {type(value).__name__} ({text}), not {names}")
        elif isinstance(value, int) and value < 0:
            problems.append(f"{where} is negative ({value})")
    if isinstance(rng, dict) and not isinstance(rng.get("torch"), torch.Tensor):
        problems.append("'rng' lacks the torch generator state")
    problems += [f"{k!r} is empty" for k in ("optimizer", "scheduler") if state.get(k) == {}]
    if isinstance(state.get("model_config"), dict):
        try:
            GPTConfig.from_dict(state["model_config"])
        except Exception as exc:  # whatever the config class objects to, it is this file's fault
            problems.append(f"'model_config' is not a model config ({exc})")
    return problems
