"""Character-level vocabularies: nanoGPT's ``meta.pkl`` (``vocab_size``, ``itos``, ``stoi``),
read by an unpickler that cannot import anything (a pickle can run any code while it loads, and
checkpoint folders come from strangers). :class:`CharTokenizer` offers the part of
``tiktoken.Encoding`` gpt2load and finetune use, so callers take either."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import TokenizerError

META_PKL = "meta.pkl"
# nanoGPT's meta.pkl for Tiny Shakespeare is ~1 KB; anything near this is not a vocabulary.
MAX_META_BYTES = 64 * 1024 * 1024
# How many unknown characters an error lists before saying "and N more".
MAX_LISTED = 20


class CharVocabularyError(TokenizerError):
    """A ``meta.pkl`` that is not a character vocabulary, or text it cannot encode."""


class _Refused(pickle.UnpicklingError):
    """The pickle asked for something to import: code, which a vocabulary never needs."""


class _NoGlobals(pickle.Unpickler):
    """Refuses every import: GLOBAL, STACK_GLOBAL and EXT* go through ``find_class``, REDUCE,
    BUILD, NEWOBJ and INST need what it returns, the base class refuses PERSID; what is left
    builds only the containers and scalars pickle knows by itself."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: ARG002
        raise _Refused(f"it asks to import {module}.{name}")


def _only_plain(value: Any, depth: int = 0) -> str | None:
    """What in ``value`` is not a dict, str or int (bools excluded), or None if nothing."""
    if depth > 4:
        return "containers nested deeper than a vocabulary's"
    if isinstance(value, bool) or not isinstance(value, (dict, str, int)):
        return f"a {type(value).__name__}"
    parts = (part for pair in value.items() for part in pair) if isinstance(value, dict) else ()
    return next(filter(None, (_only_plain(part, depth + 1) for part in parts)), None)


