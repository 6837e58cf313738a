"""gpt2load: OpenAI's GPT-2 weights in a from-scratch PyTorch model.

Names are imported lazily so ``gpt2load --help`` and ``import gpt2load`` do not
pay for torch until a model is actually touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "GPTConfig": "gpt2load.config",
    "preset": "gpt2load.config",
    "GPT": "gpt2load.model",
    "KVCache": "gpt2load.model",
    "generate": "gpt2load.generation",
    "get_tokenizer": "gpt2load.tokenizer",
    "load": "gpt2load.loading",
    "resolve": "gpt2load.loading",
    "save_native": "gpt2load.native",
    "download": "gpt2load.downloads",
}

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "download",
    "generate",
    "get_tokenizer",
    "load",
    "preset",
    "resolve",
    "save_native",
]

if TYPE_CHECKING:  # pragma: no cover
    from .config import GPTConfig, preset
    from .downloads import download
    from .generation import generate
    from .loading import load, resolve
    from .model import GPT, KVCache
    from .native import save_native
    from .tokenizer import get_tokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt2load' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
