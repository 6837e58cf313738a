"""The training loop: optimizer steps, evaluations, samples, checkpoints, stopping.

One :class:`Trainer` owns a run's mutable state (step, data position, best val
loss, RNG) and is the only thing that writes the run folder, so what a
checkpoint holds is exactly what the next step needs to continue as if it had
never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt2load.model import GPT

from .batches import EVAL_TRAIN_STREAM, EVAL_VAL_STREAM, TRAIN_STREAM, BatchSource
from .checkpoint import (
    BEST,
    LAST,
    now_iso,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from .config import TrainConfig, to_toml
from .data import PreparedData, data_key
from .device import DeviceInfo, flops_per_token, resolve_dtype
from .distributed import (
    DistContext,
    full_model_state,
    full_optimizer_state,
    grad_norm_value,
    gradient_sync,
    load_optimizer_state,
    rank_seed,
    shard_fsdp,
    wrap_ddp,
)
from .errors import DistributedNotSupported, SaveError, os_reason
from .logging_wandb import WandbLogger, safe_text
from .metrics import PLOT_FILE, MetricsLog, append_line, plot_losses
from .optim import WarmupCosine, build_optimizer

Log = Callable[[str], None]
Callback = Callable[["Trainer", dict[str, Any]], None]
SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.toml"

COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"


@dataclass
class TrainResult:
    status: str
    step: int
    run_dir: Path
    best_val_loss: float | None = None
    message: str = ""
    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """0 when training ended on its own; 128+signal when stopped by one; 1 on divergence."""
        if self.status == INTERRUPTED:
            return 128 + (self.signum or signal.SIGINT)
        return 1 if self.status == DIVERGED else 0


@dataclass
class _StopRequest:
    reason: str | None = None
    signum: int | None = None
    handlers: dict[int, Any] = field(default_factory=dict)


class Trainer:
    """Trains ``model`` on ``data`` as ``cfg`` says, writing into ``cfg.out``."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: GPT,
        data: PreparedData,
        device: DeviceInfo,
        *,
        tokenizer: Any = None,
        dist: DistContext | None = None,
        log: Log = print,
        callbacks: Sequence[Callback] = (),
        resume_state: dict[str, Any] | None = None,
        derived: Sequence[str] = (),
        carry_files: Mapping[str, Path] | None = None,
    ) -> None:
        self.dist = dist or DistContext()
        # Settings filled from others' values (min_lr = lr/10), recorded so that a resume
        # with another --lr derives them again instead of keeping a stale value.
        self.derived = [name for name in derived if name in TrainConfig.DERIVED]
        self.cfg = cfg = self.dist.with_grad_accum(cfg)
        self.device = device
        self.data = data
        self.tokenizer = tokenizer
        # Tokenizer files every checkpoint carries, so that it generates alone and offline.
        self.carry_files = dict(carry_files or {})
        self.callbacks = list(callbacks)
        self.run_dir = Path(cfg.out)
        self._log = log
        self._bar: Any = None
        self._stop = _StopRequest()

        self.raw_model = model.to(device.device)
        self.raw_model.train()
        self.amp_dtype = resolve_dtype(cfg.dtype, device)
        self.grad_accum_local = self.dist.local_grad_accum(cfg.grad_accum)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Several processes: DDP keeps a whole model per rank; FSDP shards it in place, so
        # raw_model stays the module whose parameters the optimizer updates either way.
        self.fsdp = cfg.fsdp and self.dist.is_distributed
        self.ddp: torch.nn.Module | None = None
        if self.fsdp:
            if self.amp_dtype is torch.float16:
                raise DistributedNotSupported(
                    "--fsdp with float16 would need a grad scaler that agrees across shards; "
                    "use --dtype bfloat16 (A100, H100 and newer) or --dtype float32"
                )
            shard_fsdp(self.raw_model, device.device, self.dist.world_size)
        elif self.dist.is_distributed:
            self.ddp = wrap_ddp(self.raw_model, device.device)
        if resume_state is None:
            # Dropout draws from torch's generator: --seed decides it whatever the init, so
            # the same command gives the same run. A resume restores the saved state instead.
            torch.manual_seed(cfg.seed)
            if self.dist.is_distributed:
                torch.manual_seed(rank_seed(cfg.seed, self.dist.rank))  # dropout differs per rank

        self.data_key = data_key(data)  # recorded so a resume can tell it has the same tokens
        train_tokens, val_tokens = data.load("train"), data.load("val")
        self.train_batches = BatchSource(
            train_tokens, cfg.batch_size, cfg.block_size, cfg.seed, TRAIN_STREAM, "train"
        )
        self.eval_sets = {
            "train": BatchSource(
                train_tokens, cfg.batch_size, cfg.block_size, cfg.seed, EVAL_TRAIN_STREAM, "train"
            ).fixed(cfg.eval_batches),
            "val": BatchSource(
                val_tokens, cfg.batch_size, cfg.block_size, cfg.seed, EVAL_VAL_STREAM, "val"
            ).fixed(cfg.eval_batches),
        }

        lr = cfg.lr if cfg.lr is not None else 0.0
        min_lr = cfg.min_lr if cfg.min_lr is not None else lr / 10
        self.optimizer = build_optimizer(
            self.raw_model, lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type
        )
        self._schedule = WarmupCosine(
            cfg.warmup_iters, cfg.max_iters, (min_lr / lr) if lr > 0 else 1.0, cfg.lr_schedule
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.amp_dtype is torch.float16 and device.type != "mps"
        )
        self.model: torch.nn.Module = self.ddp if self.ddp is not None else self.raw_model
        if cfg.compile:
            self.model = torch.compile(self.model)

        self.step = 0
        self.start_step = 0  # where this process began: no update yet while step == start_step
        self.data_position = 0  # index of the next global micro-batch
        self.best_val_loss = math.inf
        self.evals_without_improvement = 0
        self.tokens_seen = 0
        self.elapsed_s = 0.0
        self.last_val_loss: float | None = None
        self.wandb_run_id: str | None = None
        self.metrics = MetricsLog(self.run_dir)
        self._flops_per_token = flops_per_token(self.raw_model.config, cfg.block_size)
        self._tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
        if resume_state is not None:
            self._restore(resume_state)
        self.wandb = self._start_wandb()

    # ------------------------------------------------------------ state
    def _restore(self, state: dict[str, Any]) -> None:
        source = state.get("loaded_from", "the trainer state")
        load_optimizer_state(self.raw_model, self.optimizer, state["optimizer"], self.fsdp, source)
        settings = dict(vars(self._schedule))
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule's settings come from the (possibly extended) config, not the file,
        # which load_state_dict has just copied into the schedule object.
        vars(self._schedule).update(settings)
        # The peak lr is the config's too (the file holds the old one): a resume with a lower
        # --lr, the advice after a divergence, must train at it.
        lr = self.cfg.lr if self.cfg.lr is not None else 0.0
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * self._schedule(self.scheduler.last_epoch)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = self.start_step = int(state["step"])
        self.data_position = int(state["data"]["position"])
        best = state.get("best_val_loss")
        self.best_val_loss = math.inf if best is None else float(best)
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        self.last_val_loss = state.get("val_loss")
        self.wandb_run_id = state.get("wandb_run_id")
        self._restore_rng(state)
        if self.dist.is_main:
            self.metrics.truncate_after(self.step)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each rank continues its own random streams when the process count is unchanged.

        A checkpoint's ``rng`` is rank 0's (a single process continues from it);
        with another number of processes the other ranks get fresh seeds of their
        own, which only changes dropout masks, never the data.
        """
        dist = self.dist
        if not dist.is_distributed:
            set_rng_state(state["rng"])
            return
        per_rank = state.get("rng_ranks")
        if per_rank and len(per_rank) == dist.world_size:
            set_rng_state(per_rank[dist.rank], all_devices=False)
            return
        set_rng_state(state["rng"], all_devices=False)
        if dist.rank:
            torch.manual_seed(rank_seed(self.cfg.seed, dist.rank, self.step))

    def trainer_state(
        self,
        optimizer_state: dict[str, Any] | None = None,
        rng_ranks: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """What resuming needs beyond the weights. Under several processes the caller
        passes the gathered optimizer state (FSDP) and every rank's RNG states."""
        rng = rng_ranks[0] if rng_ranks else rng_state()
        state = {
            "step": self.step,
            "optimizer": (
                self.optimizer.state_dict() if optimizer_state is None else optimizer_state
            ),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng,
            "data": {
                "position": self.data_position,
                "seed": self.cfg.seed,
                "grad_accum": self.cfg.grad_accum,
                "batch_size": self.cfg.batch_size,
                "block_size": self.cfg.block_size,
                "source_key": self.data_key,
            },
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "val_loss": self.last_val_loss,
            "evals_without_improvement": self.evals_without_improvement,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
            "config": self.cfg.to_dict(),
            "model_config": self.raw_model.config.to_dict(),
            "dataset": str(self.data.folder.resolve()),
            "wandb_run_id": self.wandb.run_id if self.wandb.active else self.wandb_run_id,
            "world_size": self.dist.world_size,
            "derived": list(self.derived),
        }
        if rng_ranks and len(rng_ranks) > 1:
            state["rng_ranks"] = rng_ranks
        return state

    def save(self, name: str) -> Path | None:
        """Write checkpoint ``name`` (``last`` or ``best``); only the main rank writes.

        Every rank must call it: under FSDP the weights and optimizer state are
        gathered from all shards, and each rank's RNG state is collected so a
        resume with the same number of processes continues every rank exactly.
        """
        model_state = full_model_state(self.raw_model, self.fsdp)
        optimizer_state = full_optimizer_state(self.raw_model, self.optimizer, self.fsdp)
        rng_ranks = None
        if self.dist.is_distributed:
            rng_ranks = self.dist.all_gather_object(rng_state(all_devices=False))
        if not self.dist.is_main:
            return None
        val = self.last_val_loss
        info = {
            "kind": name,
            "step": self.step,
            "val_loss": val,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "tokens_seen": self.tokens_seen,
            "init": self.cfg.init,
            "dataset": str(self.data.folder),
            "saved_at": now_iso(),
            "resume": f"finetune resume {self.run_dir}",
        }
        metadata = {
            "source": "finetune",
            "step": self.step,
            "val_loss": val,
            "train_config": self.cfg.to_dict(),
        }
        return write_checkpoint(
            self.run_dir,
            name,
            self.raw_model,
            self.trainer_state(optimizer_state, rng_ranks),
            info,
            metadata,
            model_state=model_state,
            extra_files=self.carry_files,
            generation={
                "temperature": self.cfg.temperature,
                "top_k": self.cfg.top_k,
                "max_new_tokens": self.cfg.sample_tokens,
            },
        )

    # ------------------------------------------------------------ output
    def log(self, message: str) -> None:
        if not self.dist.is_main:
            return
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(message)
        else:
            self._log(message)

    def _start_wandb(self) -> WandbLogger:
        cfg = self.cfg
        return WandbLogger(
            enabled=cfg.wandb and self.dist.is_main,
            mode=cfg.wandb_mode,
            project=cfg.wandb_project,
            name=cfg.wandb_run_name or self.run_dir.resolve().name,
            tags=list(cfg.wandb_tags),
            config={
                **cfg.to_dict(),
                "model": self.raw_model.config.to_dict(),
                "parameters": self.raw_model.num_parameters(),
            },
            run_dir=self.run_dir,
            run_id=self.wandb_run_id,
            log=self.log,
        )

    def write_config(self) -> None:
        if self.dist.is_main:
            from gpt2load.fileio import atomic_write_text

            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.run_dir / CONFIG_FILE, to_toml(self.cfg))
            except OSError as exc:
                raise SaveError(
                    f"cannot write {self.run_dir / CONFIG_FILE}: {os_reason(exc)}. Free space "
                    f"or make {self.run_dir} writable, then run the command again"
                ) from None

    # ------------------------------------------------------------ steps
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device.device, non_blocking=True)
        return x.to(self.device.device)

    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over ``grad_accum`` micro-batches: (mean loss, grad norm, ok).

        ``ok`` is False when the loss (or, without a grad scaler, the gradient) is
        not finite; the update is then skipped so the weights in memory stay the
        last good ones. With fp16's grad scaler an inf gradient is routine: the
        scaler skips that update and lowers its scale, and training goes on.

        With several processes, rank ``r`` runs global micro-batches
        ``r*n .. r*n+n-1`` of the step (``n`` = its share), gradients are averaged
        once, at its last micro-batch, and the loss is summed over all ranks, so
        every rank sees the same numbers and takes the same decisions.
        """
        cfg = self.cfg
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device.device)
        n = self.grad_accum_local
        first = self.data_position + self.dist.rank * n
        sync_module = self.ddp if self.ddp is not None else self.raw_model
        for i in range(n):
            x, y = self.train_batches.get(first + i)
            x, y = self._to_device(x), self._to_device(y)
            with gradient_sync(
                sync_module, ddp=self.ddp is not None, fsdp=self.fsdp, enabled=i == n - 1
            ):
                with self.autocast():
                    _, loss = self.model(x, y)
                total += loss.detach()
                self.scaler.scale(loss / n).backward()
        self.dist.sum_(total)
        loss_value = (total / cfg.grad_accum).item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, math.nan, False
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = grad_norm_value(
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        )
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.data_position += cfg.grad_accum
        return loss_value, grad_norm, True

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over the fixed evaluation batches of each split (``--eval-batches`` each).

        Several processes deal the batches out round-robin and gather the
        per-batch losses back in order, so the mean is the single-process one. A
        rank left without a batch in the last round runs a spare one and drops its
        loss: under FSDP every forward is a collective that all ranks must join.
        """
        self.model.eval()
        out = {}
        world, rank = self.dist.world_size, self.dist.rank
        try:
            for split, batches in self.eval_sets.items():
                losses = []
                for first in range(0, len(batches), world):
                    i = first + rank
                    x, y = batches[i] if i < len(batches) else batches[0]
                    with self.autocast():
                        _, loss = self.model(self._to_device(x), self._to_device(y))
                    losses.append(loss.float())
                out[split] = self.dist.interleave(torch.stack(losses), len(batches)).mean().item()
        finally:
            self.model.train()
        return out

    def sample(self) -> str | None:
        """Text generated from ``--sample-prompt``; the seed is fixed so samples compare."""
        if self.tokenizer is None:
            return None
        from gpt2load.generation import generate
        from gpt2load.tokenizer import prompt_ids

        cfg = self.cfg
        context = self.raw_model.config.context_length
        ids = prompt_ids(self.tokenizer, cfg.sample_prompt)[-(context - 1) :]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device.device)
        with self.autocast():
            out = generate(
                self.raw_model,
                idx,
                cfg.sample_tokens,
                temperature=cfg.temperature,
                top_k=cfg.top_k,
                seed=cfg.seed,
                vocab_limit=self.tokenizer.n_vocab,  # a padded vocab's extra rows are no tokens
            )
        return self.tokenizer.decode(out[0, len(ids) :].tolist(), errors="replace")

    # ------------------------------------------------------------ signals
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM finish the current step, save ``last`` and stop; a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop.signum is not None:
                raise KeyboardInterrupt
            self._stop.signum = signum
            self._stop.reason = signal.Signals(signum).name
            self.log(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving "
                f"{self.run_dir / LAST} (press Ctrl-C again to abort without saving)"
            )

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._stop.handlers[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in self._stop.handlers.items():
                signal.signal(sig, old)
            self._stop.handlers.clear()

    def request_stop(self, reason: str = "requested") -> None:
        """Stop after the current step as Ctrl-C would (saving ``last``); for callers and tests."""
        self._stop.reason = reason

    # ------------------------------------------------------------ loop
    def _mfu(self, tokens_per_s: float) -> float | None:
        peak = self.device.peak_flops
        if peak is None or self.amp_dtype is torch.float32:
            return None
        return self._flops_per_token * tokens_per_s / (peak * self.dist.world_size)

    def _progress(self) -> Any:
        from tqdm import tqdm

        enabled = self.cfg.progress and self.dist.is_main
        return tqdm(
            total=self.cfg.max_iters,
            initial=self.step,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5,
            unit="step",
            desc=self.run_dir.name,
        )

    def _maybe_plot(self) -> None:
        if self.dist.is_main:
            try:
                plot_losses(self.metrics.read(), self.run_dir / PLOT_FILE)
            except Exception as exc:  # a plot is never worth a failed run
                self.log(f"warning: could not draw {PLOT_FILE}: {exc}")

    def _on_eval(self, step_record: dict[str, Any]) -> bool:
        """Evaluate, update best and patience; True when early stopping is due."""
        losses = self.evaluate()
        step_record["val_loss"] = losses["val"]
        step_record["eval_train_loss"] = losses["train"]
        self.last_val_loss = losses["val"]
        improved = losses["val"] < self.best_val_loss
        mark = ""
        if improved:
            self.best_val_loss = losses["val"]
            self.evals_without_improvement = 0
            self.save(BEST)
            mark = f"  -> saved {self.run_dir / BEST}"
        else:
            self.evals_without_improvement += 1
        self.log(
            f"step {self.step}: train {losses['train']:.4f}, val {losses['val']:.4f} "
            f"(best {self.best_val_loss:.4f}){mark}"
        )
        patience = self.cfg.patience
        return patience > 0 and self.evals_without_improvement >= patience

    def _on_sample(self) -> None:
        if not self.dist.is_main and not self.fsdp:
            return  # a sharded model generates only with every rank joining in
        try:
            text = self.sample()
        except Exception as exc:
            self.log(f"warning: sampling failed: {exc}")
            return
        if text is None:
            return
        shown = safe_text(self.cfg.sample_prompt + text)
        self.log(f"--- sample at step {self.step} ---\n{shown}\n---")
        if self.dist.is_main:
            record = {"step": self.step, "prompt": self.cfg.sample_prompt, "text": text}
            append_line(self.run_dir / SAMPLES_FILE, json.dumps(record))
        self.wandb.log_sample(self.step, self.cfg.sample_prompt, text)

    def fit(self) -> TrainResult:
        """Train until ``max_iters``, early stopping, a signal or a non-finite loss."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        result: TrainResult | None = None
        saved_at = self.step  # a resumed run's state is already on disk
        with self._signals(), contextlib.closing(self._progress()) as bar:
            self._bar = bar if not bar.disable else None
            try:
                while self.step < cfg.max_iters:
                    lr = self.optimizer.param_groups[0]["lr"]
                    started = time.perf_counter()
                    loss, grad_norm, ok = self.train_step()
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device.device)
                    seconds = time.perf_counter() - started
                    if not ok:
                        result = self._diverged(loss, grad_norm)
                        break
                    self.step += 1
                    self.elapsed_s += seconds
                    self.tokens_seen += self._tokens_per_step
                    tokens_per_s = self._tokens_per_step / max(seconds, 1e-9)
                    record: dict[str, Any] = {
                        "step": self.step,
                        "train_loss": loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                        "grad_norm": grad_norm,
                        "tokens_seen": self.tokens_seen,
                        "elapsed_s": round(self.elapsed_s, 4),
                    }
                    mfu = self._mfu(tokens_per_s)
                    if mfu is not None:
                        record["mfu"] = mfu
                    last_step = self.step == cfg.max_iters
                    early_stop = False
                    if self.step % cfg.eval_interval == 0 or last_step:
                        early_stop = self._on_eval(record)
                    if self.dist.is_main:
                        self.metrics.append(record)
                    self.wandb.log(_wandb_names(record), step=self.step)
                    postfix = f"loss {loss:.4f}, lr {lr:.2e}, {tokens_per_s:,.0f} tok/s"
                    if mfu is not None:
                        postfix += f", MFU {100 * mfu:.1f}%"
                    bar.set_postfix_str(postfix, refresh=False)
                    bar.update(1)
                    if cfg.sample_interval and self.step % cfg.sample_interval == 0:
                        self._on_sample()
                    if "val_loss" in record:
                        self._maybe_plot()
                    for callback in self.callbacks:
                        callback(self, record)
                    if self.dist.is_distributed:
                        # Ranks must stop at the same step, or the others would wait forever
                        # in the next collective: a signal or request seen by any one counts.
                        early_stop, requested = self.dist.any_true(
                            [early_stop, self._stop.reason is not None], self.device.device
                        )
                        if requested and self._stop.reason is None:
                            self._stop.reason = "stopped by another process"
                    stopping = early_stop or self._stop.reason is not None
                    if self.step % cfg.save_interval == 0 or last_step or stopping:
                        self.save(LAST)
                        saved_at = self.step
                    if early_stop:
                        result = self._result(
                            EARLY_STOPPED,
                            f"early stop: val loss has not improved for {cfg.patience} "
                            f"evaluations (best {self.best_val_loss:.4f})",
                        )
                        break
                    if self._stop.reason is not None:
                        result = self._interrupted()
                        break
                else:
                    if saved_at != self.step:
                        self.save(LAST)
                    result = self._result(COMPLETED, f"finished {cfg.max_iters} steps")
            finally:
                self._bar = None
        self._maybe_plot()
        self.wandb.summary(
            {"best_val_loss": result.best_val_loss, "status": result.status, "step": result.step}
        )
        self.wandb.finish(exit_code=0 if result.status in (COMPLETED, EARLY_STOPPED) else 1)
        self.log(result.message)
        return result

    def _result(self, status: str, message: str) -> TrainResult:
        best = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return TrainResult(status, self.step, self.run_dir, best, message, self._stop.signum)

    def _interrupted(self) -> TrainResult:
        return self._result(
            INTERRUPTED,
            f"stopped ({self._stop.reason}) at step {self.step}; saved {self.run_dir / LAST}. "
            f"Continue with: finetune resume {self.run_dir}",
        )

    def _diverged(self, loss: float, grad_norm: float) -> TrainResult:
        """Stop on a non-finite loss or gradient, with advice that fits the cause: broken
        weights are not a learning-rate problem, and resume is offered only when there is
        a checkpoint to resume from."""
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
        from .checkpoint import INFO_FILE, find_checkpoint

        stopped = f"training stopped: {what} at step {self.step + 1} is not finite"
        broken = _non_finite_tensors(self.raw_model)
        if self.step == self.start_step and (broken or self.amp_dtype is not torch.float16):
            source = f"--init {self.cfg.init}" if self.step == 0 else f"{self.run_dir / LAST}"
            held = (
                f"{len(broken)} of its tensors hold NaN or inf ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''})"
                if broken
                else "its finite values already give a non-finite loss"
            )
            return self._result(
                DIVERGED,
                f"{stopped}, before any update: the starting weights ({source}) are broken: "
                f"{held}. This is not a learning-rate problem; start from other weights "
                f"(`gpt2load verify` checks a checkpoint).",
            )
        kept = find_checkpoint(self.run_dir, LAST)
        if kept is None:
            then = (
                "no checkpoint was saved yet, so start the run again (add --overwrite to "
                "reuse this --out)"
            )
        else:
            step = ""
            with contextlib.suppress(Exception):  # info.json is a courtesy: never fail on it
                step = f" (step {json.loads((kept / INFO_FILE).read_text())['step']})"
            then = (
                f"the last good checkpoint is {kept}{step}; continue from it with "
                f"`finetune resume {self.run_dir} --lr LOWER`"
            )
        return self._result(
            DIVERGED,
            f"{stopped}. Lower --lr (or use --dtype bfloat16/float32 instead of float16): {then}.",
        )


def _non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding NaN or inf (tied ones once)."""
    with torch.no_grad():
        return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def _wandb_names(record: dict[str, Any]) -> dict[str, Any]:
    names = {
        "train_loss": "train/loss",
        "val_loss": "val/loss",
        "eval_train_loss": "train/eval_loss",
        "tokens_per_s": "perf/tokens_per_s",
        "mfu": "perf/mfu",
        "lr": "train/lr",
        "grad_norm": "train/grad_norm",
        "tokens_seen": "train/tokens_seen",
    }
    return {names[k]: v for k, v in record.items() if k in names}
