"""A test reference for nanoGPT, which is no package: its GPT as its README and ``model.py``
document it, written here from those facts (not copied).

The facts: ``nn.Linear`` layers (weights ``[out, in]``) with a fused ``c_attn``; one ``bias``
flag for every Linear and LayerNorm (False by default in ``train.py``); LayerNorm eps 1e-5;
the exact GELU (``nn.GELU()``); causal SDPA scaled by 1/sqrt(head size); ``lm_head`` tied to
``transformer.wte``; ``ckpt.pt`` holds ``model`` (keys maybe ``_orig_mod.``-prefixed) and
``model_args`` (``n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout``);
``sample.py`` strips ``_orig_mod.`` and calls a strict ``load_state_dict``; ``generate``
crops to ``block_size``, divides the last logits by the temperature, keeps the top k and
samples with ``torch.multinomial``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class NanoConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False


class NanoLayerNorm(nn.Module):
    def __init__(self, n: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, c: NanoConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head = c.n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
            for z in self.c_attn(x).split(d, dim=2)
        )
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class NanoMLP(nn.Module):
    def __init__(self, c: NanoConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, c: NanoConfig) -> None:
        super().__init__()
        self.ln_1 = NanoLayerNorm(c.n_embd, c.bias)
        self.attn = NanoAttention(c)
        self.ln_2 = NanoLayerNorm(c.n_embd, c.bias)
        self.mlp = NanoMLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, c: NanoConfig) -> None:
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(c.vocab_size, c.n_embd),
                "wpe": nn.Embedding(c.block_size, c.n_embd),
                "h": nn.ModuleList(NanoBlock(c) for _ in range(c.n_layer)),
                "ln_f": NanoLayerNorm(c.n_embd, c.bias),
            }
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        for p in self.parameters():  # random, so every tensor matters
            nn.init.normal_(p, 0.0, 0.02) if p.dim() > 1 else nn.init.normal_(p, 1.0, 0.1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits at every position (nanoGPT's inference returns only the last of these)."""
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(idx.shape[1]))
        for block in tr.h:
            x = block(x)
        return self.lm_head(tr.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, top_k: int = 1) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size :])[:, -1, :]
            v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
            logits[logits < v[:, [-1]]] = -float("inf")
            idx = torch.cat((idx, torch.multinomial(F.softmax(logits, dim=-1), 1)), dim=1)
        return idx


def save_ckpt(model: NanoGPT, path: Path, *, compiled: bool = False) -> Path:
    """``ckpt.pt`` as nanoGPT's ``train.py`` writes it."""
    c = model.config
    state = model.state_dict()
    if compiled:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    model_args = {
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "block_size": c.block_size,
        "bias": c.bias,
        "vocab_size": c.vocab_size,
        "dropout": c.dropout,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": []},
            "model_args": model_args,
            "iter_num": 6,
            "best_val_loss": torch.tensor(3.5),
            "config": {**model_args, "dataset": "shakespeare_char"},
        },
        path,
    )
    return path


def load_ckpt(path: Path) -> NanoGPT:
    """What nanoGPT's ``sample.py`` does with ``init_from='resume'``: a strict load."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = NanoGPT(NanoConfig(**checkpoint["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
