"""Which tokenizer a run uses, chosen once: GPT-2's BPE or a character vocabulary. It belongs
to the weights (a nanoGPT ``shakespeare_char`` model means nothing under BPE), so ``--tokenizer
auto`` takes what lies beside ``--init``: its ``meta.pkl``, else GPT-2's files there."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpt2load
from gpt2load import META_PKL, CharTokenizer

from .errors import ConfigError, DataError

AUTO, GPT2, CHAR = "auto", "gpt2", "char"


@dataclass(frozen=True)
class RunVocab:
    """As far as known before data is prepared: ``char`` None with ``is_char`` is a vocabulary
    built from the text; ``gpt2_place`` is where GPT-2's files are looked for first."""

    is_char: bool = False
    char: CharTokenizer | None = None
    gpt2_place: Path | None = None


def _char_vocab(folder: Path | None) -> CharTokenizer | None:
    meta = folder / META_PKL if folder is not None else None
    return CharTokenizer.from_meta_pkl(meta) if meta is not None and meta.is_file() else None


def choose_vocab(
    choice: str,
    weights: Path | None,
    data: Sequence[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    label: str = "--init",
) -> RunVocab:
    """From ``--tokenizer``, the weights' folder (None: a new model) and ``--data``."""
    weights_char = _char_vocab(weights)
    data_char = _char_vocab(Path(data[0]).expanduser()) if len(data) == 1 else None
    if weights_char is not None and data_char is not None and weights_char.name != data_char.name:
        raise DataError(
            f"--data {data[0]} was prepared with another character vocabulary "
            f"({data_char.n_vocab} characters) than {label} {weights} was trained on "
            f"({weights_char.n_vocab}); give the text itself so it is encoded with the model's"
        )
    if choice == GPT2 and weights_char is not None:
        raise ConfigError(
            f"{label} {weights} is a character-level model (its {META_PKL} lists "
            f"{weights_char.n_vocab} characters); it cannot train on GPT-2's BPE: drop "
            f"--tokenizer gpt2"
        )
    if choice == CHAR and weights is not None and weights_char is None:
        raise ConfigError(
            f"--tokenizer char needs --init scratch or a character-level checkpoint (a "
            f"{META_PKL} beside it); {label} {weights} has GPT-2's BPE vocabulary"
        )
    brought = weights_char is not None or (weights is None and data_char is not None)
    if choice == CHAR or (choice == AUTO and brought):
        return RunVocab(is_char=True, char=weights_char or data_char)
    place = Path(tokenizer_dir).expanduser() if tokenizer_dir is not None else weights
    return RunVocab(gpt2_place=place)


def run_tokenizer(vocab: RunVocab, data_folder: Path) -> Any:
    """Once data is prepared (where a vocabulary built from the text lies)."""
    if not vocab.is_char:
        return gpt2load.get_tokenizer(vocab.gpt2_place)
    chars = vocab.char if vocab.char is not None else _char_vocab(data_folder)
    if chars is None:
        raise DataError(
            f"{data_folder} holds no {META_PKL}, so its ids are not characters; with "
            f"--tokenizer char give the text itself (it is prepared with its characters)"
        )
    return chars


def checkpoint_files(vocab: RunVocab, tokenizer: Any) -> dict[str, Path]:
    """What a checkpoint carries to generate alone and offline (none is no reason to fail)."""
    if vocab.is_char:
        source = getattr(tokenizer, "source", None)
        return {META_PKL: Path(source)} if source is not None else {}
    files = gpt2load.tokenizer_files(vocab.gpt2_place)
    return {} if META_PKL in files else files
