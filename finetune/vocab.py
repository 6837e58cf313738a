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

from .data import is_prepared_folder
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


def check_tokenizer_dir(tokenizer_dir: str | os.PathLike[str]) -> Path:
    """A ``--tokenizer-dir`` given must hold GPT-2's files itself: gpt2load would otherwise
    fall back to ``$GPT2LOAD_TOKENIZER_DIR`` or a download, and a mistyped path would go
    unnoticed (as a mistyped ``--data`` path does not). Checked files only: ``tokenizer_files``
    leaves out ones that are not GPT-2's, so a folder of wrong ones holds none."""
    place = Path(tokenizer_dir).expanduser()
    if not place.exists():
        raise ConfigError(
            f"--tokenizer-dir {tokenizer_dir} does not exist; give the folder that holds "
            f"GPT-2's encoder.json + vocab.bpe (`gpt2load download gpt2` puts them in its "
            f"folder), or drop --tokenizer-dir"
        )
    folder = place if place.is_dir() else place.parent
    files = gpt2load.tokenizer_files(place)
    if META_PKL in files:
        raise ConfigError(
            f"--tokenizer-dir {tokenizer_dir} holds a {META_PKL} (a character vocabulary); "
            f"give a folder with GPT-2's encoder.json + vocab.bpe, or drop --tokenizer-dir"
        )
    # Resolved as tokenizer_files resolves them: a link in the folder is the folder's own file.
    try:
        own = {entry.resolve() for entry in folder.iterdir()}
    except OSError:  # unreadable: nothing of it can be told apart from the fallbacks
        own = set()
    if not files or not set(files.values()) <= own:
        raise ConfigError(
            f"--tokenizer-dir {tokenizer_dir} holds no GPT-2 tokenizer files that match the "
            f"published ones (encoder.json + vocab.bpe, vocab.json + merges.txt, or "
            f"tokenizer.json); give the folder that holds them, or drop --tokenizer-dir"
        )
    return place


def _gpt2_place(
    tokenizer_dir: str | os.PathLike[str] | None, weights: Path | None, resumed: bool
) -> Path | None:
    """Where GPT-2's files are looked for first. A resumed run's recorded ``--tokenizer-dir``
    that has gone since falls back to its checkpoint, which carries the same checked files
    (and the setting cannot change on resume)."""
    if tokenizer_dir is None:
        return weights
    if resumed and weights is not None:
        try:
            return check_tokenizer_dir(tokenizer_dir)
        except ConfigError:
            return weights
    return check_tokenizer_dir(tokenizer_dir)


def choose_vocab(
    choice: str,
    weights: Path | None,
    data: Sequence[str],
    tokenizer_dir: str | os.PathLike[str] | None = None,
    *,
    label: str = "--init",
    resumed: bool = False,
) -> RunVocab:
    """From ``--tokenizer``, the weights' folder (None: a new model) and ``--data``: a
    prepared folder only in the vocabulary its ids are in, a ``--tokenizer-dir`` only with
    GPT-2's files in it; refused before any data is prepared or weights are loaded."""
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
    is_char = choice == CHAR or (choice == AUTO and brought)
    if len(data) == 1 and is_prepared_folder(data[0]):
        _check_prepared_ids(data[0], data_char, is_char, choice, weights, label)
    place = _gpt2_place(tokenizer_dir, weights, resumed)  # checked for a character run too
    if is_char:
        return RunVocab(is_char=True, char=weights_char or data_char)
    return RunVocab(gpt2_place=place)


def _check_prepared_ids(
    folder: str,
    chars: CharTokenizer | None,
    is_char: bool,
    choice: str,
    weights: Path | None,
    label: str,
) -> None:
    """A prepared folder's ids are characters exactly when a ``meta.pkl`` lies beside them
    (nanoGPT's layout): under the other vocabulary they are numbers that mean nothing, and
    training on them would run to the end without a word of complaint."""
    if is_char == (chars is not None):
        return
    if choice != AUTO:
        who = f"--tokenizer {choice}"
    else:
        who = f"{label} {weights} ({'a character-level model' if is_char else 'GPT-2 BPE'})"
    if is_char:
        raise DataError(
            f"--data {folder} holds no {META_PKL}, so its ids are GPT-2's BPE tokens, not the "
            f"characters {who} trains on: give the text itself (it is prepared with the "
            f"characters)"
        )
    drop = " drop --tokenizer gpt2 to train a character model on it, or" if not weights else ""
    raise DataError(
        f"--data {folder} was prepared with a character vocabulary (its {META_PKL} lists "
        f"{chars.n_vocab} characters), so its ids are not the GPT-2 BPE tokens {who} trains "
        f"on:{drop} give the text itself to encode it with GPT-2's BPE"
    )


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
