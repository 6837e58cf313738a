"""Loss, perplexity and bits per byte of a model on a text, so comparisons come with a number.

Loss per token depends on the tokenizer: a character model predicts ~4 tokens where
GPT-2's BPE predicts one, so its loss per token is far lower for the same skill. Bits
per byte (the loss summed over the text, in bits, over the text's UTF-8 bytes) is the
scale every tokenizer shares, and what ``compare`` puts side by side across them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .char_tokenizer import META_PKL, CharTokenizer
from .model import GPT

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
    """An evaluation text as given: plain text, or the token ids of a ``.bin``.

    A ``.bin`` holds ids of one tokenizer: the one its folder's ``meta.json`` names
    (finetune), the ``meta.pkl`` beside it (nanoGPT's char datasets), else GPT-2's.
    Models with another tokenizer score its text, decoded and encoded again their way.
    """

    path: Path
    text: str | None = None
    ids: np.ndarray | None = None
    ids_key: str | None = None  # tokenizer_key of the ids' tokenizer (None: GPT-2's)
    ids_tokenizer: CharTokenizer | None = None  # the char vocabulary beside a .bin

    def tokens_for(self, tokenizer) -> np.ndarray:
        """The text as ``tokenizer``'s ids (int64). A character outside a character
        vocabulary is an error naming it."""
        from .tokenizer import tokenizer_key

        if self.ids is not None:
            key = tokenizer_key(tokenizer)
            chars = isinstance(tokenizer, CharTokenizer) or self.ids_tokenizer is not None
            if key == (self.ids_key or GPT2_KEY) or (self.ids_key is None and not chars):
                return self.ids
            text = self.as_text()
        else:
            text = self.text or ""
        what = f"the evaluation text {self.path}"
        if isinstance(tokenizer, CharTokenizer):
            ids = tokenizer.encode_ordinary(text, what=what)
        else:
            ids = tokenizer.encode_ordinary(text)
        return np.asarray(ids, dtype=np.int64)

    def as_text(self) -> str:
        """The text itself; a ``.bin`` decoded with its own tokenizer, each
        ``<|endoftext|>`` becoming a newline (a text has no such token)."""
        if self.text is not None:
            return self.text
        assert self.ids is not None
        if self.ids_tokenizer is not None:
            return self.ids_tokenizer.decode(self.ids.tolist())
        if self.ids_key not in (None, GPT2_KEY):
            raise ValueError(
                f"{self.path} holds ids of the tokenizer {self.ids_key} and no {META_PKL} "
                f"beside it says what they mean; give a .txt as the evaluation text"
            )
        from .tokenizer import get_tokenizer

        bpe = get_tokenizer(self.path.parent)
        ids = self.ids.tolist()
        if isinstance(bpe, CharTokenizer):  # pragma: no cover - a meta.pkl appeared since
            return bpe.decode(ids)
        return _decode_bpe(bpe, ids)

    def prefix(self, tokenizer, n_tokens: int) -> EvalText:
        """The text of the first ``n_tokens`` of ``tokenizer``'s ids, as plain text: every
        model with whatever tokenizer then scores that same stretch of text."""
        ids = self.tokens_for(tokenizer)[:n_tokens].tolist()
        if isinstance(tokenizer, CharTokenizer):
            text = tokenizer.decode(ids)
        else:
            text = _decode_bpe(tokenizer, ids, errors="ignore")  # no half character at the end
        return replace(self, text=text, ids=None, ids_key=None, ids_tokenizer=None)


def _decode_bpe(encoding, ids: list[int], errors: str = "replace") -> str:
    eot = encoding.eot_token
    parts, start = [], 0
    for i, t in enumerate([*ids, eot]):
        if t == eot:
            parts.append(encoding.decode_bytes(ids[start:i]))
            start = i + 1
    return b"\n".join(parts).decode("utf-8", errors=errors)


def read_eval_text(path: str | os.PathLike[str]) -> EvalText:
    """``path`` as an :class:`EvalText`: a ``.bin`` of uint16 ids (as ``finetune`` and
    nanoGPT prepare) or plain UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text not found: {path}")
    if path.suffix.lower() != ".bin":
        return EvalText(path, text=path.read_text(encoding="utf-8"))
    ids = np.fromfile(path, dtype=np.uint16).astype(np.int64)
    key, chars = None, None
    meta_json = path.parent / "meta.json"
    if meta_json.is_file():
        try:
            named = json.loads(meta_json.read_text(encoding="utf-8")).get("tokenizer")
        except (OSError, ValueError, AttributeError):
            named = None
        key = named if isinstance(named, str) else None
    if (path.parent / META_PKL).is_file():
        chars = CharTokenizer.from_meta_pkl(path.parent / META_PKL)
        from .tokenizer import tokenizer_key

        if key is None or key == tokenizer_key(chars):
            key = tokenizer_key(chars)
        else:
            chars = None  # meta.json names another tokenizer; the ids are not these characters
    return EvalText(path, ids=ids, ids_key=key, ids_tokenizer=chars)


def read_eval_tokens(path: str | os.PathLike[str], tokenizer) -> np.ndarray:
    """Token ids of ``path`` for ``tokenizer``: a ``.bin`` of uint16 ids (as ``finetune``
    prepares; another tokenizer's ids are decoded and encoded again) or plain text."""
    tokens = read_eval_text(path).tokens_for(tokenizer)
    if tokens.size < 2:
        raise ValueError(f"{path} holds {tokens.size} token(s); at least 2 are needed to score")
    return tokens


_BYTE_LENGTHS: dict[str, np.ndarray] = {}


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes of every id's text ([n_vocab] int64). ``<|endoftext|>`` counts as one
    byte: the newline that stands for it when the text goes to another tokenizer."""
    from .tokenizer import tokenizer_key

    key = tokenizer_key(tokenizer)
    if key not in _BYTE_LENGTHS:
        lengths = []
        for i in range(tokenizer.n_vocab):
            if i == tokenizer.eot_token:
                lengths.append(1)
                continue
            try:
                lengths.append(len(tokenizer.decode_single_token_bytes(i)))
            except KeyError:  # an id no BPE rank or special token has
                lengths.append(0)
        _BYTE_LENGTHS[key] = np.asarray(lengths, dtype=np.int64)
    return _BYTE_LENGTHS[key]


def with_bits_per_byte(result: EvalResult, tokens: np.ndarray, tokenizer) -> EvalResult:
    """``result`` plus the bytes of the text it scored and its bits per byte.

    The targets of :func:`evaluate_tokens` are ``tokens[1 : result.tokens + 1]`` (the
    first token is only ever context), so those are the bytes counted.
    """
    lengths = token_byte_lengths(tokenizer)
    targets = np.asarray(tokens[1 : result.tokens + 1], dtype=np.int64)
    if targets.size and int(targets.max()) >= lengths.size:
        raise ValueError(
            f"token id {int(targets.max())} is beyond the tokenizer's {lengths.size} ids"
        )
    n_bytes = int(lengths[targets].sum())
    if n_bytes == 0:
        return replace(result, bytes=0, bits_per_byte=None)
    bpb = result.loss * result.tokens / math.log(2) / n_bytes
    return replace(result, bytes=n_bytes, bits_per_byte=bpb)


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
