"""How a run ends: its result and exit code, what it says at the end, and the advice after a
divergence."""

from __future__ import annotations

import math
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint import BEST, LAST, find_checkpoint, read_info

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

COMPLETED, EARLY_STOPPED = "completed", "early_stopped"
INTERRUPTED, DIVERGED = "interrupted", "diverged"


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


def summary(trainer: Trainer, seconds: float) -> str:
    """What the run left (best and last checkpoint, time this process trained), and commands."""
    best, last = find_checkpoint(trainer.run_dir, BEST), find_checkpoint(trainer.run_dir, LAST)
    lines = [f"  took {_duration(seconds)} (steps {trainer.start_step + 1}-{trainer.step})"]
    if best is not None:
        at = read_info(best).get("step", "?")
        lines.append(f"  best: val loss {trainer.best_val_loss:.4f} at step {at}, in {best}")
    if last is not None:
        lines.append(f"  last: step {read_info(last).get('step', '?')}, in {last}")
    use = shlex.quote(str(best or last))
    if best or last:
        base = shlex.quote("gpt2" if trainer.cfg.is_scratch else trainer.cfg.init)
        lines.append(f"  next: gpt2load generate {use}")
        lines.append(f"        gpt2load chat {use}")
        lines.append(f"        gpt2load compare {base} {use}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours else f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


def divergence_advice(trainer: Trainer, loss: float, grad_norm: float) -> str:
    """Advice that fits the cause of a non-finite loss or gradient: broken weights are not a
    learning-rate problem, and resume is offered only when there is a checkpoint to resume."""
    what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
    stopped = f"training stopped: {what} at step {trainer.step + 1} is not finite"
    broken = [n for n, p in trainer.raw_model.named_parameters() if not torch.isfinite(p).all()]
    fp16 = trainer.plan.dtype is torch.float16
    if trainer.step == trainer.start_step and (broken or not fp16):
        source = f"--init {trainer.cfg.init}" if trainer.step == 0 else f"{trainer.run_dir / LAST}"
        held = "its finite values already give a non-finite loss"
        if broken:
            more = ", ..." if len(broken) > 3 else ""
            held = f"{len(broken)} of its tensors hold NaN or inf ({', '.join(broken[:3])}{more})"
        return (
            f"{stopped}, before any update: the starting weights ({source}) are broken: "
            f"{held}. This is not a learning-rate problem; start from other weights "
            f"(`gpt2load verify` checks a checkpoint)."
        )
    kept = find_checkpoint(trainer.run_dir, LAST)
    if kept is None:
        then = "no checkpoint was saved yet, so start the run again (add --overwrite to reuse "
        then += "this --out)"
    else:
        step = read_info(kept).get("step")
        then = (
            f"the last good checkpoint is {kept}{f' (step {step})' if step is not None else ''}"
            f"; continue from it with `finetune resume {trainer.run_dir} --lr LOWER`"
        )
    return f"{stopped}. Lower --lr (or use --dtype bfloat16/float32 instead of float16): {then}."
