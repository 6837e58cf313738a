"""Opening a checkpoint: find its files, read its headers, plan the mapping.

Everything here reads metadata only, so ``info`` and ``detect_format`` are as
cheap as the headers (for PyTorch pickles: an mmap-backed ``torch.load``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .detect import SAFETENSORS, TF, TORCH, Located, locate
from .errors import CheckpointError
from .hints import Hints, read_hints
from .plan import Plan, choose_plan
from .safetensors_reader import SafetensorsSource
from .sources import TensorSource
from .tf_bundle import TFBundleSource
from .torch_reader import TorchSource

FORMAT_DESCRIPTIONS = {
    "native": "gpt2load native checkpoint (safetensors with config metadata)",
    "openai-tf": "OpenAI TensorFlow checkpoint",
    "hf-safetensors": "Hugging Face GPT-2 weights (safetensors)",
    "hf-torch": "Hugging Face GPT-2 weights (PyTorch pickle)",
    "nanogpt-torch": "nanoGPT checkpoint (PyTorch pickle)",
    "nanogpt-safetensors": "nanoGPT weights (safetensors)",
    "rasbt-torch": "from-scratch (book) state dict (PyTorch pickle)",
    "rasbt-safetensors": "from-scratch (book) state dict (safetensors)",
}


@dataclass
class OpenCheckpoint:
    located: Located
    source: TensorSource
    hints: Hints
    plan: Plan

    @property
    def format(self) -> str:
        if self.hints.native:
            return "native"
        return f"{self.plan.layout.name}-{self.located.container}"

    @property
    def label(self) -> str:
        return _label(self.located)


def _label(located: Located) -> str:
    """How messages name a checkpoint: its file, or its folder when it is sharded."""
    files = located.files
    return str(files[0]) if len(files) == 1 else f"{located.folder} ({len(files)} shards)"


def open_source(located: Located) -> TensorSource:
    if located.container == SAFETENSORS:
        return SafetensorsSource(located.files)
    if located.container == TORCH:
        return TorchSource(located.files)
    if located.container == TF:
        return TFBundleSource(located.files[0])
    raise CheckpointError(f"unknown container {located.container!r}")


def open_checkpoint(path: str | os.PathLike[str]) -> OpenCheckpoint:
    located = locate(Path(path))
    source = open_source(located)
    hints = read_hints(located.container, located.folder, source.metadata)
    plan = choose_plan(source.entries(), hints, _label(located), source.duplicates())
    return OpenCheckpoint(located, source, hints, plan)
