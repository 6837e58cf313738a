"""Opening a checkpoint (files, headers, plan) and building a ``GPT`` from it: each parameter
of a meta-device model is assigned once, a stored tensor that needs no change as a copy-on-write
view of the memory-mapped file, one transposed or cast as a copy whose stored pages are then
dropped, so peak memory stays near the copies made."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DTYPE_ALIASES
from ..errors import CheckpointError
from ..model import GPT
from .detect import SAFETENSORS, TF, TORCH, Located, locate
from .hints import Hints, read_hints
from .layouts import TIED
from .plan import Plan, choose_plan, empty_model
from .safetensors_reader import SafetensorsSource
from .sources import TensorSource
from .tf_bundle import TFBundleSource
from .torch_reader import TorchSource

_KNOWN = {*DTYPE_ALIASES, *DTYPE_ALIASES.values()}  # float32, fp32, f32, float, ...


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A ``torch.dtype`` for ``dtype`` (None: as stored), floating only: integer weights cannot run."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _KNOWN:
            raise ValueError(f"unknown dtype {dtype!r}; use one of: {', '.join(sorted(_KNOWN))}")
        dtype = getattr(torch, DTYPE_ALIASES.get(key, key))
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or a string, got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ValueError(f"model weights need a floating dtype, got {dtype}")
    return dtype


@dataclass
class OpenCheckpoint:
    located: Located
    source: TensorSource
    hints: Hints
    plan: Plan

    @property
    def format(self) -> str:
        layout, container = self.plan.layout.name, self.located.container
        return "native" if self.hints.native else f"{layout}-{container}"


def open_checkpoint(
    path: str | os.PathLike[str], *, n_head: int | None = None, check_crc: bool | None = None
) -> OpenCheckpoint:
    """Find, read the headers of and plan a checkpoint; ``n_head`` supplies a head count the
    files do not record (it must agree with one they do), ``check_crc`` is for TF files."""
    located = locate(Path(path))
    kind, files = located.container, located.files
    readers = {SAFETENSORS: SafetensorsSource, TORCH: TorchSource}
    source = TFBundleSource(files[0], check_crc=check_crc) if kind == TF else readers[kind](files)
    # Messages name the file, or the folder of a sharded checkpoint.
    label = str(files[0]) if len(files) == 1 else f"{located.folder} ({len(files)} shards)"
    hints = read_hints(located.container, located.folder, source.metadata)
    if n_head is not None:
        stated = hints.values.get("n_head")
        if stated is not None and stated != n_head:
            raise CheckpointError(f"{label} records n_head={stated}, not the n_head={n_head} given")
        hints = hints.with_values(n_head=n_head)
    plan = choose_plan(source, hints, label)
    if plan.head is not None and not _head_is_embedding(source, plan):
        if "tie_head" in hints.values:
            embedding = plan.stored_for(TIED["out_head.weight"])
            advice = (  # nanoGPT has no switch: its load makes the head the embedding
                "nanoGPT always ties the two, so its logits would differ from this file's; "
                "re-save the checkpoint from the model nanoGPT trained"
                if hints.said_by == "model_args"
                else "if the head is its own weight, say so in the config "
                "(tie_word_embeddings: false)"
            )
            raise CheckpointError(
                f"{label}: the output head {plan.head!r} differs from the token embedding "
                f"{embedding!r}, but {hints.said_by} ties the two; {advice}"
            )
        # No word on tying, and a head of its own: the book's GPTModel, trained untied.
        hints = hints.with_values(tie_head=False)
        plan = choose_plan(source, hints, label)
    return OpenCheckpoint(located, source, hints, plan)


def _head_is_embedding(source: TensorSource, plan: Plan) -> bool:
    """Whether a stored head is the embedding (shared, or equal): GPT-2 in the book's layout
    stores a copy; a head the book's code trained has moved away from the embedding."""
    embedding_name = plan.stored_for(TIED["out_head.weight"])
    head, embedding = source.tensor(plan.head), source.tensor(embedding_name)
    same = head.data_ptr() == embedding.data_ptr() or torch.equal(head, embedding)
    del head, embedding
    source.release(plan.head)
    source.release(embedding_name)
    return same


def materialise(
    checkpoint: OpenCheckpoint, device: torch.device, dtype: torch.dtype | None, contiguous: bool
) -> dict[str, torch.Tensor]:
    """Our state dict, each tensor on ``device`` in ``dtype`` (None: the embedding's stored dtype)."""
    plan, source = checkpoint.plan, checkpoint.source
    if dtype is None:
        dtype = source.entries()[plan.stored_for("tok_emb.weight")].dtype
    state: dict[str, torch.Tensor] = {}
    target = (device, dtype)
    for assignment in plan.assignments:
        stored = source.tensor(assignment.stored)
        exposed = False
        for name, part in zip(assignment.ours, assignment.transform.forward(stored), strict=True):
            if (part.device, part.dtype) == target and (part.is_contiguous() or not contiguous):
                state[name] = part
                exposed = True
            else:  # one pass does the transpose, the cast and the move together
                state[name] = torch.empty(part.shape, dtype=dtype, device=device).copy_(part)
        del stored
        if not exposed:
            source.release(assignment.stored)
    if plan.config.tie_head:
        state |= {ours: state[theirs] for ours, theirs in TIED.items()}
    return state


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    contiguous: bool = False,
    n_head: int | None = None,
    check_crc: bool | None = None,
) -> GPT:
    """Load any supported checkpoint as a ``GPT`` in eval mode (``dtype`` None: as stored,
    ``check_crc`` None: ``$GPT2LOAD_CHECK_CRC``). Parameters stay copy-on-write views of the file
    where they can, transposed and split ones too (``cpu_matmul`` reads either layout), so while
    such a model lives replace its file by renaming over it, never by rewriting it;
    ``contiguous=True`` copies those into ``nn.Linear``'s layout once."""
    target_dtype = parse_dtype(dtype)  # a wrong name fails before any file is read
    # Loading makes thousands of small objects, whose full collections walk everything torch
    # made at import (0.1 s of a 0.15 s load); nothing made here is cyclic garbage.
    collecting = gc.isenabled()
    gc.disable()
    try:
        checkpoint = open_checkpoint(path, n_head=n_head, check_crc=check_crc)
        model = empty_model(checkpoint.plan.config)
        state = materialise(checkpoint, torch.device(device or "cpu"), target_dtype, contiguous)
        model.load_state_dict(state, strict=True, assign=True)
        model.tie_weights()
    finally:
        if collecting:
            gc.enable()
    return model.eval()
