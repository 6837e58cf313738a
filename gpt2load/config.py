"""Model sizes: the four published GPT-2 presets and any custom size.

A config is the only thing needed to build an empty model, so every checkpoint
format ultimately reduces to "a config plus a state dict in our layout".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

VOCAB_SIZE = 50257
CONTEXT_LENGTH = 1024
EOT_TOKEN_ID = 50256


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-2 shaped model.

    Frozen so that a config can be shared between a model, its checkpoints and
    its run records without anyone mutating it behind the others' backs.
    """

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.0
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "context_length", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"pick n_embd as a multiple of n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Build from a dict, ignoring keys that are not config fields (run records carry more)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> GPTConfig:
        return dataclasses.replace(self, **changes)

    def shape_differences(self, other: GPTConfig) -> list[str]:
        """``"n_layer 2 (expected 24)"`` for each size setting in which ``self`` differs from
        ``other``; empty when the same weights fit both (dropout is no part of the shape)."""
        return [
            f"{k} {getattr(self, k)} (expected {getattr(other, k)})"
            for k in SHAPE_FIELDS
            if getattr(self, k) != getattr(other, k)
        ]


# The settings that decide which weights a model has (and so which checkpoints fit it).
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "context_length", "vocab_size", "qkv_bias")


PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
}

ALIASES: dict[str, str] = {
    "124m": "gpt2",
    "gpt2-small": "gpt2",
    "355m": "gpt2-medium",
    "774m": "gpt2-large",
    "1558m": "gpt2-xl",
    "1.5b": "gpt2-xl",
}

# The OpenAI release folders are named by parameter count.
OPENAI_SIZE_NAMES: dict[str, str] = {
    "gpt2": "124M",
    "gpt2-medium": "355M",
    "gpt2-large": "774M",
    "gpt2-xl": "1558M",
}


def canonical_name(name: str) -> str:
    """Map any accepted spelling (``124M``, ``gpt2-small``, ``GPT2``) to a preset name."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        known = ", ".join(list(PRESETS) + sorted({k.upper() for k in ALIASES if k[0].isdigit()}))
        raise KeyError(f"unknown GPT-2 model name {name!r}; known names: {known}")
    return key


def is_model_name(name: str) -> bool:
    try:
        canonical_name(name)
    except KeyError:
        return False
    return True


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The config of a published size, optionally with fields changed (e.g. ``dropout=0.1``)."""
    config = PRESETS[canonical_name(name)]
    return config.replace(**overrides) if overrides else config


def config_from_shapes(
    n_layer: int, n_embd: int, vocab_size: int, context_length: int, n_head: int | None = None
) -> GPTConfig:
    """Infer a config when a checkpoint stores no hyper-parameters.

    Tensor shapes give everything but the head count; for the published widths
    the head count is known, otherwise head_dim 64 (GPT-2's) is assumed.
    """
    if n_head is None:
        by_width = {c.n_embd: c.n_head for c in PRESETS.values()}
        n_head = by_width.get(n_embd, max(1, n_embd // 64))
    return GPTConfig(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        context_length=context_length,
        vocab_size=vocab_size,
    )
