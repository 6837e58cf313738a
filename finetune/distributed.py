"""Who this process is in a (future) data-parallel run.

The loop is written against this small record, so adding DDP means filling in
the rank and world size from torchrun's environment and wrapping the model;
batch selection, gradient-accumulation split and "only rank 0 writes" already
read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError, DistributedNotSupported


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics, samples and W&B."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def local_grad_accum(self, grad_accum: int) -> int:
        """Micro-batches this rank runs per optimizer step (the global count split evenly)."""
        if grad_accum % self.world_size:
            raise ConfigError(
                f"--grad-accum {grad_accum} must be a multiple of the {self.world_size} processes"
            )
        return grad_accum // self.world_size

    @classmethod
    def from_env(cls) -> DistContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1:
            raise DistributedNotSupported(
                f"started as one of {world_size} processes (torchrun), but multi-process "
                "training is not available yet; run a single process"
            )
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=world_size,
        )
