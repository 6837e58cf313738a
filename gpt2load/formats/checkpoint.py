"""Opening a checkpoint: find its files, read its headers, plan the mapping.

Everything here reads metadata only, so ``info`` and ``detect_format`` are as
cheap as the headers (for PyTorch pickles: an mmap-backed ``torch.load``), with one
exception: a stored output head that no config calls tied or untied is compared
with the embedding, since that decides which model the file holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .detect import SAFETENSORS, TF, TORCH, Located, locate
from .errors import CheckpointError
from .hints import Hints, read_hints, with_values
from .layouts import TIED
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


def open_checkpoint(path: str | os.PathLike[str], *, n_head: int | None = None) -> OpenCheckpoint:
    """Find, read the headers of and plan a checkpoint; ``n_head`` supplies a head count the
    files do not record (it must agree with one they do)."""
    located = locate(Path(path))
    source = open_source(located)
    label = _label(located)
    hints = read_hints(located.container, located.folder, source.metadata)
    if n_head is not None:
        stated = hints.values.get("n_head")
        if stated is not None and stated != n_head:
            raise CheckpointError(f"{label} records n_head={stated}, not the n_head={n_head} given")
        hints = with_values(hints, n_head=n_head)
    plan = choose_plan(source.entries(), hints, label, source.duplicates())
    if plan.head is not None and not _head_is_embedding(source, plan):
        if "tie_head" in hints.values:
            embedding = plan.stored_for(TIED["out_head.weight"])
            raise CheckpointError(
                f"{label}: the output head {plan.head!r} differs from the token embedding "
                f"{embedding!r}, but {hints.said_by} ties the two; if the head is its own "
                f"weight, say so in the config (tie_word_embeddings: false)"
            )
        # No word on tying, and a head of its own: the book's GPTModel, trained untied.
        hints = with_values(hints, tie_head=False)
        plan = choose_plan(source.entries(), hints, label, source.duplicates())
    return OpenCheckpoint(located, source, hints, plan)


def _head_is_embedding(source: TensorSource, plan: Plan) -> bool:
    """Whether a stored output head is the embedding (shared storage, or equal values).

    GPT-2's own files in the book's layout store the tied head as a copy; a model the
    book's code trained has a head that has moved away from the embedding.
    """
    embedding_name = plan.stored_for(TIED["out_head.weight"])
    head = source.tensor(plan.head)
    embedding = source.tensor(embedding_name)
    same = head.data_ptr() == embedding.data_ptr() or torch.equal(head, embedding)
    del head, embedding
    source.release(plan.head)
    source.release(embedding_name)
    return same
