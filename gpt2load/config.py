"""Model sizes and variants: the four published GPT-2 presets, and the few ways the GPT-2
family's checkpoints differ from GPT-2 (nanoGPT's, the book's, Hugging Face's options), whose
GPT-2 values are the defaults, so ``GPTConfig()`` is GPT-2."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

VOCAB_SIZE = 50257
EOT_TOKEN_ID = 50256
# Other spellings of the floating dtypes, as users type them (every --dtype takes them).
_SPELLINGS = "float32 fp32 f32 float, float16 fp16 f16 half, bfloat16 bf16, float64 fp64 f64 double"
DTYPE_ALIASES = {
    a: name for name, *aliases in map(str.split, _SPELLINGS.split(",")) for a in aliases
}
# Far above every real GPT-2 (a vocabulary of 50,257, 48 layers) and far below what would
# make building even an empty model hang: a file's claim of 10**6 layers is refused here.
MAX_SIZE = 1 << 20
# tanh GELU (GPT-2's, transformers' "gelu_new"), exact GELU (nanoGPT's nn.GELU()), ReLU.
ACTIVATIONS = ("gelu_tanh", "gelu", "relu")
_SIZES = ("n_layer", "n_head", "n_embd", "context_length", "vocab_size")
# The settings that decide which weights a model has (and so which checkpoints fit it).
SHAPE_FIELDS = (*_SIZES, "qkv_bias", "bias", "tie_head", "n_inner")


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-2 shaped model; frozen, so the model, its checkpoints and its
    run records can share one without anyone changing it behind the others' backs."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    context_length: int = 1024
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.0
    qkv_bias: bool = True
    # Bias in every other Linear and LayerNorm (nanoGPT's ``bias``, False by default there).
    bias: bool = True
    # The output head shares the token embedding's weight (GPT-2, nanoGPT); the book's
    # GPTModel keeps a separate ``out_head`` (``tie_word_embeddings=False`` in transformers).
    tie_head: bool = True
    activation: str = "gelu_tanh"
    # Width of the MLP's hidden layer; None is GPT-2's 4 * n_embd (transformers' ``n_inner``).
    n_inner: int | None = None
    layer_norm_eps: float = 1e-5
    # Layer i also divides its attention scores by i + 1 (Stanford CRFM's GPT-2 runs).
    scale_attn_by_inverse_layer_idx: bool = False

    def __post_init__(self) -> None:
        for name in (*_SIZES, "n_inner") if self.n_inner is not None else _SIZES:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
            if value > MAX_SIZE:
                raise ValueError(
                    f"GPTConfig.{name} {value} is beyond any GPT-2 (at most {MAX_SIZE:,})"
                )
        if self.n_inner == 4 * self.n_embd:  # one spelling of GPT-2's width, so configs compare
            object.__setattr__(self, "n_inner", None)
        for name in ("qkv_bias", "bias", "tie_head", "scale_attn_by_inverse_layer_idx"):
            if not isinstance(value := getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be true or false, got {value!r}")
        if self.activation not in ACTIVATIONS:
            choices = ", ".join(ACTIVATIONS)
            raise ValueError(f"GPTConfig.activation {self.activation!r} is not one of: {choices}")
        eps, dropout = self.layer_norm_eps, self.dropout
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"GPTConfig.layer_norm_eps must be a number in (0, 1), got {eps!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"pick n_embd as a multiple of n_head"
            )
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def ff_width(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def variant(self) -> dict[str, Any]:
        """The settings in which this model's maths differs from GPT-2's (empty for GPT-2)."""
        base = GPTConfig()
        return {k: getattr(self, k) for k in VARIANT_FIELDS if getattr(self, k) != getattr(base, k)}

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


# Everything but the sizes and dropout: where the GPT-2 family's checkpoints differ from GPT-2.
VARIANT_FIELDS = tuple(
    f.name for f in dataclasses.fields(GPTConfig) if f.name not in (*_SIZES, "dropout")
)
PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
}
# The OpenAI release folders are named by parameter count; so may a user name the model.
OPENAI_SIZE_NAMES = dict(zip(PRESETS, ("124M", "355M", "774M", "1558M"), strict=True))
ALIASES = {"gpt2-small": "gpt2", "1.5b": "gpt2-xl"} | {
    size.lower(): name for name, size in OPENAI_SIZE_NAMES.items()
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
    key = name.strip().lower()
    return ALIASES.get(key, key) in PRESETS


def published_heads(n_embd: int) -> int | None:
    return next((c.n_head for c in PRESETS.values() if c.n_embd == n_embd), None)


def preset(name: str, **overrides: Any) -> GPTConfig:
    """The config of a published size, optionally with fields changed (e.g. ``dropout=0.1``)."""
    return PRESETS[canonical_name(name)].replace(**overrides)
