"""Carry out a plan, in the order that makes bad input cheap and loses nothing: the run
folder locked (never clobber a run), the memory estimate checked, the data prepared, the model
built. ``--overwrite`` clears the old run only once data and starting weights are in memory:
``--init RUN/best --out RUN --overwrite`` reads the weights it is about to replace, and a run
that fails before training leaves the old one whole."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gpt2load
from gpt2load import GPT, VOCAB_SIZE

from .checkpoint import BEST, CHECKPOINT_FILES, CONFIG_FILE, LAST, TRAINER_FILE, own_names
from .config import TrainConfig
from .data import PreparedData, check_fits_context, data_key, is_prepared_folder, open_prepared
from .device import check_memory, estimate_memory
from .errors import ConfigError, DataError, RunFolderError
from .modelinit import init_model
from .plan import Log, Plan, plan_resume, plan_run, silent
from .prepare import resolve_data
from .runlock import LOCK_FILE, run_folder_lock
from .sinks import METRICS_FILE, PLOT_FILE, SAMPLES_FILE
from .strategy import process_group
from .trainer import Callback, Trainer, TrainResult
from .vocab import checkpoint_files, run_tokenizer

WRITTEN_FILES = (METRICS_FILE, SAMPLES_FILE, CONFIG_FILE, PLOT_FILE)
RUN_FILES = (LAST, BEST, f".{LAST}.old", f".{BEST}.old", *WRITTEN_FILES)
# The names a run's saves replace whole (checkpoints and their temporary and old copies).
SAVED_NAMES = frozenset(own for name in (LAST, BEST) for own in own_names(name))


def start(cfg: TrainConfig, *, log: Log = print, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Run a new training from ``cfg``. Under torchrun every process calls this with the same
    settings; rank 0 prepares data and weights while the others wait, then all train."""
    check_not_in_checkpoint(Path(cfg.out).expanduser())
    return _carry_out(plan_run(cfg, log), log, callbacks)


