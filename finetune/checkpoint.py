"""Checkpoint folders ``RUN/last`` and ``RUN/best``: ``model.safetensors`` (gpt2load's native
format, so every ``gpt2load`` command reads it), ``info.json`` (for people), the tokenizer's
files, and ``trainer.pt`` (what an exact resume needs beyond the weights, read back with
``weights_only=True`` and checked key by key, so a damaged file is named with its fault).

A folder is written whole under a temporary name, then swapped in by renames, so a crash or a
second Ctrl-C mid-save leaves the previous checkpoint intact (between the renames it sits at
``.NAME.old``, which :func:`find_checkpoint` also accepts). ``.NAME.tmp`` and ``.NAME.old`` are
the run's own names: whatever stands there (a crash's leftovers, a file, a link) is cleared
before a save uses them, a link as a link, never what it points to."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from gpt2load import NATIVE_FILENAME, CheckpointError, GPTConfig, atomic_write_text, save_native

from .errors import SaveError, is_disk_error, os_reason
from .strategy import rank_seed

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

CONFIG_FILE = "config.toml"  # the run's resolved settings, beside its checkpoints
INFO_FILE, LAST, BEST = "info.json", "last", "best"
TRAINER_FILE, TRAINER_FORMAT, TRAINER_VERSION = "trainer.pt", "finetune-trainer", 1
# What makes a folder a checkpoint folder, which a save replaces whole.
CHECKPOINT_FILES = (NATIVE_FILENAME, TRAINER_FILE)
# Trainer attributes trainer.pt holds under their own names; older files lack some (see restore).
_COPIED = ("val_loss", "evals_without_improvement", "tokens_seen", "elapsed_s")


def save_checkpoint(trainer: Trainer, name: str) -> Path | None:
    """Write ``RUN/name`` whole or not at all; the main rank's path. Every rank must call it:
    FSDP gathers weights and optimizer state from all shards, and every rank's RNG state."""
    cfg, run_dir, strategy = trainer.cfg, trainer.run_dir, trainer.strategy
    model, device = trainer.raw_model, trainer.plan.device.device
    weights = strategy.model_state(model)
    optimizer = strategy.optimizer_state(model, trainer.optimizer)
    rng = {"torch": torch.get_rng_state()}  # dropout's: batches have generators of their own
    if device.type == "cuda":
        rng["cuda_current"] = torch.cuda.get_rng_state(device)
    rng = strategy.all_gather_object(rng)
    if not strategy.is_main:
        return None
    if weights is not None:  # gathered for rank 0: no single module holds them
        model = SimpleNamespace(config=model.config, state_dict=lambda: weights)
    state = snapshot(trainer, optimizer, rng)
    info = {k: state[k] for k in ("step", "val_loss", "best_val_loss", "tokens_seen", "dataset")}
    info |= {"kind": name, "init": cfg.init, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    info["resume"] = f"finetune resume {run_dir}"
    metadata = {"source": "finetune", "step": trainer.step, "val_loss": trainer.val_loss}
    metadata["train_config"] = cfg.to_dict()
    generation = {"temperature": cfg.temperature, "top_k": cfg.top_k}
    generation["max_new_tokens"] = cfg.sample_tokens
    final, tmp, old = (run_dir / own for own in own_names(name))
    try:
        clear(tmp)
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
        if os.path.lexists(final):
            clear(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        with contextlib.suppress(OSError):  # saved: a leftover .old is cleared next time
            clear(old)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            clear(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, Exception) and is_disk_error(exc)):
            raise save_failed(run_dir, name, exc) from exc
        raise
    return final


def own_names(name: str) -> tuple[str, str, str]:
    """The names a save of ``RUN/name`` uses: the checkpoint, its temporary and its old copy."""
    return name, f".{name}.tmp", f".{name}.old"


def clear(path: Path) -> None:
    """Remove whatever stands at one of the run's own names: a folder with what it holds, a
    file or a link (the link only: nothing a link points to is followed or deleted)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


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
    return SaveError(
        f"could not save checkpoint {run_dir / name}: {reason}; {what}. Free space on that "
        f"disk (or make {run_dir} writable), then {how_to_continue(run_dir)}"
    )


def how_to_continue(run_dir: Path) -> str:
    """After a failed write: resume when there is a ``last`` to resume from."""
    resumable = find_checkpoint(run_dir, LAST) is not None
    return f"`finetune resume {run_dir}`" if resumable else "start the run again"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # platforms without directory fds skip it
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def find_checkpoint(run_dir: str | os.PathLike[str], name: str = LAST) -> Path | None:
    """``run_dir/name``, or the copy a save interrupted between its two renames left; never
    through a link, which would read a checkpoint from outside the run folder."""
    for candidate in (Path(run_dir) / name, Path(run_dir) / f".{name}.old"):
        if candidate.is_symlink():
            continue
        if all((candidate / filename).is_file() for filename in CHECKPOINT_FILES):
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


def snapshot(trainer: Trainer, optimizer_state: dict, rng_ranks: list[dict]) -> dict[str, Any]:
    """The trainer state, with the optimizer's as the strategy gathered it and every rank's RNG."""
    run = trainer.wandb.run if trainer.wandb else None
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
        **{key: getattr(trainer, key) for key in _COPIED},
        "config": trainer.cfg.to_dict(),
        "model_config": trainer.raw_model.config.to_dict(),
        "dataset": str(trainer.data.folder.resolve()),
        "wandb_run_id": getattr(run, "id", None) if run else trainer.wandb_run_id,
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
    for key in _COPIED:  # checked by read_trainer_state; absent: a new run's value
        setattr(trainer, key, state.get(key, getattr(trainer, key)))
    trainer.wandb_run_id = state.get("wandb_run_id")
    # Each rank continues its own random streams when the process count is unchanged;
    # otherwise the other ranks get fresh seeds, which only changes dropout masks.
    per_rank, device = state.get("rng_ranks") or [state["rng"]], trainer.plan.device.device
    same = len(per_rank) == strategy.world_size
    rng, gpu = per_rank[strategy.rank] if same else state["rng"], device.index or 0
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda_current" in rng:
        torch.cuda.set_rng_state(rng["cuda_current"], device)
    elif device.type == "cuda" and len(rng.get("cuda", ())) > gpu:  # older files: every GPU's
        torch.cuda.set_rng_state(rng["cuda"][gpu], device)
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
