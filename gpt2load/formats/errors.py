"""Where the formats find their error type: the one in :mod:`gpt2load.errors`."""

from __future__ import annotations

from ..errors import CheckpointError

__all__ = ["CheckpointError"]
