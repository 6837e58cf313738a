"""Random training windows where batch number ``i`` is a pure function of ``(seed, stream, i)``.

Because no sampler state is carried from one batch to the next, the whole
"data position" of a run is one integer: the index of the next micro-batch.
That makes resuming exact, and lets data-parallel ranks each compute their own
share of a global batch without talking to each other.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import DataError

# Independent streams of windows drawn from the same seed.
TRAIN_STREAM = 0
EVAL_TRAIN_STREAM = 1
EVAL_VAL_STREAM = 2


class BatchSource:
    """Windows of ``block_size + 1`` tokens at random offsets into ``tokens``."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        block_size: int,
        seed: int,
        stream: int = TRAIN_STREAM,
        split: str = "train",
    ) -> None:
        if len(tokens) < block_size + 1:
            raise DataError(
                f"the {split} split holds {len(tokens):,} tokens, fewer than one context window "
                f"(--block-size {block_size} + 1); give more text or lower --block-size"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.stream = stream
        self._offsets = np.arange(block_size + 1)

    def offsets(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream, index])
        return rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, ``[batch, block]`` int64 each, on the CPU."""
        starts = self.offsets(index)
        windows = np.asarray(self.tokens[starts[:, None] + self._offsets], dtype=np.int64)
        data = torch.from_numpy(windows)
        return data[:, :-1], data[:, 1:]

    def fixed(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``count`` batches: the same every time, so evaluations compare."""
        return [self.get(i) for i in range(count)]