def read_meta_pkl(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of a nanoGPT ``meta.pkl``, read without running any code; a pickle that
    would import anything or holds anything but dicts, strings and ints is refused."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_META_BYTES:
        raise CharVocabularyError(
            f"{path} is {size:,} bytes, too large for a character vocabulary; refused"
        )
    try:
        data = _NoGlobals(io.BytesIO(path.read_bytes())).load()
    except _Refused as exc:
        raise CharVocabularyError(
            f"{path} is not a plain character vocabulary: {exc}; refused without running it "
            f"(a meta.pkl may hold only dicts, strings and integers)"
        ) from None
    except Exception as exc:  # truncated or garbled bytes: EOFError, ValueError, ...
        raise CharVocabularyError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    bad = _only_plain(data)
    if bad is not None:
        raise CharVocabularyError(
            f"{path} holds {bad}; a meta.pkl may hold only dicts, strings and integers "
            f"(nanoGPT's {{'vocab_size', 'itos', 'stoi'}}); refused"
        )
    return data


def _show(chars: list[str]) -> str:
    shown = ", ".join(repr(c) for c in chars[:MAX_LISTED])
    more = len(chars) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


class CharTokenizer:
    """One token per character, ids as listed in a nanoGPT ``meta.pkl`` (``itos``)."""

    eot_token: int | None = None  # nanoGPT's char datasets have no end-of-text token

    def __init__(self, itos: Sequence[str], source: str | os.PathLike[str] | None = None) -> None:
        chars = list(itos)
        where = f"{source}: " if source is not None else ""
        if not chars:
            raise CharVocabularyError(f"{where}the character vocabulary is empty")
        for i, ch in enumerate(chars):
            if not isinstance(ch, str) or len(ch) != 1:
                raise CharVocabularyError(
                    f"{where}id {i} is {ch!r}, not one character; a character vocabulary "
                    f"maps every id to a single character"
                )
        if len(set(chars)) != len(chars):
            twice = sorted({c for c in chars if chars.count(c) > 1})
            raise CharVocabularyError(f"{where}characters listed twice: {_show(twice)}")
        self.itos: list[str] = chars
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(chars)}
        self.source = Path(source) if source is not None else None
        self._bytes = [ch.encode("utf-8", errors="surrogatepass") for ch in chars]
        # Two vocabularies of the same size but other characters are other tokenizers.
        self.name = f"char-{hashlib.sha256(b''.join(self._bytes)).hexdigest()[:12]}"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_meta_pkl(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        """Read and check nanoGPT's ``meta.pkl``: itos and stoi inverse, ids 0..V-1, one
        character each, ``vocab_size`` = V. Errors are one line naming the file."""
        data = read_meta_pkl(path := Path(path))
        if not isinstance(data, dict):
            raise CharVocabularyError(
                f"{path} holds a {type(data).__name__}, not nanoGPT's dict "
                f"{{'vocab_size', 'itos', 'stoi'}}"
            )
        if missing := [k for k in ("vocab_size", "itos", "stoi") if k not in data]:
            raise CharVocabularyError(
                f"{path} has no {', '.join(missing)}; nanoGPT's meta.pkl holds "
                f"vocab_size, itos and stoi"
            )
        size, itos, stoi = data["vocab_size"], data["itos"], data["stoi"]
        if not isinstance(size, int) or size < 1:
            why = f"vocab_size is {size!r}, not a positive integer"
        elif not isinstance(itos, dict) or not isinstance(stoi, dict):
            why = "itos and stoi must both be dicts"
        elif sorted(k for k in itos if isinstance(k, int)) != list(range(len(itos))):
            why = f"the ids of itos are not 0..{len(itos) - 1} (every key an integer)"
        elif len(itos) != size:
            why = f"vocab_size is {size} but itos lists {len(itos)} characters"
        elif {v: k for k, v in itos.items()} != stoi or len(stoi) != len(itos):
            why = "itos and stoi are not inverse of each other"
        else:
            return cls([itos[i] for i in range(size)], source=path)
        raise CharVocabularyError(f"{path}: {why}")

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary nanoGPT's ``prepare.py`` builds: the text's characters, sorted."""
        return cls(sorted(set(text)))

    def save(self, folder_or_file: str | os.PathLike[str]) -> Path:
        """Write ``meta.pkl`` (into a folder, or to the file named) as nanoGPT writes it, so
        a checkpoint beside it generates here and in nanoGPT's ``sample.py``."""
        from .fileio import atomic_write_bytes

        path = Path(folder_or_file)
        if path.is_dir() or not path.suffix:
            path = path / META_PKL
        meta = {"vocab_size": self.n_vocab, "itos": dict(enumerate(self.itos)), "stoi": self.stoi}
        atomic_write_bytes(path, pickle.dumps(meta, protocol=pickle.DEFAULT_PROTOCOL))
        return path

    # ------------------------------------------------------------------ tiktoken's interface
    @property
    def n_vocab(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        where = f", from {self.source}" if self.source is not None else ""
        return f"<CharTokenizer {self.n_vocab} characters{where}>"

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of ``text`` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.stoi))

    def encode(self, text: str, *, what: str = "the text", **_tiktoken_options: Any) -> list[int]:
        """Ids of ``text``; a character outside the vocabulary is an error naming it and
        ``what`` text it is. tiktoken's options are accepted: there are no special tokens."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            raise CharVocabularyError(
                f"{what} has characters outside the model's {self.n_vocab}-character "
                f"vocabulary: {_show(self.unknown_characters(text))}"
            ) from None

    encode_ordinary = encode  # there are no special tokens to tell apart

    def _check_id(self, token: int) -> int:
        token = int(token)
        if not 0 <= token < len(self.itos):
            raise CharVocabularyError(
                f"token id {token} is outside the {self.n_vocab}-character vocabulary"
            )
        return token

    def decode(self, tokens: Iterable[int], errors: str = "replace") -> str:  # noqa: ARG002
        return "".join(self.itos[self._check_id(t)] for t in tokens)

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self._bytes[self._check_id(token)]


def meta_pkl_beside(path: str | os.PathLike[str] | None) -> Path | None:
    """``meta.pkl`` in the folder ``path`` names or beside the file it names, None if absent:
    only there (not in nanoGPT's ``data/<dataset>/``), as one elsewhere could be another model's."""
    if path is None:
        return None
    folder = p if (p := Path(path).expanduser()).is_dir() else p.parent
    return candidate if (candidate := folder / META_PKL).is_file() else None
