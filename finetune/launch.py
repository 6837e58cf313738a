"""Start or resume a run: the order of checks that makes bad input cheap.

Device first (seconds), then the run folder (locked for this process; never
clobber a run), then a memory estimate from the planned model shape (before a
multi-GB download), then data, then the model. Anything wrong stops the run
before it has written or downloaded anything it did not have to. ``--overwrite``
clears the old run only once the data and the starting weights are in memory:
``--init RUN/best --out RUN --overwrite`` reads the weights it is about to
replace, and a run that fails before training leaves the old one whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2load.config import VOCAB_SIZE
from gpt2load.model import GPT

from .checkpoint import (
    BEST,
    LAST,
    TRAINER_FILE,
    CheckpointError,
    describe_shape,
    find_checkpoint,
    load_model_weights,
    read_model_config,
    read_trainer_state,
    same_shape,
)
from .config import (
    FIXED_MODEL_AND_DATA,
    FIXED_ON_RESUME,
    FIXED_STREAM,
    ConfigError,
    TrainConfig,
)
from .data import (
    DataError,
    PreparedData,
    check_fits_context,
    data_key,
    is_prepared_folder,
    open_prepared,
    resolve_data,
)
from .device import DeviceInfo, check_memory, estimate_memory, resolve_dtype, select_device
from .distributed import DistContext, process_group
from .errors import RunFolderError
from .metrics import METRICS_FILE, PLOT_FILE
from .modelinit import check_block_size, check_planned, init_model, planned_config
from .runlock import run_folder_lock
from .train import CONFIG_FILE, SAMPLES_FILE, Callback, Trainer, TrainResult
from .vocab import RunVocab, checkpoint_files, choose_vocab, run_tokenizer, weights_folder

Log = Callable[[str], None]
RUN_FILES = (
    LAST,
    BEST,
    f".{LAST}.old",
    f".{BEST}.old",
    METRICS_FILE,
    PLOT_FILE,
    CONFIG_FILE,
    SAMPLES_FILE,
)


def check_device(cfg: TrainConfig, log: Log = print, dist: DistContext | None = None) -> DeviceInfo:
    """This process's device; under torchrun ``--device cuda`` is the GPU of ``LOCAL_RANK``."""
    dist = dist or DistContext()
    info = select_device(dist.device_request(cfg.device, cfg.force_cpu), cfg.force_cpu)
    log(f"device: {info.describe()}")
    if dist.is_distributed:
        how = "FSDP (sharded)" if cfg.fsdp else "DDP"
        log(
            f"distributed: {dist.world_size} processes ({dist.local_world_size} on this "
            f"machine), {how}; --grad-accum {cfg.grad_accum} is split "
            f"{dist.local_grad_accum(cfg.grad_accum)} per process"
        )
    elif cfg.fsdp:
        log("note: --fsdp shards over several processes (torchrun); one process trains whole")
    return info


def _silent(_: str) -> None:
    pass


def _check_memory(
    cfg: TrainConfig, info: DeviceInfo, config: Any, log: Log, dist: DistContext | None = None
) -> None:
    if config is None or not cfg.memory_check:
        return
    shards = dist.world_size if dist is not None and cfg.fsdp else 1
    estimate = estimate_memory(
        config, cfg.batch_size, cfg.block_size, resolve_dtype(cfg.dtype, info), shards
    )
    check_memory(estimate, info, cfg.batch_size, cfg.block_size)
    if info.total_memory:
        log(f"memory: estimated {estimate.describe()} of {info.total_memory / 1024**3:.1f} GiB")


def _check_run_dir(run_dir: Path, overwrite: bool) -> list[str]:
    """The run files already in ``run_dir``; refused unless ``--overwrite`` (cleared later,
    by :func:`_clear_run_dir`, once the run has read what it needs)."""
    existing = [name for name in RUN_FILES if os.path.lexists(run_dir / name)]
    if existing and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(existing)}); continue it with "
            f"`finetune resume {run_dir}`, pick another --out, or pass --overwrite to start afresh"
        )
    return existing