def resume(
    run_dir: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    log: Log = print,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Continue ``run_dir`` from its ``last`` checkpoint, with changed settings if asked. A
    checkpoint holds the whole model whoever wrote it, so a torchrun run resumes in one process
    and the other way round (on several machines ``run_dir`` must be on a shared filesystem)."""
    check_run_files(Path(run_dir).expanduser())  # before its checkpoint is read (not via a link)
    plan = plan_resume(Path(run_dir).expanduser(), dict(overrides or {}), log)
    return _carry_out(plan, log, callbacks)


def _carry_out(plan: Plan, log: Log, callbacks: Sequence[Callback]) -> TrainResult:
    log = log if plan.strategy.is_main else silent
    stamp = _stamp(plan.resume_from)
    with contextlib.ExitStack() as stack:
        stack.enter_context(process_group(plan.strategy, plan.device.device, plan.cfg.dist_backend))
        # The main rank holds the run folder (see finetune.runlock); when it cannot, every
        # rank stops with the error instead of waiting for it at a collective.
        refused: RunFolderError | None = None
        if plan.strategy.is_main:
            try:
                stack.enter_context(run_folder_lock(plan.run_dir))
            except RunFolderError as exc:
                refused = exc
        if plan.strategy.any_true([refused is not None], plan.device.device)[0]:
            raise refused or RunFolderError(
                f"the main process could not take the run folder {plan.run_dir} (see its message)"
            )
        if _stamp(plan.resume_from) != stamp:
            raise RunFolderError(
                f"{plan.resume_from} changed while this resume started (another run saved to "
                f"{plan.run_dir}); run the command again"
            )
        plan, model, data = (_new if plan.resume is None else _resumed)(plan, log)
        tokenizer, files = _tokenizer(plan, data, log)
        # No name holds the trainer: its DDP wrapper must be freed before the group is
        # destroyed (see strategy.process_group), or gloo may abort the process at exit.
        return Trainer(
            plan, model, data, tokenizer=tokenizer, log=log, callbacks=callbacks, carry_files=files
        ).fit()


def _new(plan: Plan, log: Log) -> tuple[Plan, GPT, PreparedData]:
    cfg, strategy, run_dir = plan.cfg, plan.strategy, plan.run_dir
    existing = [name for name in RUN_FILES if os.path.lexists(run_dir / name)]
    if existing and not plan.overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(existing)}); continue it with "
            f"`finetune resume {run_dir}`, pick another --out, or pass --overwrite to start afresh"
        )
    _check_memory(plan, plan.model, log)
    with strategy.main_first():
        data = _run_data(plan, log)
    check_fits_context(data, cfg.block_size)
    chars = run_tokenizer(plan.vocab, data.folder) if plan.vocab.is_char else None
    with strategy.main_first():
        model = init_model(cfg, log, chars.n_vocab if chars is not None else VOCAB_SIZE)
    _check_fits(chars, data, model, f"--init {cfg.init}")
    if existing:
        # Only now: the starting weights may be this very run's (--init RUN/best --out RUN),
        # and every rank must hold them in memory before the main one removes them.
        strategy.barrier()
        with strategy.main_first(local=False):
            if strategy.is_main:
                for path in (run_dir / name for name in existing):  # links, not their targets
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    elif os.path.lexists(path):
                        path.unlink()
    check_run_files(run_dir)
    if plan.model is None:  # a checkpoint without headers: its size is known only now
        _check_memory(plan, model.config, log)
    return plan.settle(model.config), model, data


def _resumed(plan: Plan, log: Log) -> tuple[Plan, GPT, PreparedData]:
    check_run_files(plan.run_dir)
    _check_memory(plan, plan.model, log)
    with plan.strategy.main_first():
        data = _resume_data(plan, log)
    check_fits_context(data, plan.cfg.block_size)
    model = gpt2load.load(plan.resume_from, device="cpu", dtype="float32", contiguous=True)
    model.set_dropout(plan.cfg.dropout)
    chars = run_tokenizer(plan.vocab, data.folder) if plan.vocab.is_char else None
    _check_fits(chars, data, model, str(plan.resume_from))
    log(f"resume: {plan.resume_from} at step {plan.resume['step']} of {plan.cfg.max_iters}")
    return plan, model.train(), data


def _check_memory(plan: Plan, config: Any, log: Log) -> None:
    cfg, info = plan.cfg, plan.device
    if config is None or not cfg.memory_check:
        return
    shards = plan.strategy.world_size if plan.strategy.sharded else 1
    estimate = estimate_memory(config, cfg.batch_size, cfg.block_size, plan.dtype, shards)
    check_memory(estimate, info, cfg.batch_size)
    if info.total_memory:
        log(f"memory: estimated {estimate.describe()} of {info.total_memory / 1024**3:.1f} GiB")


def check_run_files(run_dir: Path) -> None:
    """Each file a run appends to or replaces must be a plain file (or absent): a folder in
    its place would fail mid-run, and a link would make the run write outside ``run_dir``.
    Likewise ``last`` and ``best`` must be folders of the run's own, checked now, not when the
    first save fails hours later: a link would be read from and saved over, and a save
    replaces the folder whole, so another run kept in it would be deleted."""
    for path in (run_dir / name for name in WRITTEN_FILES):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            kind = "a symbolic link" if path.is_symlink() else "not a plain file"
            raise RunFolderError(
                f"{path} is {kind}; the run writes its {path.name} there. Move it out of the "
                f"way (e.g. mv {path} {path}.saved) and try again"
            )
    for path in (run_dir / name for name in (LAST, BEST)):
        if path.is_symlink():
            raise RunFolderError(
                f"{path} is a symbolic link; the run reads and saves its {path.name} checkpoint "
                f"there, never through a link. Put the folder itself there (e.g. rm {path} && "
                f"cp -r {os.path.realpath(path)} {path}) and try again"
            )
        if os.path.lexists(path) and not path.is_dir():
            raise RunFolderError(
                f"{path} is not a folder; the run saves its {path.name} checkpoint there, "
                f"replacing what stands at that name. Move it out of the way (e.g. mv {path} "
                f"{path}.saved) and try again"
            )
        if nested := [name for name in (*RUN_FILES, LOCK_FILE) if os.path.lexists(path / name)]:
            raise RunFolderError(
                f"{path} holds another run's files ({', '.join(nested)}); the run's next save "
                f"replaces {path} whole and would delete them. Move them out of {path} (e.g. "
                f"into a folder of their own beside {run_dir}) and try again"
            )


def check_not_in_checkpoint(run_dir: Path) -> None:
    """A new run's folder must not be, or lie inside, a run's checkpoint folder: a save
    replaces ``RUN/last`` (``best``, their temporary and old copies) whole, so a run kept there
    would be deleted by another run's next save. Checked before the folder is created, on the
    real path (a link to a checkpoint folder counts); a checkpoint name in a run's folder
    counts before that run has saved there. Any other folder of weights (a Hugging Face
    folder, a copied checkpoint) is replaced by no save, so a run may live in it."""
    real = Path(os.path.realpath(run_dir))
    for folder in (real, *real.parents):
        if folder.name not in SAVED_NAMES:
            continue
        held = [name for name in CHECKPOINT_FILES if os.path.lexists(folder / name)]
        if held or _holds_run(folder.parent):
            why = (
                f"it holds {', '.join(held)}" if held else f"the run in {folder.parent} saves there"
            )
            where = "is" if folder == real else "lies inside"
            raise ConfigError(
                f"--out {run_dir} {where} the checkpoint folder {folder} ({why}); a save "
                f"replaces a checkpoint folder whole, so a run there would be deleted. Pick an "
                f"--out outside {folder}"
            )


def _holds_run(folder: Path) -> bool:
    return any(os.path.lexists(folder / name) for name in (*RUN_FILES, LOCK_FILE))


def _stamp(folder: Path | None) -> tuple[int, int, int] | None:
    """What tells that a checkpoint was replaced since it was read (inode, size, mtime)."""
    if folder is not None:
        with contextlib.suppress(OSError):
            st = os.stat(folder / TRAINER_FILE)
            return st.st_ino, st.st_size, st.st_mtime_ns
    return None


def _run_data(plan: Plan, log: Log) -> PreparedData:
    cfg, vocab = plan.cfg, plan.vocab
    how = {"val_fraction": cfg.val_fraction, "encoding": vocab.char}
    how |= {"tokenizer_dir": vocab.gpt2_place, "char_vocab": vocab.is_char and vocab.char is None}
    return resolve_data(cfg.data, cfg.data_dir, log=log, **how)


def _resume_data(plan: Plan, log: Log) -> PreparedData:
    """The tokens the run trained on, checked against the key its checkpoint recorded: the
    recorded folder while it still holds them, else the run's sources prepared again; if even
    they give other tokens now, resuming would silently train on other text, so it refuses."""
    recorded = plan.resume.get("data", {}).get("source_key")
    dataset = plan.resume.get("dataset")
    if dataset and is_prepared_folder(dataset):
        data = open_prepared(dataset)
        if recorded is None or data_key(data) == recorded:
            return data
        log(
            f"data: {dataset} no longer holds this run's tokens (prepared again from other or "
            f"edited sources since); preparing the run's sources again"
        )
    data = _run_data(plan, log)
    if recorded is not None and data_key(data) != recorded:
        sources = " ".join(plan.cfg.data)
        raise DataError(
            f"the data of this run has changed: --data {sources} no longer gives the tokens "
            f"the run trained on (a source was edited, replaced or prepared again since), "
            f"and resuming would continue on other text. Put the original sources back and "
            f"resume, or start a new run on the new data from this one's weights: "
            f"finetune pretrain --init {plan.cfg.out}/{LAST} --data {sources}"
        )
    return data


def _tokenizer(plan: Plan, data: PreparedData, log: Log) -> tuple[Any, dict[str, Path]]:
    """The tokenizer for samples, and the tokenizer files every checkpoint carries. A
    character vocabulary is always at hand (the model is made of it); GPT-2's BPE only
    matters for samples, so its absence warns. Under FSDP every rank needs it (a sharded
    model only runs with all ranks joining in), else only rank 0 samples."""
    vocab, strategy = plan.vocab, plan.strategy
    tokenizer = None
    with strategy.main_first():
        if vocab.is_char:
            tokenizer = run_tokenizer(vocab, data.folder)
        elif plan.cfg.sample_interval and (strategy.is_main or strategy.sharded):
            try:
                tokenizer = run_tokenizer(vocab, data.folder)
            except Exception as exc:
                log(f"warning: no tokenizer for samples ({exc}); training without samples")
    if strategy.sharded and strategy.any_true([tokenizer is None], plan.device.device)[0]:
        tokenizer = None
    return tokenizer, checkpoint_files(vocab, tokenizer) if strategy.is_main else {}


def _check_fits(chars: Any, data: PreparedData, model: GPT, label: str) -> None:
    """The data's ids must fit the model's vocabulary, and a character vocabulary exactly."""
    top = data.meta.get("max_token_id")
    if top is not None and int(top) >= model.config.vocab_size:
        raise DataError(
            f"{data.folder} holds token ids up to {top}, beyond the model's "
            f"vocabulary of {model.config.vocab_size}"
        )
    if chars is not None:
        try:
            gpt2load.check_tokenizer_fits(chars, model.config.vocab_size, label)
        except ValueError as exc:
            raise DataError(str(exc)) from None
