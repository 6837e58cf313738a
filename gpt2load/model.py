"""GPT-2, written from scratch, with the book code's names (``tok_emb``, ``trf_blocks.N.att``
...) so its ``.pth`` files load without renaming (``gpt2load.formats`` maps every other format
onto them). Variant settings only choose which layers are built (a bias-free model has no bias
parameters at all); attention is PyTorch's fused causal SDPA (no mask stored)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu_matmul
from .config import GPTConfig

# GPT-2's GELU is the tanh approximation (``gelu_new`` in transformers); nanoGPT's nn.GELU()
# is the exact one, and the two differ by up to about 1e-3 per unit.
_ACTIVATIONS = {"gelu_tanh": lambda: nn.GELU("tanh"), "gelu": nn.GELU, "relu": nn.ReLU}


class LayerNorm(nn.Module):
    """LayerNorm whose parameters are called ``scale``/``shift``, as in the book's state dicts;
    without ``config.bias`` there is no ``shift`` at all (nanoGPT's ``bias=False``)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.eps = config.layer_norm_eps
        self.scale = nn.Parameter(torch.ones(config.n_embd))
        self.shift = nn.Parameter(torch.zeros(config.n_embd)) if config.bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose float32 CPU matmuls run on
    oneDNN, about twice as fast as MKL's on non-Intel CPUs (see :mod:`gpt2load.cpu_matmul`)."""

    def forward(self, x: Tensor) -> Tensor:
        return cpu_matmul.linear(x, self.weight, self.bias)


class KVCache:
    """Keys and values of every layer for incremental decoding, allocated once for the longest
    sequence the generation can reach, so no step ever re-allocates or concatenates."""

    def __init__(
        self, config: GPTConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        if max_len > config.context_length:
            raise ValueError(
                f"KV cache length {max_len} exceeds the model's context of {config.context_length}"
            )
        shape = (config.n_layer, batch, config.n_head, max_len, config.head_dim)
        self.keys, self.values = (torch.empty(shape, device=device, dtype=dtype) for _ in "kv")
        self.max_len = max_len
        self.length = 0  # tokens held; GPT.forward advances it once every layer has appended

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class MultiHeadAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        d = config.n_embd
        self.n_head, self.head_dim, self.dropout = config.n_head, config.head_dim, config.dropout
        self.layer_index = layer_index
        # None is SDPA's own 1/sqrt(head_dim), so GPT-2's attention passes no scale at all.
        per_layer = config.scale_attn_by_inverse_layer_idx
        self.scale = 1.0 / (math.sqrt(self.head_dim) * (layer_index + 1)) if per_layer else None
        self.W_query = Linear(d, d, bias=config.qkv_bias)
        self.W_key = Linear(d, d, bias=config.qkv_bias)
        self.W_value = Linear(d, d, bias=config.qkv_bias)
        self.out_proj = Linear(d, d, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = (self._heads(proj(x)) for proj in (self.W_query, self.W_key, self.W_value))
        if cache is not None:
            k, v = cache.append(self.layer_index, k, v)
        # Keys start at position 0 without a cache or when filling an empty one, so the usual
        # causal mask applies; a decoding step (one new query) sees every key.
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=t > 1, scale=self.scale)
        return self.resid_dropout(self.out_proj(y.transpose(1, 2).contiguous().view(b, t, d)))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d, hidden = config.n_embd, config.ff_width
        self.layers = nn.Sequential(
            Linear(d, hidden, bias=config.bias),
            _ACTIVATIONS[config.activation](),
            Linear(hidden, d, bias=config.bias),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.layers(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config)
        self.att = MultiHeadAttention(config, layer_index)
        self.norm2 = LayerNorm(config)
        self.ff = FeedForward(config)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.att(self.norm1(x), cache)
        return x + self.ff(self.norm2(x))


class GPT(nn.Module):
    """The GPT-2 language model: ``out_head`` is ``tok_emb``'s weight unless the config unties."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.context_length, config.n_embd)
        self.drop_emb = nn.Dropout(config.dropout)
        self.trf_blocks = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layer))
        self.final_norm = LayerNorm(config)
        self.out_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_weights()
        if self.tok_emb.weight.device.type != "meta":
            self.init_weights()

    def tie_weights(self) -> None:
        """Share ``out_head`` with ``tok_emb`` if tied; again after ``load_state_dict(assign=True)``."""
        if self.config.tie_head:
            self.out_head.weight = self.tok_emb.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2*n_layer)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("scale"):
                param.fill_(1.0)
            elif name.endswith(("shift", "bias")):
                param.zero_()
            else:
                residual = name.endswith(("out_proj.weight", "layers.2.weight"))
                param.normal_(0.0, residual_std if residual else 0.02)

    def set_dropout(self, p: float) -> None:
        """Train with another dropout than the config was built with (the config is frozen,
        so it is replaced): every dropout layer and the attention's own."""
        self.config = self.config.replace(dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, MultiHeadAttention):
                module.dropout = p

    def num_parameters(self) -> int:
        """Unique parameters (the tied head counts once, as in GPT-2's published sizes)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``[batch, time, vocab]``; with ``targets``, also the mean cross-entropy
        (targets of -1, padding, are ignored)."""
        if idx.dim() != 2:
            raise ValueError(f"expected token ids shaped [batch, time], got {tuple(idx.shape)}")
        t, start = idx.shape[1], cache.length if cache is not None else 0
        context = self.config.context_length
        if start + t > context:
            raise ValueError(
                f"sequence of {start + t} tokens is longer than the model's context of "
                f"{context}; crop the input to its last {context} tokens"
            )
        if start > 0 and t > 1:
            raise ValueError("a KV cache that already holds tokens takes one token per step")
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.trf_blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += t
        logits = self.out_head(self.final_norm(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch_size`` rows, in the dtype autocast (if on) computes in."""
        weight, length = self.tok_emb.weight, max_len or self.config.context_length
        kind = weight.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
        return KVCache(self.config, batch_size, length, weight.device, dtype)
