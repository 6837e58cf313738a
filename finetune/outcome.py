"""How a run ends: its result, its exit code, and what to tell the user after a divergence."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint import LAST, find_checkpoint, read_info

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

COMPLETED, EARLY_STOPPED, INTERRUPTED, DIVERGED = (
    "completed",
    "early_stopped",
    "interrupted",
    "diverged",
)


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


def divergence_advice(trainer: Trainer, loss: float, grad_norm: float) -> str:
    """Stop on a non-finite loss or gradient, with advice that fits the cause: broken
    weights are not a learning-rate problem, and resume is offered only when there is a
    checkpoint to resume from."""
    what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
    stopped = f"training stopped: {what} at step {trainer.step + 1} is not finite"
    with torch.no_grad():
        broken = [
            n for n, p in trainer.raw_model.named_parameters() if not bool(torch.isfinite(p).all())
        ]
    if trainer.step == trainer.start_step and (broken or trainer.amp_dtype is not torch.float16):
        source = f"--init {trainer.cfg.init}" if trainer.step == 0 else f"{trainer.run_dir / LAST}"
        held = (
            f"{len(broken)} of its tensors hold NaN or inf ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''})"
            if broken
            else "its finite values already give a non-finite loss"
        )
        return trainer._result(
            DIVERGED,
            f"{stopped}, before any update: the starting weights ({source}) are broken: "
            f"{held}. This is not a learning-rate problem; start from other weights "
            f"(`gpt2load verify` checks a checkpoint).",
        )
    kept = find_checkpoint(trainer.run_dir, LAST)
    if kept is None:
        then = (
            "no checkpoint was saved yet, so start the run again (add --overwrite to "
            "reuse this --out)"
        )
    else:
        step = read_info(kept).get("step")
        then = (
            f"the last good checkpoint is {kept}{f' (step {step})' if step is not None else ''}"
            f"; continue from it with `finetune resume {trainer.run_dir} --lr LOWER`"
        )
    return f"{stopped}. Lower --lr (or use --dtype bfloat16/float32 instead of float16): {then}."