def _clear_run_dir(run_dir: Path) -> None:
    """Remove an old run's files (links themselves, never what they point at)."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()


def check_run_files(run_dir: Path) -> None:
    """Each file a run appends to or replaces must be a plain file (or absent): a folder in
    its place would fail mid-run, and a link would make the run write outside ``run_dir``."""
    for name in (METRICS_FILE, SAMPLES_FILE, CONFIG_FILE, PLOT_FILE):
        path = run_dir / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            kind = "a symbolic link" if path.is_symlink() else "not a plain file"
            raise RunFolderError(
                f"{path} is {kind}; the run writes its {name} there. Move it out of the way "
                f"(e.g. mv {path} {path}.saved) and try again"
            )


@contextlib.contextmanager
def _run_folder(run_dir: Path, dist: DistContext, info: DeviceInfo) -> Iterator[None]:
    """The main rank holds ``run_dir`` for the run (see :mod:`finetune.runlock`); when it
    cannot, every rank stops with an error instead of waiting for it at a collective."""
    with contextlib.ExitStack() as stack:
        refused: RunFolderError | None = None
        if dist.is_main:
            try:
                stack.enter_context(run_folder_lock(run_dir))
            except RunFolderError as exc:
                refused = exc
        if dist.is_distributed and dist.any_true([refused is not None], info.device)[0]:
            refused = refused or RunFolderError(
                f"the main process could not take the run folder {run_dir} (see its message)"
            )
        if refused is not None:
            raise refused
        yield


def _check_data_fits_model(data: PreparedData, model: GPT) -> None:
    top = data.meta.get("max_token_id")
    if top is not None and int(top) >= model.config.vocab_size:
        raise DataError(
            f"{data.folder} holds token ids up to {top}, beyond the model's vocabulary of "
            f"{model.config.vocab_size}"
        )


def _tokenizer(cfg: TrainConfig, vocab: RunVocab, data: PreparedData, log: Log) -> Any:
    """The tokenizer for samples. A character vocabulary is always at hand (the model's
    vocabulary is made of it); GPT-2's BPE only matters for samples, so its absence warns."""
    if vocab.is_char:
        return run_tokenizer(vocab, data.folder)
    if not cfg.sample_interval:
        return None
    try:
        return run_tokenizer(vocab, data.folder)
    except Exception as exc:
        log(f"warning: no tokenizer for samples ({exc}); training without samples")
        return None


def _sample_tokenizer(
    cfg: TrainConfig,
    vocab: RunVocab,
    data: PreparedData,
    dist: DistContext,
    info: DeviceInfo,
    log: Log,
) -> Any:
    """The tokenizer on the ranks that generate samples: rank 0, or every rank under FSDP
    (a sharded model only runs with all ranks joining in, so they must all agree)."""
    sharded = cfg.fsdp and dist.is_distributed
    with dist.main_first():
        tokenizer = _tokenizer(cfg, vocab, data, log) if dist.is_main or sharded else None
    if sharded and dist.any_true([tokenizer is None], info.device)[0]:
        return None
    return tokenizer


def _run_data(cfg: TrainConfig, vocab: RunVocab, log: Log) -> PreparedData:
    """The run's prepared data (prepared now unless cached), as its settings say, tokenized
    with the run's vocabulary."""
    return resolve_data(
        cfg.data,
        cfg.data_dir,
        val_fraction=cfg.val_fraction,
        encoding=vocab.char,
        tokenizer_dir=None if vocab.is_char else vocab.gpt2_place,
        char_vocab=vocab.is_char and vocab.char is None,
        log=log,
    )


def _check_vocab(tokenizer: Any, model: GPT, label: str) -> None:
    """A character vocabulary must be the model's exactly (GPT-2's may be padded)."""
    if tokenizer is not None:
        from gpt2load.tokenizer import check_tokenizer_fits

        try:
            check_tokenizer_fits(tokenizer, model.config.vocab_size, label)
        except ValueError as exc:
            raise DataError(str(exc)) from None


