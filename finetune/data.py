"""A prepared dataset, and how text becomes its tokens.

A prepared folder holds ``train.bin`` / ``val.bin`` (token ids as uint16, memory-mapped) and
``meta.json``, written last, so its presence means the bins are complete. Documents are split
90/10 by characters (a document straddling the cut is cut in two) and joined with
``<|endoftext|>`` so the model sees where one ends; Tiny Shakespeare is one document, which
makes its split the usual 301,966 / 36,059 tokens.
"""

from __future__ import annotations

import hashlib
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
META_FILE = "meta.json"
TRAIN_BIN = "train.bin"
VAL_BIN = "val.bin"
# Texts are cut into pieces of about this many characters to tokenize them on several threads.
CHUNK_CHARS = 1 << 17
GPT2_TOKENIZER_ID = "gpt2/50257"  # tokenizer_id(gpt2load.get_tokenizer()), whatever its files


@dataclass(frozen=True)
class PreparedData:
    """A prepared dataset folder and what its ``meta.json`` says about it."""

    folder: Path
    meta: dict[str, Any]

    @property
    def train_path(self) -> Path:
        return self.folder / TRAIN_BIN

    @property
    def val_path(self) -> Path:
        return self.folder / VAL_BIN

    @property
    def train_tokens(self) -> int:
        return int(self.meta["train_tokens"])

    @property
    def val_tokens(self) -> int:
        return int(self.meta["val_tokens"])

    def load(self, split: str) -> np.ndarray:
        """The split's tokens, memory-mapped (no copy in RAM however large the file)."""
        path = self.train_path if split == "train" else self.val_path
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=TOKEN_DTYPE)
        return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def open_prepared(folder: str | os.PathLike[str]) -> PreparedData:
    """A prepared folder (``train.bin`` + ``val.bin``), with or without our ``meta.json``."""
    folder = Path(folder).expanduser()
    meta_path = folder / META_FILE
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    for name in (TRAIN_BIN, VAL_BIN):
        if not (folder / name).is_file():
            raise DataError(f"{folder} has no {name}; prepare it with `finetune prepare`")
    size = np.dtype(TOKEN_DTYPE).itemsize
    meta.setdefault("train_tokens", (folder / TRAIN_BIN).stat().st_size // size)
    meta.setdefault("val_tokens", (folder / VAL_BIN).stat().st_size // size)
    return PreparedData(folder, meta)


def is_prepared_folder(path: str | os.PathLike[str]) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / TRAIN_BIN).is_file() and (p / VAL_BIN).is_file()


def cached_prepared(folder: Path, key: str) -> PreparedData | None:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    if meta.get("source_key") != key:
        return None
    size = np.dtype(TOKEN_DTYPE).itemsize
    for name, count in ((TRAIN_BIN, meta.get("train_tokens")), (VAL_BIN, meta.get("val_tokens"))):
        path = folder / name
        if not path.is_file() or count is None or path.stat().st_size != count * size:
            return None
    return PreparedData(folder, meta)


def _bins_fingerprint(folder: Path) -> str:
    """Identity of a prepared folder that has no source key (made by other tools): the
    sizes of its bins and a hash of their first and last MiB (all of a small one)."""
    digest = hashlib.sha256()
    for name in (TRAIN_BIN, VAL_BIN):
        path = folder / name
        size = path.stat().st_size
        digest.update(f"{name}:{size};".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                digest.update(fh.read())
            elif size > 1 << 20:
                digest.update(fh.read())
    return "bins:" + digest.hexdigest()


def data_key(data: PreparedData) -> str:
    """What a run records to know at resume that it still has the same tokens: the source
    key of a folder we prepared, else a fingerprint of its bins."""
    key = data.meta.get("source_key")
    return str(key) if key else _bins_fingerprint(data.folder)


def check_fits_context(data: PreparedData, block_size: int) -> None:
    """Each split must hold one training window (``block_size + 1`` tokens); said right after
    the data is prepared, before weights are downloaded or anything is trained."""
    for split, count in (("train", data.train_tokens), ("val", data.val_tokens)):
        if count < block_size + 1:
            more = " or a larger --val-fraction" if split == "val" else ""
            raise DataError(
                f"the {split} split of {data.folder} holds {count:,} tokens, fewer than one "
                f"context window (--block-size {block_size} + 1); give more text{more} or "
                f"lower --block-size"
            )


# --------------------------------------------------------------------- split
def split_documents(docs: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Cut the stream of documents at ``1 - val_fraction`` of its characters."""
    total = sum(len(d) for d in docs)
    cut = int(total * (1.0 - val_fraction))
    train: list[str] = []
    val: list[str] = []
    seen = 0
    for doc in docs:
        if seen + len(doc) <= cut:
            train.append(doc)
        elif seen >= cut:
            val.append(doc)
        else:
            train.append(doc[: cut - seen])
            val.append(doc[cut - seen :])
        seen += len(doc)
    return [d for d in train if d], [d for d in val if d]


# ---------------------------------------------------------------- tokenizing
# GPT-2's pre-tokenizer never puts a non-space character and a following
# whitespace character in one piece, so cutting a text between them gives the
# same tokens as encoding it whole. Newlines are preferred cut points, spaces
# are the fallback; only ASCII neighbours are used so no Unicode subtleties of
# "whitespace" can matter.
_CUT_AT_NEWLINE = re.compile(r"(?<=[!-~])\n")
_CUT_AT_SPACE = re.compile(r"(?<=[!-~]) ")


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split ``text`` into pieces of about ``size`` characters that tokenize independently."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > size:
        target = start + size
        match = _CUT_AT_NEWLINE.search(text, target, target + size) or _CUT_AT_SPACE.search(
            text, target, target + size
        )
        if match is None:
            match = _CUT_AT_NEWLINE.search(text, target) or _CUT_AT_SPACE.search(text, target)
            if match is None:
                break
        pieces.append(text[start : match.start()])
        start = match.start()
    pieces.append(text[start:])
    return pieces


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def encode_splits(
    encoding: Any, splits: Sequence[Sequence[str]], threads: int | None = None
) -> list[np.ndarray]:
    """For each split (a list of documents), its token ids with documents joined by
    ``<|endoftext|>``; all splits' pieces share one thread pool so every core stays busy.

    Text is encoded as ordinary text: a literal ``<|endoftext|>`` inside a
    document is not turned into the special token, so data cannot inject it.
    """
    if encoding.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"a vocabulary of {encoding.n_vocab} does not fit in uint16 token files")
    jobs: list[tuple[int, int, str]] = []  # (split, document, piece)
    for s, docs in enumerate(splits):
        for d, doc in enumerate(docs):
            jobs.extend((s, d, piece) for piece in chunk_text(doc))

    to_numpy = getattr(encoding, "encode_to_numpy", None)

    def encode(job: tuple[int, int, str]) -> np.ndarray:
        if to_numpy is not None:
            # Straight from tiktoken's buffer: no Python int per token, so less time under
            # the GIL and better thread scaling. No allowed specials = ordinary text.
            return to_numpy(job[2], disallowed_special=()).astype(TOKEN_DTYPE)
        return np.asarray(encoding.encode_ordinary(job[2]), dtype=TOKEN_DTYPE)

    threads = threads or default_threads()
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
            arrays = list(pool.map(encode, jobs))
    else:
        arrays = [encode(job) for job in jobs]
    # A character vocabulary has no end-of-text token: its documents simply follow each other.
    eot = encoding.eot_token
    separator = np.array([eot] if eot is not None else [], dtype=TOKEN_DTYPE)
    parts: list[list[np.ndarray]] = [[] for _ in splits]
    previous: tuple[int, int] | None = None
    for (s, d, _), arr in zip(jobs, arrays, strict=True):
        if previous is not None and previous[0] == s and previous[1] != d and separator.size:
            parts[s].append(separator)
        parts[s].append(arr)
        previous = (s, d)
    return [np.concatenate(p) if p else np.zeros(0, dtype=TOKEN_DTYPE) for p in parts]


def encode_documents(encoding: Any, docs: Sequence[str], threads: int | None = None) -> np.ndarray:
    """Token ids of ``docs`` joined by ``<|endoftext|>`` (see :func:`encode_splits`)."""
    return encode_splits(encoding, [docs], threads)[0]


def tokenizer_id(encoding: Any) -> str:
    return f"{encoding.name}/{encoding.n_vocab}"
