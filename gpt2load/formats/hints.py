"""Hyper-parameters a checkpoint states about itself, in whatever words it uses: one alias
table maps OpenAI's ``hparams.json``, Hugging Face's ``config.json``, nanoGPT's ``model_args``,
the book's cfg dicts and our metadata onto ``GPTConfig`` fields. Shapes give the rest."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import ACTIVATIONS, GPTConfig
from ..errors import CheckpointError
from ..native import NATIVE_FORMAT
from .sources import open_regular

# Every GPTConfig field by its own name, and the other names checkpoints give it ("theirs=ours").
_OTHER_NAMES = (
    "n_layers=n_layer n_heads=n_head emb_dim=n_embd n_positions=context_length n_ctx=context_length "
    "block_size=context_length n_vocab=vocab_size drop_rate=dropout tie_word_embeddings=tie_head "
    "activation_function=activation layer_norm_epsilon=layer_norm_eps"
)
ALIASES = {f.name: f.name for f in dataclasses.fields(GPTConfig)}
ALIASES |= dict(pair.split("=") for pair in _OTHER_NAMES.split())
# transformers' activation names (ACT2FN) for the three activations GPTConfig knows.
HF_ACTIVATIONS = dict.fromkeys(("gelu_new", "gelu_pytorch_tanh", "gelu_fast"), "gelu_tanh")
HF_ACTIVATIONS |= {"gelu": "gelu", "gelu_python": "gelu", "relu": "relu"}
# Hugging Face GPT2Config switches that change the maths in ways gpt2load's GPT does not
# compute, with the value GPT-2 has and what the other value would mean.
MATHS_SWITCHES: dict[str, tuple[bool, str]] = {
    "scale_attn_weights": (True, "attention scores would not be divided by sqrt(head size)"),
    "add_cross_attention": (False, "every block would attend to an encoder's states"),
}


# A config is a few hundred bytes; a side file far larger is not one (and is not read whole).
MAX_SIDE_FILE = 1 << 20


@dataclass(frozen=True)
class Hints:
    values: dict[str, Any]
    origin: str | None  # where they came from, for ``info``
    native: bool = False
    said_by: str = "its metadata"  # the same, for messages: a side file's whole path
    spelled: dict[str, str] = dataclasses.field(default_factory=dict)  # field: the file's key

    def key(self, field: str) -> str:
        """A field as the file spells it (``n_ctx``, ``block_size``), so messages quote it."""
        return self.spelled.get(field, field)

    def with_values(self, **values: Any) -> Hints:
        """The same hints with values a caller states (``n_head=`` of ``gpt2load.load``)."""
        return replace(self, values={**self.values, **values})


def _normalise(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field = ALIASES.get(key)
        if field is None or value is None:
            continue
        if field == "activation":
            value = HF_ACTIVATIONS.get(value, value) if isinstance(value, str) else value
            if value not in ACTIVATIONS:
                known = ", ".join(sorted(set(HF_ACTIVATIONS) | set(ACTIVATIONS)))
                raise CheckpointError(
                    f"{origin}: {key}={raw[key]!r} is an activation gpt2load's GPT does not "
                    f"compute (known: {known})"
                )
        not_a_number = isinstance(value, bool) or not isinstance(value, (int, float))
        if field == "layer_norm_eps" and not_a_number:
            raise CheckpointError(f"{origin}: {key}={value!r} is not a number")
        if field in values and values[field] != value:
            raise CheckpointError(
                f"{origin} gives two different values for {field}: {values[field]} and {value}"
            )
        values[field] = value
    return values


def _spellings(raw: dict[str, Any]) -> dict[str, str]:
    """Each field's key as the file wrote it, so a message quotes what the user can find."""
    return {ALIASES[key]: key for key in raw if key in ALIASES}


def _hf_config(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """A ``config.json`` read as transformers reads it (``n_ctx`` ignored, the head tied unless
    it says otherwise), refusing what the model cannot compute."""
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
    read = {k: v for k, v in raw.items() if k != "n_ctx"}
    read.setdefault("tie_word_embeddings", True)
    return read


def _json_object(text: str, origin: str) -> dict[str, Any]:
    """Parse a config that a file supplies; anything but a JSON object is refused."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CheckpointError(f"{origin} is not valid JSON: {reason}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{origin} is not a JSON object")
    return raw


def read_json(path: Path, limit: int) -> dict[str, Any]:
    """The JSON object in a regular file of at most ``limit`` bytes (larger ones are not read)."""
    try:
        with open_regular(path) as (fd, size):
            if size > limit:
                raise CheckpointError(f"{path} is over {limit // 1024} KiB: not a config")
            text = os.pread(fd, size, 0).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as text: {exc}") from None
    return _json_object(text, str(path))


def read_hints(container: str, folder: Path, metadata: dict[str, Any]) -> Hints:
    """Stored hyper-parameters, most specific first: file metadata, then side files."""
    if metadata.get("format") == NATIVE_FORMAT and "config" in metadata:
        origin = f"the gpt2load metadata in {folder}"
        config = metadata["config"]
        if not isinstance(config, str):
            raise CheckpointError(f"{origin} has a config that is not JSON text")
        raw = _json_object(config, origin)
        values, spelled = _normalise(raw, origin), _spellings(raw)
        return Hints(values, "safetensors metadata", native=True, said_by=origin, spelled=spelled)
    model_args = metadata.get("model_args")
    if model_args is not None:
        if not isinstance(model_args, dict):
            raise CheckpointError(f"the nanoGPT model_args in {folder} are not a dict")
        # nanoGPT ties its head to the embedding always (its GPTConfig has no switch), so a
        # stored head that differs is refused rather than read as the book's untied one.
        values = {"tie_head": True} | _normalise(model_args, "model_args")
        spelled = _spellings(model_args)
        return Hints(values, "model_args", said_by="model_args", spelled=spelled)
    side = folder / ("hparams.json" if container == "tf" else "config.json")  # beside the weights
    if side.is_file():
        raw = read_json(side, MAX_SIDE_FILE)
        # OpenAI's hparams.json (n_ctx, n_embd, ...) is no transformers config: its n_ctx is
        # the context length, checked against the position embedding like any other size.
        is_hf = any(k in raw for k in ("model_type", "architectures", "n_positions", "n_embd"))
        if side.name == "config.json" and is_hf:
            raw = _hf_config(raw, str(side))
        values, spelled = _normalise(raw, str(side)), _spellings(raw)
        return Hints(values, side.name, said_by=str(side), spelled=spelled)
    return Hints({}, None)
