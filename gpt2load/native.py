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


GENERATION_KEY = "generation_config"  # sampling defaults, as Hugging Face's generation_config.json
GENERATION_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens")


def save_native(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    *,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a native checkpoint; ``path`` is a folder or a ``.safetensors`` file.

    Returns the file written. ``metadata`` values are stored as JSON strings next to
    the config (safetensors metadata must be ``str -> str``). ``generation`` holds the
    sampling defaults the model is meant to be used with (``temperature``, ``top_k``,
    ``top_p``, ``max_new_tokens``): ``generate`` and ``chat`` start from them.
    """
    from safetensors.torch import save_file

    path = Path(path)
    file = path if path.suffix == ".safetensors" else path / NATIVE_FILENAME
    config: GPTConfig = getattr(model, "_orig_mod", model).config
    meta = {"format": NATIVE_FORMAT, "config": json.dumps(config.to_dict())}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    if generation:
        meta[GENERATION_KEY] = json.dumps(
            {k: generation[k] for k in GENERATION_FIELDS if k in generation}
        )
    with atomic_path(file) as tmp:
        save_file(native_state_dict(model), str(tmp), metadata=meta)
    return file


def generation_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sampling defaults that travel with a checkpoint: a native file's own (see
    :func:`save_native`), else a Hugging Face ``generation_config.json`` beside it; only the
    keys of :data:`GENERATION_FIELDS` (``do_sample: false`` reads as temperature 0). An
    unreadable record is no reason to fail: it gives no defaults."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    native = path if path.suffix == ".safetensors" else folder / NATIVE_FILENAME
    raw: Any = None
    try:
        if native.is_file():
            from safetensors import safe_open

            with safe_open(str(native), framework="pt") as fh:
                text = (fh.metadata() or {}).get(GENERATION_KEY)
            raw = json.loads(text) if text else None
        if raw is None and (folder / "generation_config.json").is_file():
            raw = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("do_sample") is False:
                raw["temperature"] = 0.0
    except Exception:  # safetensors' own error type included
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: raw[k] for k in GENERATION_FIELDS if k in raw}
