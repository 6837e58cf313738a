"""Autoregressive sampling with a preallocated KV cache: the prompt runs once, then each
new token costs one step over one position. GPT-2's positions are absolute, so once a sequence
outgrows the context each step re-runs the last ``context_length`` tokens, as a loop without
a cache does: both paths give the same text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from .model import GPT

# torch.Generator takes a signed or unsigned 64-bit seed; one range for every command.
MAX_SEED = 2**63


def check_sampling_args(
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None = None,
    vocab_limit: int | None = None,
) -> None:
    """Raise ``ValueError`` naming the first bad sampling argument (commands call it up front)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature >= 0 or math.isinf(temperature):  # also refuses nan
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if seed is not None and not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if vocab_limit is not None and vocab_limit < 1:
        raise ValueError(f"vocab_limit must be >= 1, got {vocab_limit}")


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    vocab_limit: int | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` [batch, vocab]; temperature 0 (or top-k 1) is greedy. Only
    ids below ``vocab_limit``: a padded vocabulary (nanoGPT's 50304) has ids past the tokenizer."""
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits[..., :vocab_limit]
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
) -> Iterator[torch.Tensor]:
    """The next token of every row of ``idx`` ([batch] ids), step by step; a row that produced
    ``eos_id`` repeats it until all have. ``seed``: reproducible, leaving the global RNG alone."""
    check_sampling_args(max_new_tokens, temperature, top_k, top_p, seed, vocab_limit)
    idx = idx[None] if idx.dim() == 1 else idx
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if max_new_tokens == 0:
        return
    context = model.config.context_length
    generator = None if seed is None else torch.Generator(device=idx.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            seq = idx[:, -context:]
            length = min(seq.size(1) + max_new_tokens, context)
            cache = model.new_cache(idx.size(0), length) if use_cache else None
            logits = model(seq, cache=cache)[:, -1]
            finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
            for step in range(max_new_tokens):
                token = sample_next_token(logits, temperature, top_k, top_p, generator, vocab_limit)
                if eos_id is not None:
                    token = token.masked_fill(finished, eos_id)
                    finished |= token == eos_id
                yield token
                if step == max_new_tokens - 1 or bool(finished.all()):
                    return
                seq = torch.cat([seq, token[:, None]], dim=1)[:, -context:]
                fits = cache is not None and cache.length < cache.max_len
                logits = (model(token[:, None], cache=cache) if fits else model(seq))[:, -1]
    finally:
        model.train(was_training)


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **options: Any) -> torch.Tensor:
    """``idx`` [batch, time] extended by what :func:`stream` yields with ``options``; the
    prompt comes back whole even when the model saw only the end of it."""
    idx = idx[None] if idx.dim() == 1 else idx
    new = list(stream(model, idx, max_new_tokens, **options))
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1) if new else idx
