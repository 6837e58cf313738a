"""Every GPT-2 checkpoint format, in and out.

Reading goes container -> layout -> plan -> model: ``detect`` finds the files
and their container from their bytes, a reader lists the stored tensors from
headers, ``layouts`` (the name tables) and ``plan`` match them to the model's
parameters and check every shape, and ``loader`` fills a meta-device model.
Writing (``export``) runs the same tables backwards.
"""

from __future__ import annotations

from .convert import convert
from .dtypes import parse_dtype
from .errors import CheckpointError
from .info import CheckpointInfo, detect_format, inspect_checkpoint
from .loader import load_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "convert",
    "detect_format",
    "inspect_checkpoint",
    "load_checkpoint",
    "parse_dtype",
]
