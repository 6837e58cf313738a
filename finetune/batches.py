"""Random training windows where batch ``i`` is a pure function of ``(seed, stream, i)``.

No sampler state is carried from one batch to the next, so a run's whole data position is
one integer: resume is exact, and data-parallel ranks draw their share of a step without
talking to each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig

TRAIN_STREAM, EVAL_TRAIN_STREAM, EVAL_VAL_STREAM = 0, 1, 2  # independent streams of one seed


class BatchSource:
    """Windows of ``block_size + 1`` tokens at random offsets into ``tokens``."""

    def __init__(self, tokens: np.ndarray, cfg: TrainConfig, stream: int) -> None:
        self.tokens, self.cfg, self.stream = tokens, cfg, stream

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, ``[batch, block]`` int64 each, on the CPU."""
        block, rng = self.cfg.block_size, np.random.default_rng([self.cfg.seed, self.stream, index])
        starts = rng.integers(0, len(self.tokens) - block, size=self.cfg.batch_size)
        windows = self.tokens[starts[:, None] + np.arange(block + 1)]
        data = torch.from_numpy(np.asarray(windows, dtype=np.int64))
        return data[:, :-1], data[:, 1:]
