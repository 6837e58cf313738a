"""Every GPT-2 checkpoint format, in and out: ``detect`` finds the files and their container
from their bytes, a reader lists the stored tensors from headers, ``layouts`` (the name tables)
and ``plan`` match them to the model's parameters, ``checkpoint`` fills a meta-device model;
writing (``export``, ``convert``) runs the same tables backwards."""

from __future__ import annotations

from ..errors import CheckpointError
from .checkpoint import load_checkpoint
from .convert import convert
from .info import CheckpointInfo, detect_format, inspect_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "convert",
    "detect_format",
    "inspect_checkpoint",
    "load_checkpoint",
]
