"""The training loop: optimizer steps, evaluations, samples, checkpoints, stopping.

A :class:`Trainer` owns a run's mutable state, so a checkpoint holds exactly what the next step
needs to continue as if it had never stopped; how the work is spread is the plan's strategy."""

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
from tqdm import tqdm

import gpt2load
from gpt2load import GPT

from . import outcome
from .batches import EVAL_TRAIN_STREAM, EVAL_VAL_STREAM, TRAIN_STREAM, BatchSource
from .checkpoint import BEST, LAST, restore, save_checkpoint, write_run_config
from .data import PreparedData, check_fits_context, data_key
from .device import flops_per_token
from .flags import to_toml
from .optim import build_optimizer
from .outcome import COMPLETED, DIVERGED, EARLY_STOPPED, INTERRUPTED, TrainResult
from .plan import Plan
from .sinks import Log, ProgressBar, RunFiles, Sink, Wandb, safe_text, wandb_mode
from .strategy import rank_seed

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
        cfg, strategy, self.device = plan.cfg, plan.strategy, plan.device.device
        self.plan, self.cfg, self.strategy, self.run_dir = plan, cfg, strategy, plan.run_dir
        self.data, self.tokenizer, self.callbacks, self._log = data, tokenizer, [*callbacks], log
        self.carry_files = dict(carry_files or {})  # so every checkpoint generates alone
        self._stop_reason: str | None = None
        self._signum: int | None = None
        self.raw_model = model.to(self.device).train()  # the module the optimizer updates
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.model = strategy.wrap(self.raw_model, self.device)
        if plan.resume is None:  # --seed decides dropout too, whatever the init
            torch.manual_seed(rank_seed(cfg.seed, strategy.rank) if strategy.rank else cfg.seed)
        check_fits_context(data, cfg.block_size)  # each split holds a window
        self.train_batches = BatchSource(data.load("train"), cfg, TRAIN_STREAM)
        self.eval_sets = {}  # the same batches every time, so evaluations compare
        for split, stream in (("train", EVAL_TRAIN_STREAM), ("val", EVAL_VAL_STREAM)):
            source = BatchSource(data.load(split), cfg, stream)
            self.eval_sets[split] = [source.get(i) for i in range(cfg.eval_batches)]
        self.optimizer, self.scheduler = build_optimizer(self.raw_model, cfg, self.device.type)
        scaled = plan.dtype is torch.float16 and self.device.type != "mps"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=scaled)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.step = self.start_step = self.data_position = self.tokens_seen = 0
        self.best_val_loss, self.evals_without_improvement = math.inf, 0
        self.elapsed_s, self.val_loss, self.wandb_run_id = 0.0, None, None
        self.data_key = data_key(data)  # recorded so a resume can tell it has the same tokens
        if plan.resume is not None:
            restore(self, plan.resume)
        self.bar: ProgressBar | None = None
        self.wandb: Wandb | None = None
        self.sinks: list[Sink] = []

    # ------------------------------------------------------------ output
    def log(self, message: str) -> None:
        if self.strategy.is_main:
            with tqdm.external_write_mode():  # the bar is cleared, then drawn again below
                self._log(message)

    def _status(self, text: str | None, *, or_log: bool = True) -> None:
        """What the run does while no step ends, on the bar's line (else logged); None: figures."""
        if self.bar is not None and self.bar.enabled:
            self.bar.status(text)
        elif or_log and text is not None:
            self.log(text)

    def _open_sinks(self) -> None:
        cfg, main, run, model = self.cfg, self.strategy.is_main, self.run_dir, self.raw_model
        self.bar = ProgressBar(cfg.max_iters, self.step, run.name, cfg.progress and main)
        resume_step = self.step if self.plan.resume else None
        files = [RunFiles(run, resume_step, self.log)] if main else []
        name, tags = cfg.wandb_run_name or run.resolve().name, list(cfg.wandb_tags) or None
        config = {**cfg.to_dict(), "model": model.config.to_dict()}
        config["parameters"] = model.num_parameters()
        mode = wandb_mode(cfg.wandb_mode, cfg.wandb and main)
        init = {"project": cfg.wandb_project, "name": name, "tags": tags, "config": config}
        self.wandb = Wandb(mode, run, self.log, self.wandb_run_id, **init)
        self.sinks = [*files, self.wandb]  # the bar aside: it is drawn first, closed first

    # ------------------------------------------------------------ steps
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.plan.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.plan.dtype)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x, y = (t.pin_memory().to(self.device, non_blocking=True) for t in (x, y))
        with self.autocast():
            return self.model(x.to(self.device), y.to(self.device))[1]

    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over ``grad_accum`` micro-batches: (mean loss, grad norm, ok). Not
        ``ok`` when the loss, or (without fp16's scaler, for which an inf gradient is routine) the
        gradient, is not finite: the update is skipped, so the weights stay the last good ones.
        Rank ``r`` runs micro-batches ``r*n ..``; the loss is summed over ranks so all agree."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        n = self.strategy.local_grad_accum(self.cfg.grad_accum)
        first = self.data_position + self.strategy.rank * n
        for i in range(n):
            with self.strategy.sync_gradients(self.model, enabled=i == n - 1):
                loss = self._loss(*self.train_batches.get(first + i))
                total += loss.detach()
                self.scaler.scale(loss / n).backward()
        loss_value = (self.strategy.all_reduce(total) / self.cfg.grad_accum).item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, math.nan, False
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        # under FSDP the norm is a DTensor
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
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
        """Mean loss over each split's fixed batches, dealt out to ranks round-robin and gathered
        back in order, so the mean is the single-process one. A rank left without a batch runs a
        spare and drops its loss: under FSDP every forward is a collective all ranks must join."""
        self.model.eval()
        out, world, rank = {}, self.strategy.world_size, self.strategy.rank
        total, done = sum(map(len, self.eval_sets.values())), 0
        self._status(f"evaluating ({total} batches) ...")
        try:
            for split, batches in self.eval_sets.items():
                losses = []
                for first in range(0, len(batches), world):
                    x, y = batches[first + rank] if first + rank < len(batches) else batches[0]
                    losses.append(self._loss(x, y).float())
                    done += min(world, len(batches) - first)
                    self._status(f"evaluating: {done}/{total} batches", or_log=False)
                gathered = self.strategy.interleave(torch.stack(losses), len(batches))
                out[split] = gathered.mean().item()
        finally:
            self.model.train()
            self._status(None)
        return out

    def sample(self) -> str | None:
        """Text generated from ``--sample-prompt``; the seed is fixed so samples compare."""
        if self.tokenizer is None:
            return None
        cfg, context = self.cfg, self.raw_model.config.context_length
        ids = gpt2load.prompt_ids(self.tokenizer, cfg.sample_prompt)[-(context - 1) :]
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        options = {"temperature": cfg.temperature, "top_k": cfg.top_k, "seed": cfg.seed}
        options["vocab_limit"] = self.tokenizer.n_vocab  # padded rows are no tokens
        with self.autocast():
            out = gpt2load.generate(self.raw_model, idx, cfg.sample_tokens, **options)
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
        self.val_loss, mark = losses["val"], ""
        if losses["val"] < self.best_val_loss:
            self.best_val_loss, self.evals_without_improvement = losses["val"], 0
            save_checkpoint(self, BEST)
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
            return self.log(f"warning: sampling failed: {exc}")
        if text is not None:
            prompt = self.cfg.sample_prompt
            self.log(f"--- sample at step {self.step} ---\n{safe_text(prompt + text)}\n---")
            for sink in self.sinks:  # on the main rank only: the others' are off
                sink.sample(self.step, prompt, text)

    def _record(self, loss: float, grad_norm: float, lr: float, seconds: float) -> dict[str, Any]:
        tokens = self.cfg.batch_size * self.cfg.block_size * self.cfg.grad_accum
        self.step += 1
        self.elapsed_s += seconds
        self.tokens_seen += tokens
        record = {"step": self.step, "train_loss": loss, "lr": lr}
        record |= {"tokens_per_s": tokens / max(seconds, 1e-9), "grad_norm": grad_norm}
        record |= {"tokens_seen": self.tokens_seen, "elapsed_s": round(self.elapsed_s, 4)}
        peak = self.plan.device.peak_flops
        if peak is not None and self.plan.dtype is not torch.float32:
            flops = flops_per_token(self.raw_model.config, self.cfg.block_size)
            record["mfu"] = flops * record["tokens_per_s"] / (peak * self.strategy.world_size)
        return record

    def fit(self) -> TrainResult:
        """Train until ``max_iters``, early stopping, a signal or a non-finite loss; say how."""
        began = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.strategy.is_main:
            write_run_config(self.run_dir, to_toml(self.cfg))
        self._open_sinks()
        with self._signals():
            try:
                result = self._train()
            finally:
                self.bar.close({})
        end = {"best_val_loss": result.best_val_loss, "status": result.status, "step": result.step}
        end["exit_code"] = 0 if result.status in (COMPLETED, EARLY_STOPPED) else 1
        for sink in self.sinks:
            sink.close(dict(end))
        self.log(result.message)
        if result.status != DIVERGED:
            self.log(outcome.summary(self, time.monotonic() - began))
        return result

    def _train(self) -> TrainResult:
        cfg = self.cfg
        while self.step < cfg.max_iters:
            if self.step == self.start_step:
                what = "compiling the model, a minute or more" if cfg.compile else "warming up"
                self._status(f"first step ({what}) ...")
            lr, started = self.optimizer.param_groups[0]["lr"], time.perf_counter()
            loss, grad_norm, ok = self.train_step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if not ok:
                return self._result(DIVERGED, outcome.divergence_advice(self, loss, grad_norm))
            record = self._record(loss, grad_norm, lr, time.perf_counter() - started)
            last_step = self.step == cfg.max_iters
            self.bar.step(record)  # counted before an evaluation shows on its line
            early_stop = (self.step % cfg.eval_interval == 0 or last_step) and self._on_eval(record)
            for sink in self.sinks:
                sink.step(record)
            if cfg.sample_interval and self.step % cfg.sample_interval == 0:
                self._on_sample()
            for callback in self.callbacks:
                callback(self, record)
            if self.strategy.is_distributed:
                # Ranks stop at the same step, or the others would wait forever in the next
                # collective: a signal or request seen by any one counts.
                stops = [early_stop, self._stop_reason is not None]
                early_stop, requested = self.strategy.any_true(stops, self.device)
                if requested and self._stop_reason is None:
                    self._stop_reason = "stopped by another process"
            stopping = early_stop or self._stop_reason is not None
            if self.step % cfg.save_interval == 0 or last_step or stopping:
                save_checkpoint(self, LAST)
            if early_stop:
                why = f"val loss has not improved for {cfg.patience} evaluations"
                best = f"best {self.best_val_loss:.4f}"
                return self._result(EARLY_STOPPED, f"early stop: {why} ({best})")
            if self._stop_reason is not None:
                why = f"stopped ({self._stop_reason}) at step {self.step}"
                then = f"Continue with: finetune resume {self.run_dir}"
                return self._result(INTERRUPTED, f"{why}; saved {self.run_dir / LAST}. {then}")
        return self._result(COMPLETED, f"finished {cfg.max_iters} steps")

    def _result(self, status: str, message: str) -> TrainResult:
        best = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return TrainResult(status, self.step, self.run_dir, best, message, self._signum)
