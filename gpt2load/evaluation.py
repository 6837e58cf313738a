"""Loss, perplexity and bits per byte of a model on a text, so comparisons come with a number:
a character model predicts ~4 tokens where GPT-2's BPE predicts one, so loss per token compares
only models of one tokenizer; bits per byte is the scale every tokenizer shares."""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .char_tokenizer import META_PKL, CharTokenizer
from .model import GPT
from .tokenizer import Tokenizer, get_tokenizer, tokenizer_key

# What a .bin of token ids holds when nothing beside it says otherwise (finetune's data).
GPT2_KEY = "gpt2/50257"


@dataclass(frozen=True)
class EvalResult:
    loss: float
    perplexity: float
    tokens: int  # targets scored
    window: int  # tokens per window (the context each prediction could see at most)
    bytes: int | None = None  # UTF-8 bytes of the scored targets, when the tokenizer is known
    bits_per_byte: float | None = None  # loss summed over the targets / ln 2 / bytes


@dataclass(frozen=True)
class EvalText:
    """Plain text, or a ``.bin`` of ids of the tokenizer its folder's ``meta.json`` (finetune) or
    ``meta.pkl`` (nanoGPT) names, else GPT-2's; other tokenizers score its text, re-encoded."""

    path: Path
    text: str | None = None
    ids: np.ndarray | None = None
    ids_key: str | None = None  # tokenizer_key of the ids' tokenizer (None: GPT-2's)
    ids_tokenizer: CharTokenizer | None = None  # the char vocabulary beside a .bin

    def tokens_for(self, tokenizer: Tokenizer) -> np.ndarray:
        """The text as ``tokenizer``'s ids (int64)."""
        is_char = isinstance(tokenizer, CharTokenizer)
        if self.ids is not None:
            chars = is_char or self.ids_tokenizer is not None
            key = tokenizer_key(tokenizer)
            if key == (self.ids_key or GPT2_KEY) or (self.ids_key is None and not chars):
                return self.ids
        text = self.text
        if text is None:
            if self.ids_tokenizer is None and self.ids_key not in (None, GPT2_KEY):
                raise ValueError(
                    f"{self.path} holds ids of the tokenizer {self.ids_key} and no {META_PKL} "
                    f"beside it says what they mean; give a .txt as the evaluation text"
                )
            text = _decode(self.ids_tokenizer or get_tokenizer(self.path.parent), self.ids.tolist())
        what = {"what": f"the evaluation text {self.path}"} if is_char else {}
        return np.asarray(tokenizer.encode_ordinary(text, **what), dtype=np.int64)

    def tokens_to_score(self, tokenizer: Tokenizer, model: str | None = None) -> np.ndarray:
        """:meth:`tokens_for`, at least the 2 that one prediction needs."""
        tokens = self.tokens_for(tokenizer)
        if tokens.size < 2:
            whose = f" for {model}" if model else ""
            raise ValueError(
                f"{self.path} holds {tokens.size} token(s){whose}; at least 2 are needed to score"
            )
        return tokens

    def prefix(self, tokenizer: Tokenizer, n_tokens: int) -> EvalText:
        """The text of ``tokenizer``'s first ``n_tokens`` (no half character at the end)."""
        ids = self.tokens_for(tokenizer)[:n_tokens].tolist()
        return EvalText(self.path, text=_decode(tokenizer, ids, errors="ignore"))


def _decode(tokenizer: Tokenizer, ids: list[int], errors: str = "replace") -> str:
    """``ids`` as text, each ``<|endoftext|>`` a newline (a text has no such token)."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.decode(ids)
    newline = tokenizer.encode_single_token("\n")
    ids = [newline if t == tokenizer.eot_token else t for t in ids]
    return tokenizer.decode_bytes(ids).decode("utf-8", errors=errors)


def read_eval_text(path: str | os.PathLike[str]) -> EvalText:
    """A ``.bin`` of uint16 ids (as ``finetune`` and nanoGPT prepare), else UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text not found: {path}")
    if path.suffix.lower() != ".bin":
        return EvalText(path, text=path.read_text(encoding="utf-8"))
    ids = np.fromfile(path, dtype=np.uint16).astype(np.int64)
    key = chars = None
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no meta.json, or no dict
        named = json.loads((path.parent / "meta.json").read_text(encoding="utf-8")).get("tokenizer")
        key = named if isinstance(named, str) else None
    if (path.parent / META_PKL).is_file():
        pkl = CharTokenizer.from_meta_pkl(path.parent / META_PKL)
        # When meta.json names another tokenizer, the ids are not these characters.
        chars, key = (pkl, tokenizer_key(pkl)) if key in (None, tokenizer_key(pkl)) else (None, key)
    return EvalText(path, ids=ids, ids_key=key, ids_tokenizer=chars)


