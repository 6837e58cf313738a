"""Hyper-parameters a checkpoint states about itself, in whatever words it uses.

OpenAI's ``hparams.json``, Hugging Face's ``config.json``, nanoGPT's
``model_args``, the book's ``GPT_CONFIG_124M`` dicts and our own safetensors
metadata all name the same few numbers differently; one alias table maps them
onto ``GPTConfig`` fields. Shapes give everything else (see ``plan``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..native import NATIVE_FORMAT
from .errors import CheckpointError

ALIASES: dict[str, str] = {
    "n_layer": "n_layer",
    "n_layers": "n_layer",
    "n_head": "n_head",
    "n_heads": "n_head",
    "n_embd": "n_embd",
    "emb_dim": "n_embd",
    "context_length": "context_length",
    "n_positions": "context_length",
    "n_ctx": "context_length",
    "block_size": "context_length",
    "vocab_size": "vocab_size",
    "n_vocab": "vocab_size",
    "qkv_bias": "qkv_bias",
    "dropout": "dropout",
    "drop_rate": "dropout",
}
# Side files, looked up beside the weights, by container.
SIDE_FILES = {"tf": ("hparams.json",), "safetensors": ("config.json",), "torch": ("config.json",)}
# The same tanh approximation of GELU under both of its transformers names.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
LAYER_NORM_EPS = 1e-5
# Hugging Face GPT2Config switches that change what the model computes, with the value
# GPT-2 (and gpt2load's GPT) has, and what the other value would mean.
MATHS_SWITCHES: dict[str, tuple[bool, str]] = {
    "scale_attn_weights": (True, "attention scores would not be divided by sqrt(head size)"),
    "scale_attn_by_inverse_layer_idx": (
        False,
        "attention scores of layer i would also be divided by i + 1 (Mistral-style GPT-2)",
    ),
    "add_cross_attention": (
        False,
        "every block would attend to an encoder's states (an encoder-decoder model)",
    ),
}


@dataclass(frozen=True)
class Hints:
    values: dict[str, Any]
    origin: str | None  # where they came from, for messages and ``info``
    native: bool = False


def _normalise(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field = ALIASES.get(key)
        if field is None or value is None:
            continue
        if field in values and values[field] != value:
            if field == "context_length":  # old HF configs carry n_ctx and n_positions
                continue
            raise CheckpointError(
                f"{origin} gives two different values for {field}: {values[field]} and {value}"
            )
        values[field] = value
    if raw.get("bias") is False:
        raise CheckpointError(
            f"{origin} says bias=False: the model has no bias tensors, but GPT-2's architecture "
            f"(and gpt2load's GPT) has biases in every layer"
        )
    return values


def _check_hf_config(raw: dict[str, Any], origin: str) -> None:
    """Refuse Hugging Face configs whose model our GPT cannot reproduce exactly.

    Each message names the file and the key. ``reorder_and_upcast_attn`` is not
    refused: it only makes transformers compute attention in float32, the same maths.
    """
    model_type = raw.get("model_type")
    if model_type not in (None, "gpt2"):
        raise CheckpointError(f"{origin} describes a {model_type!r} model, not GPT-2")
    for key, (expected, meaning) in MATHS_SWITCHES.items():
        value = raw.get(key)
        if value is not None and bool(value) != expected:
            raise CheckpointError(
                f"{origin}: {key}={value!r}, but GPT-2 has {key}={expected}: {meaning}, which "
                f"gpt2load's GPT does not do, so its outputs would be wrong"
            )
    n_inner, n_embd = raw.get("n_inner"), raw.get("n_embd")
    if n_inner is not None and n_embd is not None and n_inner != 4 * n_embd:
        raise CheckpointError(
            f"{origin}: n_inner={n_inner} is not 4*n_embd; only GPT-2's MLP width is supported"
        )
    activation = raw.get("activation_function")
    if activation is not None and activation not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"{origin}: activation_function={activation!r} is not GPT-2's tanh GELU "
            f"({' or '.join(SUPPORTED_ACTIVATIONS)})"
        )
    eps = raw.get("layer_norm_epsilon")
    if eps is not None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise CheckpointError(f"{origin}: layer_norm_epsilon={eps!r} is not a number")
        if not math.isclose(eps, LAYER_NORM_EPS, rel_tol=1e-3):
            raise CheckpointError(
                f"{origin}: layer_norm_epsilon={eps} differs from GPT-2's {LAYER_NORM_EPS:g}"
            )


def read_hints(container: str, folder: Path, metadata: dict[str, Any]) -> Hints:
    """Stored hyper-parameters, most specific first: file metadata, then side files."""
    if metadata.get("format") == NATIVE_FORMAT and "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"the gpt2load metadata in {folder} has a corrupt config: {exc}"
            ) from None
        return Hints(
            _normalise(config, "the gpt2load metadata"), "safetensors metadata", native=True
        )
    model_args = metadata.get("model_args")
    if isinstance(model_args, dict):
        return Hints(_normalise(model_args, "model_args"), "model_args")
    for name in SIDE_FILES.get(container, ()):
        side = folder / name
        if not side.is_file():
            continue
        try:
            raw = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{side} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{side} is not a JSON object")
        _check_hf_config(raw, str(side))
        return Hints(_normalise(raw, str(side)), name)
    return Hints({}, None)
