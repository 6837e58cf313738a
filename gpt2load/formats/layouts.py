"""The name tables, as data: a ``Layout``'s rules ``(stored name, our names, transform)`` with
``{i}`` for the block, the buffers it skips, the prefixes wrappers add (``transformer.``,
``_orig_mod.``, ``module.``). Each transform has its inverse and the stored shape it implies,
so loading, exporting, shape checks and messages all run off these tables."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Transform:
    """Stored tensor -> our tensors (views, never copies), back, and the stored shape that
    our shapes imply (so a wrong file is reported before any data is read)."""

    name: str
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    inverse: Callable[[Sequence[torch.Tensor]], torch.Tensor]
    stored_shape: Callable[[Sequence[Shape]], Shape]


SAME = Transform("same", lambda x: (x,), lambda p: p[0], lambda s: tuple(s[0]))
# GPT-2's Conv1D keeps weights as [in, out]; nn.Linear wants [out, in].
CONV1D = Transform(
    "conv1d-transpose", lambda x: (x.t(),), lambda p: p[0].t(), lambda s: tuple(reversed(s[0]))
)
# Query, key and value stacked along dim 0 (nanoGPT's fused weight, every fused bias):
# the chunks stay contiguous views.
QKV = Transform(
    "split-qkv",
    lambda x: tuple(x.chunk(3, dim=0)),
    lambda p: torch.cat(list(p), dim=0),
    lambda s: (sum(x[0] for x in s), *s[0][1:]),
)
# GPT-2's fused Conv1D c_attn weight [in, 3*out]: split the columns, transpose each.
CONV1D_QKV = Transform(
    "split-qkv-conv1d",
    lambda x: tuple(part.t() for part in x.chunk(3, dim=1)),
    lambda p: torch.cat([x.t() for x in p], dim=1),
    lambda s: (s[0][1], s[0][0] * len(s)),
)


def with_leading_one(inner: Transform) -> Transform:
    """The OpenAI TF checkpoint stores every Conv1D weight with an extra leading axis of 1."""
    return Transform(
        f"tf-{inner.name}",
        lambda x: inner.forward(x[0]),
        lambda p: inner.inverse(p).unsqueeze(0),
        lambda s: (1, *inner.stored_shape(s)),
    )


@dataclass(frozen=True)
class Rule:
    stored: str
    ours: tuple[str, ...]
    transform: Transform


@functools.cache
def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


def _match(template: str, name: str) -> tuple[bool, int | None]:
    m = _pattern(template).fullmatch(name)
    return m is not None, int(m["i"]) if m and "i" in m.groupdict() else None


def expand(template: str, index: int | None) -> str:
    return template if index is None else template.replace("{i}", str(index))


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    rules: tuple[Rule, ...]
    buffers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    # Config values this layout's producer always uses (nanoGPT: exact GELU); what a
    # checkpoint states about itself still overrides them.
    implies: tuple[tuple[str, object], ...] = ()

    def match(self, stored_name: str) -> tuple[Rule, int | None] | None:
        """The rule for a stored name (prefixes already stripped) and its block index."""
        for rule in self.rules:
            hit, index = _match(rule.stored, stored_name)
            if hit:
                return rule, index
        return None

    def is_buffer(self, stored_name: str) -> bool:
        return any(_match(b, stored_name)[0] for b in self.buffers)

    def strip_prefixes(self, stored_name: str) -> str:
        while prefix := next((p for p in self.prefixes if stored_name.startswith(p)), None):
            stored_name = stored_name[len(prefix) :]
        return stored_name

    def rule_for(self, our_name: str) -> tuple[Rule, int | None]:
        """The rule producing one of our parameter names (to export, and to name gaps)."""
        for rule in self.rules:
            for target in rule.ours:
                hit, index = _match(target, our_name)
                if hit:
                    return rule, index
        raise KeyError(f"layout {self.name} has no rule for {our_name!r}")


# A tied model's output head is the token embedding (GPT-2 ties them), so there a stored
# head is only accepted when it equals the stored embedding.
TIED: dict[str, str] = {"out_head.weight": "tok_emb.weight"}

_QKV = tuple(f"att.{m}" for m in ("W_query", "W_key", "W_value"))
# Our name, Hugging Face's (and nanoGPT's), OpenAI's, and the Hugging Face transform; a
# block's names drop their prefixes (trf_blocks.{i}. / h.{i}. / model/h{i}/).
_TOP = (
    ("tok_emb.weight", "wte.weight", "model/wte", SAME),
    ("pos_emb.weight", "wpe.weight", "model/wpe", SAME),
)
_BLOCK = (
    ("norm1.scale", "ln_1.weight", "ln_1/g", SAME),
    ("norm1.shift", "ln_1.bias", "ln_1/b", SAME),
    (tuple(f"{m}.weight" for m in _QKV), "attn.c_attn.weight", "attn/c_attn/w", CONV1D_QKV),
    (tuple(f"{m}.bias" for m in _QKV), "attn.c_attn.bias", "attn/c_attn/b", QKV),
    ("att.out_proj.weight", "attn.c_proj.weight", "attn/c_proj/w", CONV1D),
    ("att.out_proj.bias", "attn.c_proj.bias", "attn/c_proj/b", SAME),
    ("norm2.scale", "ln_2.weight", "ln_2/g", SAME),
    ("norm2.shift", "ln_2.bias", "ln_2/b", SAME),
    ("ff.layers.0.weight", "mlp.c_fc.weight", "mlp/c_fc/w", CONV1D),
    ("ff.layers.0.bias", "mlp.c_fc.bias", "mlp/c_fc/b", SAME),
    ("ff.layers.2.weight", "mlp.c_proj.weight", "mlp/c_proj/w", CONV1D),
    ("ff.layers.2.bias", "mlp.c_proj.bias", "mlp/c_proj/b", SAME),
)
_END = (
    ("final_norm.scale", "ln_f.weight", "model/ln_f/g", SAME),
    ("final_norm.shift", "ln_f.bias", "model/ln_f/b", SAME),
    ("out_head.weight", "lm_head.weight", None, SAME),  # OpenAI's files store no head
)


def _names(ours: str | tuple[str, ...]) -> tuple[str, ...]:
    return (ours,) if isinstance(ours, str) else ours


def _in_block(ours, hf: str, openai: str, transform: Transform) -> tuple:
    blocked = tuple(f"trf_blocks.{{i}}.{n}" for n in _names(ours))
    return blocked, f"h.{{i}}.{hf}", f"model/h{{i}}/{openai}", transform


_ROWS = (*_TOP, *(_in_block(*row) for row in _BLOCK), *_END)


def _rules(column: int, swap: dict[Transform, Transform]) -> tuple[Rule, ...]:
    """One column of the table as rules, each Hugging Face transform swapped as told."""
    return tuple(
        Rule(row[column], _names(row[0]), swap.get(row[3], row[3]))
        for row in _ROWS
        if row[column] is not None
    )


_WRAPPERS = ("_orig_mod.", "module.")
HF = Layout(
    name="hf",
    description="Hugging Face GPT2LMHeadModel (Conv1D weights [in, out])",
    rules=_rules(1, {}),
    buffers=("h.{i}.attn.bias", "h.{i}.attn.masked_bias"),
    prefixes=(*_WRAPPERS, "transformer."),
)
# nanoGPT has the Hugging Face names but nn.Linear layers ([out, in]): nothing is
# transposed, the fused c_attn splits along dim 0, and its MLP is always the exact GELU.
NANOGPT = Layout(
    name="nanogpt",
    description="nanoGPT (Hugging Face names, nn.Linear weights [out, in])",
    rules=_rules(1, {CONV1D: SAME, CONV1D_QKV: QKV}),
    buffers=HF.buffers,
    prefixes=HF.prefixes,
    implies=(("activation", "gelu"),),
)
OPENAI = Layout(
    name="openai",
    description="OpenAI TensorFlow checkpoint",
    rules=_rules(2, {t: with_leading_one(t) for t in (CONV1D, CONV1D_QKV)}),
)
# The from-scratch book's layout is ours (one rule per parameter); its .pth files also
# carry causal-mask buffers.
OURS = Layout(
    name="rasbt",
    description="from-scratch state dict (tok_emb, trf_blocks.N.att.W_query, ...)",
    rules=tuple(Rule(n, (n,), SAME) for rule in _rules(1, {}) for n in rule.ours),
    buffers=("trf_blocks.{i}.att.mask",),
    prefixes=_WRAPPERS,
)

LAYOUTS: tuple[Layout, ...] = (HF, NANOGPT, OPENAI, OURS)