def read_eval_tokens(path: str | os.PathLike[str], tokenizer: Tokenizer) -> np.ndarray:
    """Token ids of ``path`` (see :func:`read_eval_text`) for ``tokenizer``, at least 2."""
    return read_eval_text(path).tokens_to_score(tokenizer)


_BYTE_LENGTHS: dict[str, np.ndarray] = {}


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes of every id's text; ``<|endoftext|>`` counts one, for the newline that
    stands for it in another tokenizer's text."""
    key = tokenizer_key(tokenizer)
    if key not in _BYTE_LENGTHS:
        lengths = np.zeros(tokenizer.n_vocab, dtype=np.int64)  # 0: an id with no text
        for i in range(tokenizer.n_vocab):
            with contextlib.suppress(KeyError):
                lengths[i] = len(tokenizer.decode_single_token_bytes(i))
        if tokenizer.eot_token is not None:
            lengths[tokenizer.eot_token] = 1
        _BYTE_LENGTHS[key] = lengths
    return _BYTE_LENGTHS[key]


@torch.inference_mode()
def evaluate_tokens(
    model: GPT,
    tokens: np.ndarray,
    max_tokens: int | None = None,
    batch_size: int = 4,
    window: int | None = None,
    tokenizer: Tokenizer | None = None,
    progress: str | None = None,
) -> EvalResult:
    """Mean next-token loss over consecutive, non-overlapping (cheap) windows of ``window`` tokens
    (default: the model's context): the loss depends on the window, so models compare on one only.
    With ``tokenizer`` also bytes and bits per byte; ``progress`` labels a bar on stderr (minutes
    on a CPU). ``tokens`` holds at least 2 (see :meth:`EvalText.tokens_to_score`)."""
    context = model.config.context_length
    window = context if window is None else window
    if not 1 <= window <= context:
        raise ValueError(
            f"evaluation window must be between 1 and the model's context ({context}), got {window}"
        )
    tokens = tokens if max_tokens is None else tokens[: max_tokens + 1]
    top = int(tokens.max())
    if top >= model.config.vocab_size:
        raise ValueError(
            f"the evaluation text holds token id {top}, beyond this model's vocabulary "
            f"({model.config.vocab_size} tokens)"
        )
    data = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    n_full, tail = divmod(len(data) - 1, window)
    # Full windows go in batches; a shorter tail window goes alone at the end.
    windows = [(s * window, window) for s in range(n_full)]
    batches = [windows[b : b + batch_size] for b in range(0, n_full, batch_size)]
    batches += [[(n_full * window, tail)]] if tail else []
    total_loss, total_count = 0.0, 0
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(data) - 1, desc=progress, unit="tok", disable=progress is None)
    try:
        for batch in batches:
            x = torch.stack([data[s : s + n] for s, n in batch]).to(model.tok_emb.weight.device)
            y = torch.stack([data[s + 1 : s + 1 + n] for s, n in batch]).to(x.device)
            logits = model(x).float()
            total_loss += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            total_count += y.numel()
            bar.update(y.numel())
    finally:
        bar.close()
        model.train(was_training)
    mean, n_bytes, bpb = total_loss / total_count, None, None
    if tokenizer is not None:
        # The targets are tokens[1 : total_count + 1]: the first token is only ever context.
        lengths = token_byte_lengths(tokenizer)
        targets = np.asarray(tokens[1 : total_count + 1], dtype=np.int64)
        if int(targets.max()) >= lengths.size:
            raise ValueError(
                f"token id {int(targets.max())} is beyond the tokenizer's {lengths.size} ids"
            )
        n_bytes = int(lengths[targets].sum())
        bpb = mean * total_count / math.log(2) / n_bytes if n_bytes else None
    return EvalResult(mean, math.exp(min(mean, 700.0)), total_count, window, n_bytes, bpb)
