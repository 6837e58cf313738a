"""The project's own checkpoint: one safetensors file that describes itself.

``model.safetensors`` holds the state dict in our layout (a tied ``out_head``
is stored once, as ``tok_emb.weight``; an untied one as itself) and its safetensors metadata carries the
format tag and the model config, so the file alone is enough to rebuild the
model. ``finetune`` writes its ``best``/``last`` folders with this file inside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .fileio import atomic_path

NATIVE_FORMAT = "gpt2load"
NATIVE_FILENAME = "model.safetensors"
TIED_KEYS = ("out_head.weight",)


def native_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors in our layout, minus a tied head, contiguous and on the CPU."""
    model = getattr(model, "_orig_mod", model)
    skip = TIED_KEYS if model.config.tie_head else ()
    state = model.state_dict()
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in skip}


def save_native(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a native checkpoint; ``path`` is a folder or a ``.safetensors`` file.

    Returns the file written. ``metadata`` values are stored as JSON strings next to
    the config (safetensors metadata must be ``str -> str``).
    """
    from safetensors.torch import save_file

    path = Path(path)
    file = path if path.suffix == ".safetensors" else path / NATIVE_FILENAME
    config: GPTConfig = getattr(model, "_orig_mod", model).config
    meta = {"format": NATIVE_FORMAT, "config": json.dumps(config.to_dict())}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    with atomic_path(file) as tmp:
        save_file(native_state_dict(model), str(tmp), metadata=meta)
    return file
