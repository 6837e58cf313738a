"""The training loop: optimizer steps, evaluations, samples, checkpoints, stopping.

A :class:`Trainer` owns a run's mutable state (step, data position, best val loss, RNG) and
is the only thing that writes the run folder, so what a checkpoint holds is exactly what the
next step needs to continue as if it had never stopped. How the work is spread over
processes is the plan's strategy; where the numbers go, the sinks'.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import gpt2load
from gpt2load import GPT

from .batches import EVAL_TRAIN_STREAM, EVAL_VAL_STREAM, TRAIN_STREAM, BatchSource
from .checkpoint import BEST, LAST, find_checkpoint, save_checkpoint, write_run_config
from .data import PreparedData, data_key
from .device import flops_per_token
from .flags import to_toml
from .optim import WarmupCosine, build_optimizer
from .outcome import COMPLETED, DIVERGED, EARLY_STOPPED, INTERRUPTED, TrainResult, divergence_advice
from .plan import Plan
from .sinks import ProgressBar, RunFiles, Sink, Wandb, safe_text, wandb_mode
from .state import restore
from .strategy import grad_norm_value, rank_seed

Log = Callable[[str], None]
Callback = Callable[["Trainer", dict[str, Any]], None]


class Trainer:
    """Trains ``model`` on ``data`` as ``plan`` says, writing into the plan's run folder."""

    def __init__(
        self,
        plan: Plan,
        model: GPT,
        data: PreparedData,
        *,
        tokenizer: Any = None,
        log: Log = print,
        callbacks: Sequence[Callback] = (),
        carry_files: Mapping[str, Path] | None = None,
    ) -> None:
        self.plan, self.cfg, self.strategy = plan, plan.cfg, plan.strategy
        self.device, self.amp_dtype = plan.device, plan.dtype
        cfg, strategy, device = self.cfg, self.strategy, plan.device.device
        self.data, self.tokenizer, self.callbacks = data, tokenizer, list(callbacks)
        self.carry_files = dict(carry_files or {})  # so every checkpoint generates alone
        self.run_dir, self._log = plan.run_dir, log
        self._stop_reason: str | None = None
        self._signum: int | None = None
        self.raw_model = model.to(device).train()  # the module the optimizer updates
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.model = strategy.wrap(self.raw_model, device)
        if plan.resume is None:  # --seed decides dropout too, whatever the init
            torch.manual_seed(rank_seed(cfg.seed, strategy.rank) if strategy.rank else cfg.seed)
        train, val = data.load("train"), data.load("val")
        self.train_batches = BatchSource(
            train, cfg.batch_size, cfg.block_size, cfg.seed, TRAIN_STREAM, "train"
        )
        self.eval_sets = {
            split: BatchSource(
                tokens, cfg.batch_size, cfg.block_size, cfg.seed, stream, split
            ).fixed(cfg.eval_batches)
            for split, tokens, stream in (
                ("train", train, EVAL_TRAIN_STREAM),
                ("val", val, EVAL_VAL_STREAM),
            )
        }
        self.optimizer = build_optimizer(
            self.raw_model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type
        )
        ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 1.0
        self._schedule = WarmupCosine(cfg.warmup_iters, cfg.max_iters, ratio, cfg.lr_schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule)
        scaled = self.amp_dtype is torch.float16 and device.type != "mps"
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.step = self.start_step = self.data_position = self.tokens_seen = 0
        self.best_val_loss, self.evals_without_improvement = math.inf, 0
        self.elapsed_s, self.last_val_loss, self.wandb_run_id = 0.0, None, None
        self._flops_per_token = flops_per_token(self.raw_model.config, cfg.block_size)
        self._tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
        self.data_key = data_key(data)  # recorded so a resume can tell it has the same tokens
        if plan.resume is not None:
            restore(self, plan.resume)
        self.files: RunFiles | None = None
        self.bar: ProgressBar | None = None
        self.wandb: Wandb | None = None
        self.sinks: list[Sink] = []

    # ------------------------------------------------------------ state
    def save(self, name: str) -> Path | None:
        """Write checkpoint ``name`` (``last`` or ``best``); every rank must call it."""
        return save_checkpoint(self, name)

    # ------------------------------------------------------------ output
    def log(self, message: str) -> None:
        if self.strategy.is_main:
            self.bar.write(message, self._log) if self.bar is not None else self._log(message)

    def _open_sinks(self) -> None:
        cfg, main = self.cfg, self.strategy.is_main
        self.bar = ProgressBar(cfg.max_iters, self.step, self.run_dir.name, cfg.progress and main)
        self.sinks = [self.bar]
        if main:
            resumable = lambda: find_checkpoint(self.run_dir, LAST) is not None  # noqa: E731
            self.files = RunFiles(
                self.run_dir, self.step if self.plan.resume else None, self.log, resumable
            )
            self.sinks.append(self.files)
        mode = wandb_mode(cfg.wandb_mode, cfg.wandb and main)
        model = {
            "model": self.raw_model.config.to_dict(),
            "parameters": self.raw_model.num_parameters(),
        }
        self.wandb = Wandb(
            mode,
            self.run_dir,
            self.log,
            self.wandb_run_id,
            project=cfg.wandb_project,
            name=cfg.wandb_run_name or self.run_dir.resolve().name,
            tags=list(cfg.wandb_tags) or None,
            config={**cfg.to_dict(), **model},
        )
        self.sinks.append(self.wandb)

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

        ``ok`` is False when the loss (or, without a grad scaler, the gradient) is not finite:
        the update is skipped, so the weights in memory stay the last good ones (with fp16's
        scaler an inf gradient is routine: it skips that update and lowers its scale). Rank
        ``r`` runs global micro-batches ``r*n .. r*n+n-1``, gradients are averaged once, at its
        last one, and the loss is summed over ranks so all take the same decisions.
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device.device)
        n = self.plan.grad_accum_local
        first = self.data_position + self.strategy.rank * n
        for i in range(n):
            x, y = (self._to_device(t) for t in self.train_batches.get(first + i))
            with self.strategy.sync_gradients(self.model, enabled=i == n - 1):
                with self.autocast():
                    _, loss = self.model(x, y)
                total += loss.detach()
                self.scaler.scale(loss / n).backward()
        loss_value = (self.strategy.sum_(total) / self.cfg.grad_accum).item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, math.nan, False
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        grad_norm = grad_norm_value(norm)
        if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.data_position += self.cfg.grad_accum
        return loss_value, grad_norm, True

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over each split's fixed batches. Ranks deal the batches out round-robin
        and gather the losses back in order, so the mean is the single-process one; a rank
        left without a batch runs a spare and drops its loss (under FSDP every forward is a
        collective all ranks must join)."""
        self.model.eval()
        out, world, rank = {}, self.strategy.world_size, self.strategy.rank
        try:
            for split, batches in self.eval_sets.items():
                losses = []
                for first in range(0, len(batches), world):
                    x, y = batches[first + rank] if first + rank < len(batches) else batches[0]
                    with self.autocast():
                        _, loss = self.model(self._to_device(x), self._to_device(y))
                    losses.append(loss.float())
                out[split] = (
                    self.strategy.interleave(torch.stack(losses), len(batches)).mean().item()
                )
        finally:
            self.model.train()
        return out

    def sample(self) -> str | None:
        """Text generated from ``--sample-prompt``; the seed is fixed so samples compare."""
        if self.tokenizer is None:
            return None
        context = self.raw_model.config.context_length
        ids = gpt2load.prompt_ids(self.tokenizer, self.cfg.sample_prompt)[-(context - 1) :]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device.device)
        with self.autocast():
            out = gpt2load.generate(
                self.raw_model,
                idx,
                self.cfg.sample_tokens,
                temperature=self.cfg.temperature,
                top_k=self.cfg.top_k,
                seed=self.cfg.seed,
                vocab_limit=self.tokenizer.n_vocab,
            )  # padded rows are no tokens
        return self.tokenizer.decode(out[0, len(ids) :].tolist(), errors="replace")

    # ------------------------------------------------------------ signals
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM finish the current step, save ``last`` and stop; a second aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._signum is not None:
                raise KeyboardInterrupt
            self._signum, self._stop_reason = signum, signal.Signals(signum).name
            self.log(
                f"\n{self._stop_reason}: stopping after this step and saving "
                f"{self.run_dir / LAST} (press Ctrl-C again to abort without saving)"
            )

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, previous in old.items():
                signal.signal(sig, previous)

    def request_stop(self, reason: str = "requested") -> None:
        """Stop after the current step as Ctrl-C would (saving ``last``); for callers and tests."""
        self._stop_reason = reason

    # ------------------------------------------------------------ loop
    def _on_eval(self, record: dict[str, Any]) -> bool:
        """Evaluate, update best and patience; True when early stopping is due."""
        losses = self.evaluate()
        record["val_loss"], record["eval_train_loss"] = losses["val"], losses["train"]
        self.last_val_loss, mark = losses["val"], ""
        if losses["val"] < self.best_val_loss:
            self.best_val_loss, self.evals_without_improvement = losses["val"], 0
            self.save(BEST)
            mark = f"  -> saved {self.run_dir / BEST}"
        else:
            self.evals_without_improvement += 1
        self.log(
            f"step {self.step}: train {losses['train']:.4f}, val {losses['val']:.4f} "
            f"(best {self.best_val_loss:.4f}){mark}"
        )
        return 0 < self.cfg.patience <= self.evals_without_improvement

    def _on_sample(self) -> None:
        if not self.strategy.is_main and not self.strategy.sharded:
            return  # a sharded model generates only with every rank joining in
        try:
            text = self.sample()
        except Exception as exc:
            self.log(f"warning: sampling failed: {exc}")
            return
        if text is None:
            return
        self.log(
            f"--- sample at step {self.step} ---\n{safe_text(self.cfg.sample_prompt + text)}\n---"
        )
        if self.strategy.is_main:
            for sink in self.sinks:
                sink.sample(self.step, self.cfg.sample_prompt, text)

    def _record(self, loss: float, grad_norm: float, lr: float, seconds: float) -> dict[str, Any]:
        self.step += 1
        self.elapsed_s += seconds
        self.tokens_seen += self._tokens_per_step
        tokens_per_s = self._tokens_per_step / max(seconds, 1e-9)
        record = {
            "step": self.step,
            "train_loss": loss,
            "lr": lr,
            "tokens_per_s": tokens_per_s,
            "grad_norm": grad_norm,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": round(self.elapsed_s, 4),
        }
        peak = self.device.peak_flops
        if peak is not None and self.amp_dtype is not torch.float32:
            record["mfu"] = self._flops_per_token * tokens_per_s / (peak * self.strategy.world_size)
        return record

    def fit(self) -> TrainResult:
        """Train until ``max_iters``, early stopping, a signal or a non-finite loss."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.strategy.is_main:
            write_run_config(self.run_dir, to_toml(self.cfg))
        self._open_sinks()
        result: TrainResult | None = None
        saved_at = self.step  # a resumed run's state is already on disk
        with self._signals():
            try:
                while self.step < cfg.max_iters:
                    lr = self.optimizer.param_groups[0]["lr"]
                    started = time.perf_counter()
                    loss, grad_norm, ok = self.train_step()
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device.device)
                    if not ok:
                        result = self._diverged(loss, grad_norm)
                        break
                    record = self._record(loss, grad_norm, lr, time.perf_counter() - started)
                    last_step = self.step == cfg.max_iters
                    early_stop = False
                    if self.step % cfg.eval_interval == 0 or last_step:
                        early_stop = self._on_eval(record)
                    for sink in self.sinks:
                        sink.step(record)
                    if cfg.sample_interval and self.step % cfg.sample_interval == 0:
                        self._on_sample()
                    for callback in self.callbacks:
                        callback(self, record)
                    if self.strategy.is_distributed:
                        # Ranks stop at the same step, or the others would wait forever in
                        # the next collective: a signal or request seen by any one counts.
                        early_stop, requested = self.strategy.any_true(
                            [early_stop, self._stop_reason is not None], self.device.device
                        )
                        if requested and self._stop_reason is None:
                            self._stop_reason = "stopped by another process"
                    stopping = early_stop or self._stop_reason is not None
                    if self.step % cfg.save_interval == 0 or last_step or stopping:
                        self.save(LAST)
                        saved_at = self.step
                    if early_stop:
                        result = self._result(
                            EARLY_STOPPED,
                            f"early stop: val loss has not "
                            f"improved for {cfg.patience} evaluations (best "
                            f"{self.best_val_loss:.4f})",
                        )
                        break
                    if self._stop_reason is not None:
                        result = self._result(
                            INTERRUPTED,
                            f"stopped ({self._stop_reason}) at step "
                            f"{self.step}; saved {self.run_dir / LAST}. Continue "
                            f"with: finetune resume {self.run_dir}",
                        )
                        break
                else:
                    if saved_at != self.step:
                        self.save(LAST)
                    result = self._result(COMPLETED, f"finished {cfg.max_iters} steps")
            finally:
                self.bar.close({}) if self.bar is not None else None
                self.bar = None
        ok = result.status in (COMPLETED, EARLY_STOPPED)
        summary = {
            "best_val_loss": result.best_val_loss,
            "status": result.status,
            "step": result.step,
        }
        for sink in self.sinks:
            if not isinstance(sink, ProgressBar):
                sink.close({**summary, "exit_code": 0 if ok else 1})
        self.log(result.message)
        return result

    def _result(self, status: str, message: str) -> TrainResult:
        best = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return TrainResult(status, self.step, self.run_dir, best, message, self._signum)

    def _diverged(self, loss: float, grad_norm: float) -> TrainResult:
        return self._result(DIVERGED, divergence_advice(self, loss, grad_norm))
