"""GPT-2, written from scratch.

The module and parameter names follow the from-scratch book code (``tok_emb``,
``trf_blocks.N.att.W_query`` ...) so its ``.pth`` files load without renaming;
every other format is mapped onto these names by ``gpt2load.formats``. Query,
key and value are separate ``nn.Linear`` layers (with bias, as in GPT-2), and
attention runs through PyTorch's fused ``scaled_dot_product_attention`` with a
causal flag, so no mask buffer is stored.

The config's variant settings (see ``GPTConfig``) only choose which layers are
built: a bias-free model has no bias parameters at all, an untied head is a
parameter of its own, and GPT-2's defaults build exactly GPT-2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_matmul
from .config import GPTConfig


class LayerNorm(nn.Module):
    """LayerNorm whose parameters are called ``scale``/``shift``, as in the book's state dicts;
    without ``bias`` there is no ``shift`` at all (nanoGPT's ``bias=False``)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose float32 CPU matmuls run on
    oneDNN, about twice as fast as MKL's on non-Intel CPUs (see :mod:`gpt2load.cpu_matmul`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_matmul.linear(x, self.weight, self.bias)


class GELU(nn.Module):
    """GPT-2's GELU is the tanh approximation (``gelu_new`` in transformers); nanoGPT's
    ``nn.GELU()`` is the exact one, and the two differ by up to about 1e-3 per unit."""

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


def activation(name: str) -> nn.Module:
    """The module for a ``GPTConfig.activation``."""
    if name == "relu":
        return nn.ReLU()
    return GELU("tanh" if name == "gelu_tanh" else "none")


class LayerKVCache:
    """Preallocated keys and values of one layer, so a decoding step appends in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys = keys  # [batch, heads, max_len, head_dim]
        self.values = values
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Keys and values of every layer for incremental decoding.

    Allocated once for the longest sequence the generation can reach, so no
    step ever re-allocates or concatenates.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        if max_len > config.context_length:
            raise ValueError(
                f"KV cache length {max_len} exceeds the model's context of {config.context_length}"
            )
        shape = (batch_size, config.n_head, max_len, config.head_dim)
        self.max_len = max_len
        self.layers = [
            LayerKVCache(
                torch.empty(shape, device=device, dtype=dtype),
                torch.empty(shape, device=device, dtype=dtype),
            )
            for _ in range(config.n_layer)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0


class MultiHeadAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int = 0) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        # None is SDPA's own 1/sqrt(head_dim), so GPT-2's attention passes no scale at all.
        self.scale = None
        if config.scale_attn_by_inverse_layer_idx:
            self.scale = 1.0 / (math.sqrt(self.head_dim) * (layer_index + 1))
        self.W_query = Linear(d, d, bias=config.qkv_bias)
        self.W_key = Linear(d, d, bias=config.qkv_bias)
        self.W_value = Linear(d, d, bias=config.qkv_bias)
        self.out_proj = Linear(d, d, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q = self._heads(self.W_query(x))
        k = self._heads(self.W_key(x))
        v = self._heads(self.W_value(x))
        # Without a cache, or when filling an empty one, the keys start at position 0 and
        # the usual causal mask applies. A decoding step (one new query) sees every key.
        is_causal = t > 1
        if cache is not None:
            if cache.length > 0 and t > 1:
                raise ValueError("a KV cache that already holds tokens takes one token per step")
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=self.scale,
        )
        y = y.transpose(1, 2).contiguous().view(b, t, d)
        return self.resid_dropout(self.out_proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d, hidden = config.n_embd, config.ff_width
        self.layers = nn.Sequential(
            Linear(d, hidden, bias=config.bias),
            activation(config.activation),
            Linear(hidden, d, bias=config.bias),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layers(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int = 0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config.n_embd, config.layer_norm_eps, config.bias)
        self.att = MultiHeadAttention(config, layer_index)
        self.norm2 = LayerNorm(config.n_embd, config.layer_norm_eps, config.bias)
        self.ff = FeedForward(config)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | None = None) -> torch.Tensor:
        x = x + self.att(self.norm1(x), cache)
        return x + self.ff(self.norm2(x))


class GPT(nn.Module):
    """The GPT-2 language model; ``out_head`` shares its weight with ``tok_emb`` unless the
    config unties them."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.context_length, config.n_embd)
        self.drop_emb = nn.Dropout(config.dropout)
        self.trf_blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layer))
        self.final_norm = LayerNorm(config.n_embd, config.layer_norm_eps, config.bias)
        self.out_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_weights()
        if self.tok_emb.weight.device.type != "meta":
            self.init_weights()

    def tie_weights(self) -> None:
        """Share the output projection with the token embedding, as GPT-2 does (a no-op for
        an untied config).

        Call again after ``load_state_dict(..., assign=True)``, which replaces
        parameters one by one and so unties them.
        """
        if self.config.tie_head:
            self.out_head.weight = self.tok_emb.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2*n_layer)."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.tok_emb.weight.device).manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith(("scale",)):
                param.fill_(1.0)
            elif name.endswith(("shift", "bias")):
                param.zero_()
            else:
                std = (
                    residual_std if name.endswith(("out_proj.weight", "layers.2.weight")) else 0.02
                )
                param.normal_(0.0, std, generator=generator)

    def set_dropout(self, p: float) -> None:
        """Train with another dropout than the config was built with (the config is frozen,
        so it is replaced): every dropout layer and the attention's own."""
        self.config = self.config.replace(dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, MultiHeadAttention):
                module.dropout = p

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (the tied head counts once, as in GPT-2's published sizes)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.pos_emb.weight.numel() + self.tok_emb.weight.numel()
            if not self.config.tie_head:
                n -= self.out_head.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[batch, time, vocab]``; with ``targets`` also the mean cross-entropy.

        Targets equal to -1 are ignored, which lets callers mask padding.
        """
        if idx.dim() != 2:
            raise ValueError(f"expected token ids shaped [batch, time], got {tuple(idx.shape)}")
        _, t = idx.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.context_length:
            raise ValueError(
                f"sequence of {start + t} tokens is longer than the model's context of "
                f"{self.config.context_length}; crop the input to its last "
                f"{self.config.context_length} tokens"
            )
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cache.layers[i] if cache is not None else None)
        logits = self.out_head(self.final_norm(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        weight = self.tok_emb.weight
        dtype = weight.dtype
        if torch.is_autocast_enabled(weight.device.type):
            dtype = torch.get_autocast_dtype(weight.device.type)
        return KVCache(
            self.config,
            batch_size,
            max_len or self.config.context_length,
            weight.device,
            dtype,
        )
