"""Our parameters in another layout: the name tables of ``layouts`` run backwards. What a target
can express is data too (``EXPRESSIBLE``); anything else is refused with the reason. A missing
bias is written as zeros, which computes exactly what no bias computes."""

from __future__ import annotations

import torch

from ..config import VARIANT_FIELDS, GPTConfig
from ..model import GPT
from .layouts import TIED, Layout, expand

# For each target: the variant settings (GPTConfig.variant()) its producer's code computes.
# OpenAI's TF code and the book's GPTModel are GPT-2's maths only; nanoGPT's GPT has an
# optional bias and always exact GELU (a tanh model is written with a warning, see convert).
EXPRESSIBLE: dict[str, frozenset[str]] = {
    "openai": frozenset({"qkv_bias", "bias"}),
    "rasbt": frozenset({"qkv_bias", "bias", "tie_head"}),
    "nanogpt": frozenset({"qkv_bias", "bias", "activation"}),
    "hf": frozenset(VARIANT_FIELDS),
    "native": frozenset(VARIANT_FIELDS),
}
WHY_NOT = {
    "tie_head": "has no output head of its own (it is always the token embedding)",
    "activation": "computes only GELU's tanh approximation (GPT-2's gelu_tanh)",
    "n_inner": "has an MLP width of 4 * n_embd only",
    "layer_norm_eps": "has a LayerNorm epsilon of 1e-5 only",
    "scale_attn_by_inverse_layer_idx": "does not scale attention per layer",
}
# Where a target's reason differs: nanoGPT's one GELU is the exact one (see EXPRESSIBLE).
WHY_NOT_IN = {"nanogpt": {"activation": "computes only the exact GELU"}}


def unsupported(config: GPTConfig, target: str) -> list[str]:
    """Why ``target``'s own code would compute something else than this model (empty: it would
    not). GPT-2's tanh GELU in nanoGPT is not listed here: ``convert`` warns about it."""
    reasons = []
    for key, value in config.variant().items():
        allowed = key in EXPRESSIBLE[target]
        if target == "nanogpt" and key == "activation":
            allowed = value != "relu"
        if target == "nanogpt" and key == "qkv_bias":
            allowed = not config.bias  # nanoGPT's one `bias` covers the QKV projection too
        if not allowed:
            why = WHY_NOT_IN.get(target, {}).get(key) or WHY_NOT.get(key, "lacks it")
            reasons.append(f"{key}={value!r}: {target}'s model {why}")
    return reasons


def _zeros_for(name: str, ours: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Zeros standing in for a bias (``.bias``) or LayerNorm shift (``.shift``) the model lacks."""
    for absent, present in ((".bias", ".weight"), (".shift", ".scale")):
        partner = ours.get(name.removesuffix(absent) + present) if name.endswith(absent) else None
        if partner is not None:
            return partner.new_zeros(partner.shape[0])
    return None


def stored_state_dict(
    model: GPT, layout: Layout, *, head: bool = False, zeros: bool = True, qkv_zeros: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors (contiguous, on the CPU) a ``layout`` file of ``model`` holds: a tied head only
    if ``head`` (nanoGPT's and the book's strict loads want one), absent biases as zeros unless
    ``zeros=False`` (nanoGPT's ``bias=False``) or, for the QKV bias, ``qkv_zeros=False`` (book)."""
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    tied = model.config.tie_head
    out: dict[str, torch.Tensor] = {}
    for rule in layout.rules:
        if rule.ours[0] in TIED and tied:
            if head:  # one tensor, so torch.save stores the tied pair once
                embedding = layout.rule_for(TIED[rule.ours[0]])[0].stored
                out[rule.stored] = out[embedding]
            continue
        for index in range(model.config.n_layer) if "{i}" in rule.stored else [None]:
            names = [expand(t, index) for t in rule.ours]
            fill = zeros and (qkv_zeros or ".att.W_" not in names[0])
            parts = [ours.get(n, _zeros_for(n, ours) if fill else None) for n in names]
            if all(p is not None for p in parts):  # else the model lacks this tensor
                out[expand(rule.stored, index)] = (
                    rule.transform.inverse(parts).to("cpu").contiguous()
                )
    return out
