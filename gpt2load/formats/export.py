"""Our parameters in another layout: the name tables of ``layouts`` run backwards."""

from __future__ import annotations

import torch

from ..model import GPT
from .layouts import TIED, Layout, expand


def stored_state_dict(model: GPT, layout: Layout, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``layout`` holds for ``model`` (contiguous, on the CPU).

    The tied output head is left out, as GPT-2's own files leave it out.
    """
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for rule in layout.rules:
        if rule.ours[0] in TIED:
            continue
        indices: list[int | None] = (
            list(range(model.config.n_layer)) if "{i}" in rule.stored else [None]
        )
        for index in indices:
            names = [expand(t, index) for t in rule.ours]
            if not all(n in ours for n in names):  # e.g. no qkv bias in this model
                continue
            tensor = rule.transform.inverse([ours[n].detach() for n in names])
            out[prefix + expand(rule.stored, index)] = tensor.to("cpu").contiguous()
    return out
