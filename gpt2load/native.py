"""The project's own checkpoint: one ``model.safetensors`` in our layout (a tied head
stored once) whose metadata holds the format tag and the config, so the file alone rebuilds
the model. ``finetune`` writes its ``best``/``last`` folders with it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_path

NATIVE_FORMAT = "gpt2load"
NATIVE_FILENAME = "model.safetensors"
GENERATION_KEY = "generation_config"  # sampling defaults, as Hugging Face's generation_config.json
GENERATION_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens")


def save_native(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    metadata: dict[str, Any] | None = None,
    *,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a native checkpoint into a folder or ``.safetensors`` file; the file.
    ``metadata`` values are stored as JSON strings (safetensors metadata is ``str -> str``),
    ``generation`` the sampling defaults ``generate`` and ``chat`` start from."""
    from safetensors.torch import save_file

    path = Path(path)
    file = path if path.suffix == ".safetensors" else path / NATIVE_FILENAME
    model = getattr(model, "_orig_mod", model)
    meta = {"format": NATIVE_FORMAT, "config": json.dumps(model.config.to_dict())}
    meta |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    if generation:
        kept = {k: generation[k] for k in GENERATION_FIELDS if k in generation}
        meta[GENERATION_KEY] = json.dumps(kept)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_head:
        del state["out_head.weight"]  # stored once, as the embedding
    with atomic_path(file) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return file


def generation_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sampling defaults that travel with a checkpoint (:data:`GENERATION_FIELDS`): a native
    file's own, else a ``generation_config.json`` beside it (``do_sample: false`` is temperature
    0); an unreadable record gives none rather than fail."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    native = path if path.suffix == ".safetensors" else folder / NATIVE_FILENAME
    raw: Any = None
    try:
        if native.is_file():
            from .formats.safetensors_reader import read_header

            text = read_header(native)[0].get(GENERATION_KEY)
            raw = json.loads(text) if text else None
        if raw is None and (folder / "generation_config.json").is_file():
            raw = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("do_sample") is False:
                raw["temperature"] = 0.0
    except Exception:  # a damaged file's CheckpointError included
        return {}
    return {k: raw[k] for k in GENERATION_FIELDS if k in raw} if isinstance(raw, dict) else {}