def start(
    cfg: TrainConfig,
    *,
    log: Log = print,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Run a new training from ``cfg`` (see :class:`finetune.config.TrainConfig`).

    Under torchrun every process calls this with the same settings; rank 0 clears
    the run folder and prepares data and weights while the others wait, then all
    train together (see :mod:`finetune.distributed`).
    """
    cfg.validate()
    dist = DistContext.from_env()
    cfg = dist.with_grad_accum(cfg)
    if not dist.is_main:
        log = _silent
    info = check_device(cfg, log, dist)
    with process_group(dist, info.device, cfg.dist_backend):
        return _start(cfg, dist, info, log, callbacks)


def _start(
    cfg: TrainConfig,
    dist: DistContext,
    info: DeviceInfo,
    log: Log,
    callbacks: Sequence[Callback],
) -> TrainResult:
    run_dir = Path(cfg.out).expanduser()
    weights = None if cfg.is_scratch else weights_folder(cfg.init)
    vocab = choose_vocab(cfg.tokenizer, weights, cfg.data, cfg.tokenizer_dir)
    new_vocab = vocab.char.n_vocab if vocab.char is not None else None
    planned = planned_config(cfg, VOCAB_SIZE if not vocab.is_char else new_vocab)
    check_planned(cfg, planned)  # sizes and context: before data, weights or the run folder
    for note in cfg.warnings():
        log(note)
    with _run_folder(run_dir, dist, info):
        return _start_locked(cfg, dist, info, log, callbacks, run_dir, planned, vocab)


def _start_locked(
    cfg: TrainConfig,
    dist: DistContext,
    info: DeviceInfo,
    log: Log,
    callbacks: Sequence[Callback],
    run_dir: Path,
    planned: Any,
    vocab: RunVocab,
) -> TrainResult:
    overwrite = bool(_check_run_dir(run_dir, cfg.overwrite))
    _check_memory(cfg, info, planned, log, dist)
    with dist.main_first():
        data = _run_data(cfg, vocab, log)
    check_fits_context(data, cfg.block_size)
    chars = run_tokenizer(vocab, data.folder) if vocab.is_char else None
    with dist.main_first():
        model = init_model(cfg, log, chars.n_vocab if chars is not None else VOCAB_SIZE)
    _check_vocab(chars, model, f"--init {cfg.init}")
    _check_data_fits_model(data, model)
    if overwrite:
        # Only now: the starting weights may be this very run's (--init RUN/best --out RUN),
        # and every rank must hold them in memory before the main one removes them.
        dist.barrier()
        with dist.main_first(local=False):
            if dist.is_main:
                _clear_run_dir(run_dir)
    check_run_files(run_dir)
    derived = cfg.derived_settings()
    cfg = cfg.resolved().replace(overwrite=False)  # a one-time action, not a setting to replay
    if cfg.dropout is None:
        cfg = cfg.replace(dropout=model.config.dropout)
    cfg = cfg.replace(
        n_layer=model.config.n_layer, n_head=model.config.n_head, n_embd=model.config.n_embd
    )
    if planned is None:  # a checkpoint without headers: its size is known only now
        _check_memory(cfg, info, model.config, log, dist)
    tokenizer = _sample_tokenizer(cfg, vocab, data, dist, info, log)
    trainer = Trainer(
        cfg,
        model,
        data,
        info,
        tokenizer=tokenizer,
        dist=dist,
        log=log,
        callbacks=callbacks,
        derived=derived,
        carry_files=checkpoint_files(vocab, tokenizer),
    )
    return trainer.fit()


def resume(
    run_dir: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    log: Log = print,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Continue ``run_dir`` from its ``last`` checkpoint, optionally with changed settings
    (more ``max_iters``, another device ...; not another model or dataset).

    A checkpoint holds the whole model whoever wrote it, so a run started under
    torchrun resumes in one process and the other way round; with several
    processes every one of them must be able to read ``run_dir`` (on several
    machines: a shared filesystem).
    """
    run_dir = Path(run_dir).expanduser()
    overrides = dict(overrides or {})
    if "grad_accum" in overrides and overrides["grad_accum"] is None:
        del overrides["grad_accum"]  # "the default" of a run that exists is its own number
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    folder = find_checkpoint(run_dir, LAST)
    if folder is None:
        raise CheckpointError(
            f"{run_dir} has no '{LAST}' checkpoint to resume (a run writes one every "
            f"--save-interval steps and when it stops)"
        )
    stamp = _stamp(folder)
    state = read_trainer_state(folder)
    recorded = TrainConfig.from_dict(state["config"], source=f"{folder}/{TRAINER_FILE}")
    _check_fixed(recorded, overrides, run_dir)
    changes = {k: v for k, v in overrides.items() if k not in FIXED_ON_RESUME}
    # What the run derived (min_lr = lr/10 when not given) is derived again from the new
    # settings: `--lr` lowered after a divergence lowers a derived --min-lr with it.
    derived = [k for k in _derived_on_record(state, recorded) if k not in changes]
    cfg = recorded.replace(**{k: None for k in derived}).replace(**changes, out=str(run_dir))
    cfg = cfg.resolved()
    cfg.validate()
    _check_steps_left(cfg, int(state["step"]), "max_iters" in overrides, run_dir)
    dist = DistContext.from_env()
    cfg = dist.with_grad_accum(cfg)
    if not dist.is_main:
        log = _silent
    for note in cfg.warnings():
        log(note)
    info = check_device(cfg, log, dist)
    with process_group(dist, info.device, cfg.dist_backend), _run_folder(run_dir, dist, info):
        if _stamp(folder) != stamp:
            raise RunFolderError(
                f"{folder} changed while this resume started (another run saved to {run_dir}); "
                f"run the command again"
            )
        check_run_files(run_dir)
        return _resume(cfg, dist, info, folder, {**state, "derived": derived}, log, callbacks)


def _stamp(folder: Path) -> tuple[int, int, int] | None:
    """What tells that a checkpoint was replaced since it was read (inode, size, mtime)."""
    try:
        st = os.stat(folder / TRAINER_FILE)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _derived_on_record(state: Mapping[str, Any], recorded: TrainConfig) -> list[str]:
    """The settings the run derived rather than was given. Checkpoints from before this was
    recorded: a min_lr of exactly lr/10 is taken as the derived default it almost surely is."""
    if "derived" in state:
        return [k for k in state["derived"] if k in TrainConfig.DERIVED]
    lr, min_lr = recorded.lr, recorded.min_lr
    return ["min_lr"] if lr is not None and min_lr is not None and min_lr == lr / 10 else []


def _check_fixed(recorded: TrainConfig, overrides: Mapping[str, Any], run_dir: Path) -> None:
    """Settings a resume may not change are fine when given with the run's own value (the
    run's config.toml as ``--config``); another value is refused, saying why."""
    changed, keys = [], set()
    for key in FIXED_ON_RESUME:
        if key not in overrides:
            continue
        if key == "out":
            same = Path(overrides[key]).expanduser().resolve() == run_dir.resolve()
            had = str(run_dir)
        else:
            same = overrides[key] == getattr(recorded, key)
            had = getattr(recorded, key)
        if not same:
            changed.append(f"--{key.replace('_', '-')} (the run has {had!r})")
            keys.add(key)
    if not changed:
        return
    reasons = []
    if keys & set(FIXED_MODEL_AND_DATA):
        reasons.append("the model and data decide what the checkpoint belongs to")
    if keys & set(FIXED_STREAM):
        reasons.append(
            "seed, batch and block size decide which batches the run draws and which fixed "
            "batches it evaluates on, so the resumed run would neither continue exactly nor "
            "give val losses comparable with its best so far"
        )
    raise ConfigError(
        f"{', '.join(changed)} cannot change when resuming: {'; '.join(reasons)}. Resume "
        f"without {'it' if len(changed) == 1 else 'them'}, or start a new run from this "
        f"one's weights with --init {run_dir / LAST}"
    )


def _check_steps_left(cfg: TrainConfig, step: int, given: bool, run_dir: Path) -> None:
    if cfg.max_iters > step:
        return
    if given:
        raise ConfigError(
            f"--max-iters {cfg.max_iters} is not beyond the run's current step {step}: "
            f"--max-iters is the step to train up to, not a number of extra steps; pass more "
            f"than {step} (e.g. --max-iters {step + max(cfg.eval_interval, 1)})"
        )
    raise ConfigError(
        f"{run_dir} has already trained its {cfg.max_iters} steps; to train longer give "
        f"a larger --max-iters (e.g. finetune resume {run_dir} --max-iters {2 * step})"
    )


def _resume_data(
    cfg: TrainConfig, vocab: RunVocab, state: dict[str, Any], log: Log
) -> PreparedData:
    """The tokens the run trained on, checked against the key its checkpoint recorded.

    The recorded folder is used when it still holds them; otherwise the run's sources
    are prepared again (into their own folder); if even they give other tokens now,
    resuming would silently train on other text, so it is refused.
    """
    recorded = state.get("data", {}).get("source_key")
    dataset = state.get("dataset")
    if dataset and is_prepared_folder(dataset):
        data = open_prepared(dataset)
        if recorded is None or data_key(data) == recorded:
            return data
        log(
            f"data: {dataset} no longer holds this run's tokens (prepared again from other "
            f"or edited sources since); preparing the run's sources again"
        )
    data = _run_data(cfg, vocab, log)
    if recorded is not None and data_key(data) != recorded:
        sources = " ".join(cfg.data)
        raise DataError(
            f"the data of this run has changed: --data {sources} no longer gives the tokens "
            f"the run trained on (a source was edited, replaced or prepared again since), "
            f"and resuming would continue on other text. Put the original sources back and "
            f"resume, or start a new run on the new data from this one's weights: "
            f"finetune pretrain --init {cfg.out}/{LAST} --data {sources}"
        )
    return data


def _resume(
    cfg: TrainConfig,
    dist: DistContext,
    info: DeviceInfo,
    folder: Path,
    state: dict[str, Any],
    log: Log,
    callbacks: Sequence[Callback],
) -> TrainResult:
    model_config = read_model_config(folder)
    from gpt2load.config import GPTConfig

    recorded = GPTConfig.from_dict(state["model_config"])
    if not same_shape(model_config, recorded):
        raise CheckpointError(
            f"{folder} is inconsistent: its weights are {describe_shape(model_config)} but its "
            f"trainer state belongs to {describe_shape(recorded)}"
        )
    _check_memory(cfg, info, model_config, log, dist)
    check_block_size(cfg, model_config)
    # The checkpoint carries the run's tokenizer files (meta.pkl for characters).
    vocab = choose_vocab(cfg.tokenizer, folder, cfg.data, cfg.tokenizer_dir, label="the checkpoint")
    with dist.main_first():
        data = _resume_data(cfg, vocab, state, log)
    check_fits_context(data, cfg.block_size)
    model = GPT(model_config.replace(dropout=cfg.dropout or 0.0))
    load_model_weights(model, folder)
    _check_data_fits_model(data, model)
    log(f"resume: {folder} at step {state['step']} of {cfg.max_iters}")
    tokenizer = _sample_tokenizer(cfg, vocab, data, dist, info, log)
    _check_vocab(tokenizer if vocab.is_char else None, model, str(folder))
    trainer = Trainer(
        cfg,
        model,
        data,
        info,
        tokenizer=tokenizer,
        dist=dist,
        log=log,
        callbacks=callbacks,
        resume_state=state,
        derived=state["derived"],
        carry_files=checkpoint_files(vocab, tokenizer),
    )
    return trainer.fit()
