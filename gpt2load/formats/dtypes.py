"""Spellings of floating-point dtypes that users type on a command line or pass from Python."""

from __future__ import annotations

import torch

_BY_NAME: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "f32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "f16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "fp64": torch.float64,
    "f64": torch.float64,
    "double": torch.float64,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A ``torch.dtype`` for ``dtype`` (``None`` stays ``None``, meaning "as stored").

    Only floating dtypes make sense for model weights, so integer dtypes are refused
    here rather than producing a model that cannot run.
    """
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _BY_NAME:
            known = ", ".join(sorted(_BY_NAME))
            raise ValueError(f"unknown dtype {dtype!r}; use one of: {known}")
        resolved = _BY_NAME[key]
    else:
        raise TypeError(f"dtype must be a torch.dtype or a string, got {type(dtype).__name__}")
    if not resolved.is_floating_point:
        raise ValueError(f"model weights need a floating dtype, got {resolved}")
    return resolved
