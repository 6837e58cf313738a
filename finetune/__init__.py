"""finetune: continued pretraining and fine-tuning of GPT-2 on your text, with
``finetune shakespeare`` / ``finetune pretrain`` or from Python::

    from finetune import TrainConfig, train
    result = train(TrainConfig(data=["notes.txt"], init="gpt2", out="runs/notes"))

Names are imported lazily so ``finetune --help`` does not wait for torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": ("finetune.config", "TrainConfig"),
    "train": ("finetune.launch", "start"),
    "resume": ("finetune.launch", "resume"),
    "Trainer": ("finetune.trainer", "Trainer"),
    "TrainResult": ("finetune.trainer", "TrainResult"),
    "prepare_text": ("finetune.prepare", "prepare_text"),
    "prepare_shakespeare": ("finetune.prepare", "prepare_shakespeare"),
    "select_device": ("finetune.device", "select_device"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'finetune' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    globals()[name] = getattr(importlib.import_module(module), attr)
    return globals()[name]
