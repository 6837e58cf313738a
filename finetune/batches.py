"""Random training windows where batch ``i`` is a pure function of ``(seed, stream, i)``.

No sampler state is carried from one batch to the next, so a run's whole data position is
one integer: resume is exact, and data-parallel ranks draw their share of a step without
talking to each other.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError

TRAIN_STREAM, EVAL_TRAIN_STREAM, EVAL_VAL_STREAM = 0, 1, 2  # independent streams of one seed


class BatchSource:
    """Windows of ``block_size + 1`` tokens at random offsets into ``tokens``."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        block_size: int,
        seed: int,
        stream: int,
        split: str,
    ) -> None:
        if len(tokens) < block_size + 1:
            raise DataError(
                f"the {split} split holds {len(tokens):,} tokens, fewer than one context window "
                f"(--block-size {block_size} + 1); give more text or lower --block-size"
            )
        self.tokens, self.batch_size, self.block_size = tokens, batch_size, block_size
        self.seed, self.stream, self._offsets = seed, stream, np.arange(block_size + 1)

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, ``[batch, block]`` int64 each, on the CPU."""
        rng = np.random.default_rng([self.seed, self.stream, index])
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        data = torch.from_numpy(
            np.asarray(self.tokens[starts[:, None] + self._offsets], dtype=np.int64)
        )
        return data[:, :-1], data[:, 1:]

    def fixed(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` batches: the same every time, so evaluations compare."""
        return [self.get(i) for i in range(count)]
