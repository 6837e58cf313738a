"""Loss and perplexity of a model on a text, so comparisons come with a number."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import GPT


@dataclass(frozen=True)
class EvalResult:
    loss: float
    perplexity: float
    tokens: int  # targets scored
    window: int  # tokens per window (the context each prediction could see at most)


def read_eval_tokens(path: str | os.PathLike[str], tokenizer) -> np.ndarray:
    """Token ids of ``path``: a ``.bin`` of uint16 ids (as ``finetune`` prepares) or plain text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text not found: {path}")
    if path.suffix.lower() == ".bin":
        tokens = np.fromfile(path, dtype=np.uint16).astype(np.int64)
    else:
        text = path.read_text(encoding="utf-8")
        tokens = np.asarray(tokenizer.encode_ordinary(text), dtype=np.int64)
    if tokens.size < 2:
        raise ValueError(f"{path} holds {tokens.size} token(s); at least 2 are needed to score")
    return tokens


@torch.inference_mode()
def evaluate_tokens(
    model: GPT,
    tokens: np.ndarray,
    max_tokens: int | None = None,
    batch_size: int = 4,
    window: int | None = None,
) -> EvalResult:
    """Mean next-token loss over consecutive windows of ``window`` tokens.

    ``window`` defaults to the model's context. Windows do not overlap, which
    makes the figure cheap; the first tokens of each window see less history, as
    in the training loss. The loss depends on the window, so models are only
    comparable when scored with the same one (``compare`` makes sure of that).
    """
    context = model.config.context_length
    if window is None:
        window = context
    if not 1 <= window <= context:
        raise ValueError(
            f"evaluation window must be between 1 and the model's context ({context}), got {window}"
        )
    if max_tokens is not None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        tokens = tokens[: max_tokens + 1]
    if len(tokens) < 2:
        raise ValueError(f"{len(tokens)} token(s) to score; at least 2 are needed")
    top = int(tokens.max())
    if top >= model.config.vocab_size:
        raise ValueError(
            f"the evaluation text holds token id {top}, beyond this model's vocabulary "
            f"({model.config.vocab_size} tokens)"
        )
    device = model.tok_emb.weight.device
    data = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    n_targets = len(data) - 1
    n_full, tail = divmod(n_targets, window)
    # Full windows go in batches; a shorter tail window goes alone at the end.
    batches = [
        [(s * window, window) for s in range(b, min(b + batch_size, n_full))]
        for b in range(0, n_full, batch_size)
    ]
    if tail:
        batches.append([(n_full * window, tail)])
    total_loss, total_count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            x = torch.stack([data[s : s + n] for s, n in batch]).to(device)
            y = torch.stack([data[s + 1 : s + 1 + n] for s, n in batch]).to(device)
            logits = model(x).float()
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
            )
            total_loss += loss.item()
            total_count += y.numel()
    finally:
        model.train(was_training)
    mean = total_loss / total_count
    return EvalResult(
        loss=mean, perplexity=math.exp(min(mean, 700.0)), tokens=total_count, window=window
    )
