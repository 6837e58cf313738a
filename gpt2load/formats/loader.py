"""Building a ``GPT`` from any checkpoint with as little memory and copying as possible.

The model is created on the meta device (no memory, no random init) and every
parameter is then assigned exactly once. A stored tensor that needs no change
(same dtype, CPU, contiguous after its transform) becomes the parameter as a
view of the memory-mapped file, copy-on-write; anything transposed or cast is
copied once and the pages of its stored bytes are dropped right after. So the
peak resident memory of a load stays close to the size of the copies made.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

import torch

from ..model import GPT
from .checkpoint import OpenCheckpoint, open_checkpoint
from .dtypes import parse_dtype
from .layouts import TIED
from .meta import empty_model


def materialise(
    checkpoint: OpenCheckpoint,
    device: torch.device,
    dtype: torch.dtype | None,
    contiguous: bool = True,
) -> dict[str, torch.Tensor]:
    """Our state dict, each tensor on ``device`` in ``dtype`` (None: the embedding's stored dtype)."""
    plan, source = checkpoint.plan, checkpoint.source
    if dtype is None:
        dtype = source.entries()[plan.stored_for("tok_emb.weight")].dtype
    state: dict[str, torch.Tensor] = {}
    for assignment in plan.assignments:
        stored = source.tensor(assignment.stored)
        exposed = False
        for name, part in zip(assignment.ours, assignment.transform.forward(stored), strict=True):
            if (
                part.device == device
                and part.dtype == dtype
                and (part.is_contiguous() or not contiguous)
            ):
                state[name] = part
                exposed = True
            else:
                # One pass does the transpose, the cast and the move together.
                state[name] = torch.empty(part.shape, dtype=dtype, device=device).copy_(part)
        del stored
        if not exposed:
            source.release(assignment.stored)
    if plan.config.tie_head:
        for ours, theirs in TIED.items():
            state[ours] = state[theirs]
    return state


def load_checkpoint(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    contiguous: bool = False,
    n_head: int | None = None,
) -> GPT:
    """Load any supported checkpoint (format found from the files) as a ``GPT`` in eval mode.

    ``n_head`` is needed only for a checkpoint that does not record its head count and
    is not one of GPT-2's published widths (there is no guessing it).

    ``dtype`` is a torch dtype or a name like ``"bf16"``; ``None`` keeps the stored dtype.
    Parameters that need no conversion stay memory-mapped (copy-on-write) from the file,
    so replace checkpoint files by renaming a new file over them (as ``gpt2load`` always
    does), not by rewriting them in place, while a model loaded from them is alive.

    By default transposed and split weights (Hugging Face, OpenAI) also stay strided
    views of the file instead of being copied: the load then costs a few hundredths of
    a second for 124M and almost no memory, which is what inference wants. On the
    CPU a transposed weight multiplies as fast as a copy (``gpt2load.cpu_matmul``
    reads either layout); the query/key/value thirds of a fused ``c_attn`` are
    slices that take ``F.linear``'s slower path instead.
    ``contiguous=True`` copies them into ``nn.Linear``'s own layout, once: what
    training wants (``finetune`` asks for it), and code that calls ``.view()`` on
    parameters needs it.
    """
    target_dtype = parse_dtype(dtype)
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    with _gc_paused():
        checkpoint = open_checkpoint(path, n_head=n_head)
        model = empty_model(checkpoint.plan.config)
        state = materialise(checkpoint, target_device, target_dtype, contiguous)
        model.load_state_dict(state, strict=True, assign=True)
        model.tie_weights()
    return model.eval()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector out of the load.

    Loading creates thousands of small objects (modules, parameters, plan entries);
    that triggers full collections which then walk every object torch created at
    import, about 0.1 s of a 0.15 s load measured here. Nothing made during a load
    is cyclic garbage worth collecting, so the collector simply waits until it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
