"""A prepared dataset: ``train.bin`` / ``val.bin`` (uint16 token ids, memory-mapped) and
``meta.json``, written last so that its presence means the bins are complete. Documents are
split 90/10 by characters and joined with ``<|endoftext|>`` so the model sees where one ends;
Tiny Shakespeare is one document, which makes its split the usual 301,966 / 36,059 tokens."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

TOKEN_DTYPE = np.uint16
META_FILE, TRAIN_BIN, VAL_BIN = "meta.json", "train.bin", "val.bin"
BINS = {"train": TRAIN_BIN, "val": VAL_BIN}
# Texts are cut into pieces of about this many characters to tokenize them on several threads.
CHUNK_CHARS = 1 << 17
GPT2_TOKENIZER_ID = "gpt2/50257"  # tokenizer_id(gpt2load.get_tokenizer()), whatever its files
MIB, TOKEN_BYTES = 1 << 20, np.dtype(TOKEN_DTYPE).itemsize


@dataclass(frozen=True)
class PreparedData:
    """A prepared dataset folder and what its ``meta.json`` says about it."""

    folder: Path
    meta: dict[str, Any]

    train_path = property(lambda self: self.folder / TRAIN_BIN)
    val_path = property(lambda self: self.folder / VAL_BIN)
    train_tokens = property(lambda self: int(self.meta["train_tokens"]))
    val_tokens = property(lambda self: int(self.meta["val_tokens"]))

    def load(self, split: str) -> np.ndarray:
        """Memory-mapped, so no copy in RAM however large the file."""
        path = self.folder / BINS[split]
        if path.stat().st_size == 0:  # np.memmap refuses an empty file
            return np.zeros(0, dtype=TOKEN_DTYPE)
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def open_prepared(folder: str | os.PathLike[str]) -> PreparedData:
    """A prepared folder, with or without our ``meta.json`` (nanoGPT's has none)."""
    folder = Path(folder).expanduser()
    meta = _read_meta(folder) or {}
    for split, name in BINS.items():
        if not (folder / name).is_file():
            raise DataError(f"{folder} has no {name}; prepare it with `finetune prepare`")
        meta.setdefault(f"{split}_tokens", (folder / name).stat().st_size // TOKEN_BYTES)
    return PreparedData(folder, meta)


def is_prepared_folder(path: str | os.PathLike[str]) -> bool:
    return all((Path(path).expanduser() / name).is_file() for name in BINS.values())


def cached_prepared(folder: Path, key: str) -> PreparedData | None:
    """The folder if it was prepared from ``key`` and its bins hold what its meta says."""
    meta = _read_meta(folder)
    if meta is None or meta.get("source_key") != key:
        return None
    for split, name in BINS.items():
        path, count = folder / name, meta.get(f"{split}_tokens")
        if not path.is_file() or count is None or path.stat().st_size != count * TOKEN_BYTES:
            return None
    return PreparedData(folder, meta)


def data_key(data: PreparedData) -> str:
    """What a run records to know at resume that it still has the same tokens: our source key,
    else (a folder other tools made) its bins' sizes and a hash of their first and last MiB."""
    if key := data.meta.get("source_key"):
        return str(key)
    digest = hashlib.sha256()
    for name in BINS.values():
        path = data.folder / name
        size = path.stat().st_size
        digest.update(f"{name}:{size};".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(MIB))
            fh.seek(max(MIB, size - MIB))
            digest.update(fh.read())
    return "bins:" + digest.hexdigest()


def check_fits_context(data: PreparedData, block_size: int) -> None:
    """Each split must hold one training window; said before weights are downloaded."""
    for split, count in (("train", data.train_tokens), ("val", data.val_tokens)):
        if count < block_size + 1:
            more = " or a larger --val-fraction" if split == "val" else ""
            raise DataError(
                f"the {split} split of {data.folder} holds {count:,} tokens, fewer than one "
                f"context window (--block-size {block_size} + 1); give more text{more} or "
                f"lower --block-size"
            )


def split_documents(docs: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Cut the documents at ``1 - val_fraction`` of their characters (one across it: in two)."""
    cut = int(sum(len(d) for d in docs) * (1.0 - val_fraction))
    starts = itertools.accumulate((len(d) for d in docs), initial=0)  # one more than docs
    cuts = [(doc, max(cut - at, 0)) for doc, at in zip(docs, starts, strict=False)]
    return [d[:at] for d, at in cuts if d[:at]], [d[at:] for d, at in cuts if d[at:]]


# GPT-2's pre-tokenizer never puts a non-space character and a following whitespace character
# in one piece, so cutting a text between them gives the same tokens as encoding it whole.
# Newlines are preferred cut points, spaces the fallback; only ASCII neighbours are used so no
# Unicode subtleties of "whitespace" can matter.
_CUTS = (re.compile(r"(?<=[!-~])\n"), re.compile(r"(?<=[!-~]) "))


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split ``text`` into pieces of about ``size`` characters that tokenize independently."""
    pieces, start = [], 0
    while len(text) - start > size:
        target = start + size
        tries = (c.search(text, target, end) for end in (target + size, len(text)) for c in _CUTS)
        match = next(filter(None, tries), None)
        if match is None:
            break
        pieces.append(text[start : match.start()])
        start = match.start()
    pieces.append(text[start:])
    return pieces


def encode_splits(
    encoding: Any, splits: Sequence[Sequence[str]], threads: int | None = None
) -> list[np.ndarray]:
    """Each split's documents as token ids joined by ``<|endoftext|>``, tokenized on one
    thread pool; an ``<|endoftext|>`` in a text is ordinary text, so data cannot inject it."""
    if encoding.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"a vocabulary of {encoding.n_vocab} does not fit in uint16 token files")
    to_numpy = getattr(encoding, "encode_to_numpy", None)

    def encode(text: str) -> np.ndarray:
        if to_numpy is not None:
            # Straight from tiktoken's buffer: no Python int per token, so less time under
            # the GIL and better thread scaling. No allowed specials = ordinary text.
            return to_numpy(text, disallowed_special=()).astype(TOKEN_DTYPE)
        return np.asarray(encoding.encode_ordinary(text), dtype=TOKEN_DTYPE)

    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores this process may use
    threads = threads or (len(affinity(0)) if affinity else os.cpu_count() or 1)
    # The pool starts a thread per piece up to its size, so a small text starts few.
    with ThreadPoolExecutor(max(1, threads)) as pool:
        jobs = [[[pool.submit(encode, p) for p in chunk_text(d)] for d in docs] for docs in splits]
    # A character vocabulary has no end-of-text token: its documents simply follow each other.
    eot = np.array([] if encoding.eot_token is None else [encoding.eot_token], TOKEN_DTYPE)
    out = []
    for docs in jobs:
        parts = [np.zeros(0, dtype=TOKEN_DTYPE)]
        for i, doc in enumerate(docs):
            parts += ([eot] if i else []) + [job.result() for job in doc]
        out.append(np.concatenate(parts))
    return out


def encode_documents(encoding: Any, docs: Sequence[str], threads: int | None = None) -> np.ndarray:
    return encode_splits(encoding, [docs], threads)[0]


def tokenizer_id(encoding: Any) -> str:
    return f"{encoding.name}/{encoding.n_vocab}"
