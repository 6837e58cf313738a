"""A run is planned once: its settings (or a resumed run's record plus the changes asked for)
become one frozen :class:`Plan`, and nothing downstream derives a setting again. Planning
touches nothing, so a wrong setting fails in seconds, before any download, data preparation or
run folder; only a hub repo id for ``--init`` is fetched here (once), as its tokenizer and shape
are known only from its files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import gpt2load
from gpt2load import VOCAB_SIZE, CheckpointError, GPTConfig

from .checkpoint import LAST, TRAINER_FILE, find_checkpoint, read_trainer_state
from .config import DERIVED, FIXED_MODEL_AND_DATA, FIXED_ON_RESUME, FIXED_STREAM, TrainConfig
from .device import DeviceInfo, resolve_dtype, select_device
from .errors import ConfigError, DataError, DistributedNotSupported
from .modelinit import check_planned, describe_shape, init_folder, planned_config
from .prepare import SHAKESPEARE
from .strategy import Strategy
from .vocab import RunVocab, check_tokenizer_dir, choose_vocab

Log = Callable[[str], None]


def silent(_: str) -> None:
    """The log of every process but the main one: a message is said once, not per process."""


@dataclass(frozen=True)
class Plan:
    """Everything decided before a run touches anything."""

    cfg: TrainConfig  # every setting as the run records it (derived ones filled in)
    strategy: Strategy  # one process, DDP or FSDP, and this process's place
    device: DeviceInfo
    dtype: torch.dtype  # autocast dtype (float32: none)
    model: GPTConfig | None  # the planned shape (None: known once the model is built)
    vocab: RunVocab
    derived: tuple[str, ...]  # settings filled from others, filled again on resume
    resume: dict[str, Any] | None = None  # the trainer state a resume continues from
    resume_from: Path | None = None  # the checkpoint folder it was read from
    overwrite: bool = False  # clear an old run in the folder (a one-time act, not a setting)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out).expanduser()

    def settle(self, model: GPTConfig) -> Plan:
        """The plan once the model is built: the run records its shape and dropout."""
        shape = {k: getattr(model, k) for k in ("n_layer", "n_head", "n_embd")}
        cfg = dataclasses.replace(own_dropout(self.cfg, model), **shape)
        return dataclasses.replace(self, cfg=cfg, model=model)


def own_dropout(cfg: TrainConfig, model: GPTConfig | None) -> TrainConfig:
    """``--dropout``, else the starting checkpoint's own: the one place a run's dropout is
    decided (a new model's is filled by :meth:`TrainConfig.resolved`); the model then only
    applies it. ``model`` None: not known yet, decided when :meth:`Plan.settle` is."""
    if cfg.dropout is not None or model is None:
        return cfg
    return dataclasses.replace(cfg, dropout=model.dropout)


def single_process_plan(cfg: TrainConfig, device: DeviceInfo | None = None) -> Plan:
    """One CPU process running ``cfg`` as given (tests and benchmarks build a Trainer on it)."""
    device = device or select_device("cpu")
    cfg, dtype = dataclasses.replace(cfg.resolved(), grad_accum=cfg.grad_accum or 1), cfg.dtype
    return Plan(cfg, Strategy(), device, resolve_dtype(dtype, device), None, RunVocab(), ())


def plan_run(cfg: TrainConfig, log: Log = print) -> Plan:
    strategy = Strategy.from_env(cfg.fsdp)
    derived = tuple(k for k in DERIVED if getattr(cfg, k) is None)
    run = cfg.resolved().replace(grad_accum=cfg.grad_accum or strategy.world_size, overwrite=False)
    for source in run.data:  # a mistyped path costs no device check, download or model
        path = Path(source).expanduser()
        if source.strip().lower() != SHAKESPEARE and not path.exists():
            raise DataError(f"data path {path} does not exist")
    if run.tokenizer_dir is not None:  # a mistyped folder too, before the device line
        check_tokenizer_dir(run.tokenizer_dir)
    device, dtype = _device_for(run, strategy, log)
    weights = None if run.is_scratch else init_folder(run.init)
    vocab = choose_vocab(run.tokenizer, weights, run.data, run.tokenizer_dir)
    # A character vocabulary built from the text (None) is known once the text is prepared.
    vocab_size = (vocab.char.n_vocab if vocab.char else None) if vocab.is_char else VOCAB_SIZE
    model = planned_config(run, vocab_size)
    if model is not None:
        check_planned(run, model)  # sizes and context: before data, weights or the run folder
    run = own_dropout(run, model)
    return Plan(run, strategy, device, dtype, model, vocab, derived, overwrite=cfg.overwrite)


def plan_resume(run_dir: Path, overrides: Mapping[str, Any], log: Log = print) -> Plan:
    """Continue ``run_dir`` from its ``last`` checkpoint with ``overrides`` (never another
    model, data or batch stream). What the run derived (``min_lr`` from ``lr``) is derived
    again from the new settings; ``grad_accum`` None keeps the run's own."""
    overrides = {k: v for k, v in overrides.items() if not (k == "grad_accum" and v is None)}
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    folder = find_checkpoint(run_dir, LAST)
    if folder is None:
        raise CheckpointError(
            f"{run_dir} has no '{LAST}' checkpoint to resume (a run writes one "
            f"every --save-interval steps and when it stops)"
        )
    state = read_trainer_state(folder)
    recorded = TrainConfig.from_dict(state["config"], source=f"{folder}/{TRAINER_FILE}")
    check_fixed(recorded, overrides, run_dir)
    changes = {k: v for k, v in overrides.items() if k not in FIXED_ON_RESUME}
    # Checkpoints from before "derived" was recorded: a min_lr of exactly lr/10 is taken as
    # the derived default it almost surely is.
    guess = ["min_lr"] if recorded.min_lr == (recorded.lr or 0) / 10 else []
    derived = tuple(k for k in state.get("derived", guess) if k in DERIVED and k not in changes)
    cfg = recorded.replace(**dict.fromkeys(derived), **changes, out=str(run_dir)).resolved()
    step = int(state["step"])
    if cfg.max_iters <= step and "max_iters" in overrides:
        raise ConfigError(
            f"--max-iters {cfg.max_iters} is not beyond the run's current step {step}: "
            f"--max-iters is the step to train up to, not a number of extra steps; pass more "
            f"than {step} (e.g. --max-iters {step + max(cfg.eval_interval, 1)})"
        )
    if cfg.max_iters <= step:
        raise ConfigError(
            f"{run_dir} has already trained its {cfg.max_iters} steps; to train longer give a "
            f"larger --max-iters (e.g. finetune resume {run_dir} --max-iters {2 * step})"
        )
    strategy = Strategy.from_env(cfg.fsdp)
    device, dtype = _device_for(cfg, strategy, log)
    model = GPTConfig.from_dict(state["model_config"])
    stored = gpt2load.inspect(folder).config
    if stored.shape_differences(model):
        raise CheckpointError(
            f"{folder} is inconsistent: its weights are {describe_shape(stored)} "
            f"but its trainer state belongs to {describe_shape(model)}"
        )
    vocab = choose_vocab(
        cfg.tokenizer, folder, cfg.data, cfg.tokenizer_dir, label="the checkpoint", resumed=True
    )
    cfg = own_dropout(cfg, model)  # a record from before dropout was: the weights' own
    return Plan(cfg, strategy, device, dtype, model, vocab, derived, state, folder)


def _device_for(cfg: TrainConfig, strategy: Strategy, log: Log) -> tuple[DeviceInfo, torch.dtype]:
    """The settings checked, then this process's device (under torchrun ``cuda`` is the GPU
    of ``LOCAL_RANK``) and the dtype training will use there, both said once."""
    cfg.validate()
    say = log if strategy.is_main else silent
    if cfg.warmup_iters >= cfg.max_iters:
        say(
            f"warning: --warmup-iters {cfg.warmup_iters} >= --max-iters {cfg.max_iters}: the "
            f"learning rate rises for the whole run and never reaches --lr; lower --warmup-iters"
        )
    info = select_device(strategy.device_request(cfg.device, cfg.force_cpu), cfg.force_cpu)
    dtype = resolve_dtype(cfg.dtype, info)
    if strategy.sharded and dtype is torch.float16:
        raise DistributedNotSupported(
            "--fsdp with float16 would need a grad scaler that agrees across shards; "
            "use --dtype bfloat16 (A100, H100 and newer) or --dtype float32"
        )
    say(f"device: {info.describe()}; training in {str(dtype).removeprefix('torch.')}")
    if strategy.is_distributed:
        say(
            f"distributed: {strategy.world_size} processes ({strategy.local_world_size} on this "
            f"machine), {strategy.name}; --grad-accum {cfg.grad_accum} is split "
            f"{strategy.local_grad_accum(cfg.grad_accum)} per process"
        )
    elif cfg.fsdp:
        say("note: --fsdp shards over several processes (torchrun); one process trains whole")
    return info, dtype


def check_fixed(recorded: TrainConfig, overrides: Mapping[str, Any], run_dir: Path) -> None:
    """Settings a resume may not change are fine with the run's own value (its config.toml
    given as ``--config``); another value is refused, saying why."""
    changed: dict[str, Any] = {}
    for key in (k for k in FIXED_ON_RESUME if k in overrides):
        if key == "out" and Path(overrides[key]).expanduser().resolve() != run_dir.resolve():
            changed[key] = str(run_dir)
        elif key != "out" and overrides[key] != getattr(recorded, key):
            changed[key] = getattr(recorded, key)
    if not changed:
        return
    reasons = []
    if changed.keys() & set(FIXED_MODEL_AND_DATA):
        reasons.append("the model and data decide what the checkpoint belongs to")
    if changed.keys() & set(FIXED_STREAM):
        reasons.append(
            "seed, batch and block size decide which batches the run draws and which fixed "
            "batches it evaluates on, so the resumed run would neither continue exactly nor "
            "give val losses comparable with its best so far"
        )
    flags = ", ".join(f"--{k.replace('_', '-')} (the run has {v!r})" for k, v in changed.items())
    raise ConfigError(
        f"{flags} cannot change when resuming: {'; '.join(reasons)}. Resume without "
        f"{'it' if len(changed) == 1 else 'them'}, or start a new run from this one's weights "
        f"with --init {run_dir / LAST}"
    )
