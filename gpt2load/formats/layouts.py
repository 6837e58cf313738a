"""The name tables: which stored tensor becomes which of our parameters.

This module is data. A ``Layout`` lists rules ``(stored name, our names,
transform)`` with ``{i}`` standing for the block index, the buffers that are
known and skipped, and the prefixes that wrappers add (``transformer.`` from
``GPT2LMHeadModel``, ``_orig_mod.`` from ``torch.compile``, ``module.`` from
DDP). Loading, exporting, shape checks and error messages all read these
tables; no format has its own code path for names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .transforms import CONV1D, CONV1D_QKV, QKV, SAME, TF_CONV1D, TF_CONV1D_QKV, Transform

# A tied model's output head shares its weight with the token embedding (GPT-2 ties
# them), so there a stored head is only accepted when it equals the stored embedding.
TIED: dict[str, str] = {"out_head.weight": "tok_emb.weight"}

_QKV_W = tuple(f"trf_blocks.{{i}}.att.{m}.weight" for m in ("W_query", "W_key", "W_value"))
_QKV_B = tuple(f"trf_blocks.{{i}}.att.{m}.bias" for m in ("W_query", "W_key", "W_value"))


@dataclass(frozen=True)
class Rule:
    stored: str
    ours: tuple[str, ...]
    transform: Transform


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    rules: tuple[Rule, ...]
    buffers: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    # Config values the producer of this layout always uses (nanoGPT: exact GELU); what a
    # checkpoint states about itself still overrides them.
    implies: tuple[tuple[str, object], ...] = ()
    _compiled: list[tuple[re.Pattern[str], Rule]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def match(self, stored_name: str) -> tuple[Rule, int | None] | None:
        """The rule for a stored name (prefixes already stripped) and its block index."""
        if not self._compiled:
            self._compiled.extend((_pattern(r.stored), r) for r in self.rules)
        for pattern, rule in self._compiled:
            m = pattern.fullmatch(stored_name)
            if m:
                return rule, int(m.group("i")) if "i" in pattern.groupindex else None
        return None

    def is_buffer(self, stored_name: str) -> bool:
        return any(_pattern(b).fullmatch(stored_name) for b in self.buffers)

    def strip_prefixes(self, stored_name: str) -> str:
        changed = True
        while changed:
            changed = False
            for prefix in self.prefixes:
                if stored_name.startswith(prefix):
                    stored_name = stored_name[len(prefix) :]
                    changed = True
        return stored_name

    def rule_for(self, our_name: str) -> tuple[Rule, int | None]:
        """The rule producing one of our parameter names (used to export and to name gaps)."""
        for rule in self.rules:
            for target in rule.ours:
                m = _pattern(target).fullmatch(our_name)
                if m:
                    return rule, int(m.group("i")) if "i" in m.groupdict() else None
        raise KeyError(f"layout {self.name} has no rule for {our_name!r}")


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


def expand(template: str, index: int | None) -> str:
    return template if index is None else template.replace("{i}", str(index))


def _rules(*rows: tuple[str, str | tuple[str, ...], Transform]) -> tuple[Rule, ...]:
    return tuple(Rule(s, (o,) if isinstance(o, str) else o, t) for s, o, t in rows)


HF = Layout(
    name="hf",
    description="Hugging Face GPT2LMHeadModel (Conv1D weights [in, out])",
    rules=_rules(
        ("wte.weight", "tok_emb.weight", SAME),
        ("wpe.weight", "pos_emb.weight", SAME),
        ("h.{i}.ln_1.weight", "trf_blocks.{i}.norm1.scale", SAME),
        ("h.{i}.ln_1.bias", "trf_blocks.{i}.norm1.shift", SAME),
        ("h.{i}.attn.c_attn.weight", _QKV_W, CONV1D_QKV),
        ("h.{i}.attn.c_attn.bias", _QKV_B, QKV),
        ("h.{i}.attn.c_proj.weight", "trf_blocks.{i}.att.out_proj.weight", CONV1D),
        ("h.{i}.attn.c_proj.bias", "trf_blocks.{i}.att.out_proj.bias", SAME),
        ("h.{i}.ln_2.weight", "trf_blocks.{i}.norm2.scale", SAME),
        ("h.{i}.ln_2.bias", "trf_blocks.{i}.norm2.shift", SAME),
        ("h.{i}.mlp.c_fc.weight", "trf_blocks.{i}.ff.layers.0.weight", CONV1D),
        ("h.{i}.mlp.c_fc.bias", "trf_blocks.{i}.ff.layers.0.bias", SAME),
        ("h.{i}.mlp.c_proj.weight", "trf_blocks.{i}.ff.layers.2.weight", CONV1D),
        ("h.{i}.mlp.c_proj.bias", "trf_blocks.{i}.ff.layers.2.bias", SAME),
        ("ln_f.weight", "final_norm.scale", SAME),
        ("ln_f.bias", "final_norm.shift", SAME),
        ("lm_head.weight", "out_head.weight", SAME),
    ),
    buffers=("h.{i}.attn.bias", "h.{i}.attn.masked_bias"),
    prefixes=("_orig_mod.", "module.", "transformer."),
)

# nanoGPT uses the Hugging Face names but plain nn.Linear layers ([out, in]),
# so nothing is transposed and the fused c_attn splits along its first axis. Its MLP
# is nn.GELU(), the exact GELU, whatever weights it was started from.
_LINEAR_EQUIVALENT = {CONV1D: SAME, CONV1D_QKV: QKV}
NANOGPT = Layout(
    name="nanogpt",
    description="nanoGPT (Hugging Face names, nn.Linear weights [out, in])",
    rules=tuple(
        Rule(r.stored, r.ours, _LINEAR_EQUIVALENT.get(r.transform, r.transform)) for r in HF.rules
    ),
    buffers=HF.buffers,
    prefixes=HF.prefixes,
    implies=(("activation", "gelu"),),
)

OPENAI = Layout(
    name="openai",
    description="OpenAI TensorFlow checkpoint",
    rules=_rules(
        ("model/wte", "tok_emb.weight", SAME),
        ("model/wpe", "pos_emb.weight", SAME),
        ("model/h{i}/ln_1/g", "trf_blocks.{i}.norm1.scale", SAME),
        ("model/h{i}/ln_1/b", "trf_blocks.{i}.norm1.shift", SAME),
        ("model/h{i}/attn/c_attn/w", _QKV_W, TF_CONV1D_QKV),
        ("model/h{i}/attn/c_attn/b", _QKV_B, QKV),
        ("model/h{i}/attn/c_proj/w", "trf_blocks.{i}.att.out_proj.weight", TF_CONV1D),
        ("model/h{i}/attn/c_proj/b", "trf_blocks.{i}.att.out_proj.bias", SAME),
        ("model/h{i}/ln_2/g", "trf_blocks.{i}.norm2.scale", SAME),
        ("model/h{i}/ln_2/b", "trf_blocks.{i}.norm2.shift", SAME),
        ("model/h{i}/mlp/c_fc/w", "trf_blocks.{i}.ff.layers.0.weight", TF_CONV1D),
        ("model/h{i}/mlp/c_fc/b", "trf_blocks.{i}.ff.layers.0.bias", SAME),
        ("model/h{i}/mlp/c_proj/w", "trf_blocks.{i}.ff.layers.2.weight", TF_CONV1D),
        ("model/h{i}/mlp/c_proj/b", "trf_blocks.{i}.ff.layers.2.bias", SAME),
        ("model/ln_f/g", "final_norm.scale", SAME),
        ("model/ln_f/b", "final_norm.shift", SAME),
    ),
)

_OUR_NAMES = (
    "tok_emb.weight",
    "pos_emb.weight",
    "trf_blocks.{i}.norm1.scale",
    "trf_blocks.{i}.norm1.shift",
    *_QKV_W,
    *_QKV_B,
    "trf_blocks.{i}.att.out_proj.weight",
    "trf_blocks.{i}.att.out_proj.bias",
    "trf_blocks.{i}.norm2.scale",
    "trf_blocks.{i}.norm2.shift",
    "trf_blocks.{i}.ff.layers.0.weight",
    "trf_blocks.{i}.ff.layers.0.bias",
    "trf_blocks.{i}.ff.layers.2.weight",
    "trf_blocks.{i}.ff.layers.2.bias",
    "final_norm.scale",
    "final_norm.shift",
    "out_head.weight",
)

# The from-scratch book layout is ours; its .pth files also carry causal-mask buffers.
OURS = Layout(
    name="rasbt",
    description="from-scratch state dict (tok_emb, trf_blocks.N.att.W_query, ...)",
    rules=tuple(Rule(n, (n,), SAME) for n in _OUR_NAMES),
    buffers=("trf_blocks.{i}.att.mask",),
    prefixes=("_orig_mod.", "module."),
)

LAYOUTS: tuple[Layout, ...] = (HF, NANOGPT, OPENAI, OURS)
BY_NAME: dict[str, Layout] = {layout.name: layout for layout in LAYOUTS}
