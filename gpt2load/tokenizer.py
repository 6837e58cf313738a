"""GPT-2's byte-level BPE through tiktoken, from OpenAI's ``encoder.json`` + ``vocab.bpe``.

``gpt2load download`` puts them (Hugging Face: ``vocab.json`` + ``merges.txt``) in every
folder it fills, so a downloaded model tokenizes offline; else they are downloaded once into
``weights/tokenizer/``. Every copy is checked against the published sha256.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import tiktoken

from .char_tokenizer import META_PKL, CharTokenizer, CharVocabularyError, meta_pkl_beside
from .config import EOT_TOKEN_ID, VOCAB_SIZE
from .errors import TokenizerNotFoundError
from .releases import TOKENIZER_FACTS

if TYPE_CHECKING:  # pragma: no cover
    import torch

# What get_tokenizer returns: GPT-2's BPE, or a character vocabulary from a meta.pkl.
Tokenizer = tiktoken.Encoding | CharTokenizer

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
# The same two files under the names a Hugging Face folder gives them.
HF_NAMES = {ENCODER_JSON: "vocab.json", VOCAB_BPE: "merges.txt"}
EOT = "<|endoftext|>"
TOKENIZER_DIR_ENV = "GPT2LOAD_TOKENIZER_DIR"
_SHA256 = {name: sha256 for name, (_, sha256) in TOKENIZER_FACTS.items()}  # as published


def _pair_in(folder: Path) -> tuple[Path, Path] | None:
    """(encoder file, merges file) in ``folder`` under either naming, if both are there."""
    encoder, merges = (
        next((folder / n for n in (name, HF_NAMES[name]) if (folder / n).is_file()), None)
        for name in (ENCODER_JSON, VOCAB_BPE)
    )
    return (encoder, merges) if encoder and merges else None


def _candidates(path: str | os.PathLike[str] | None) -> list[Path]:
    # The folder ``path`` names (or holds the file it names), then $GPT2LOAD_TOKENIZER_DIR.
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates.append(p if p.is_dir() else p.parent)
    if env := os.environ.get(TOKENIZER_DIR_ENV):
        candidates.append(Path(env).expanduser())
    return candidates


def _check_pair(encoder: Path, merges: Path) -> None:
    """Refuse files that are not OpenAI's published ones: a ``ValueError`` naming the fix."""
    for path, name in ((encoder, ENCODER_JSON), (merges, VOCAB_BPE)):
        digest, expected = hashlib.sha256(path.read_bytes()).hexdigest(), _SHA256[name]
        if digest != expected:
            also = f" (OpenAI's {name})" if path.name != name else ""
            raise ValueError(
                f"the tokenizer file {path}{also} is not GPT-2's published file: sha256 {digest}, "
                f"expected {expected}. Delete it and download again "
                f"(`gpt2load download gpt2`, or let get_tokenizer fetch it)."
            )


def tokenizer_files(path: str | os.PathLike[str] | None) -> dict[str, Path]:
    """The tokenizer files to copy beside the model at ``path`` (a file or folder) so its
    folder tokenizes alone: its ``meta.pkl``, else GPT-2's pair under OpenAI's names (from
    the folder, ``$GPT2LOAD_TOKENIZER_DIR`` or the download cache, hash-checked, never
    downloaded); empty when none is at hand."""
    meta = meta_pkl_beside(path)
    if meta is not None:
        return {META_PKL: meta.resolve()}
    for pair in filter(None, map(_pair_in, [*_candidates(path), cache_dir()])):
        try:
            _check_pair(*pair)
        except (OSError, ValueError):  # a pair that get_tokenizer would refuse is no pair to copy
            continue
        return {ENCODER_JSON: pair[0].resolve(), VOCAB_BPE: pair[1].resolve()}
    return {}


def tokenizer_folder(path: str | os.PathLike[str] | None) -> Path | None:
    """The folder holding GPT-2's pair (under either naming) for ``path`` (a file or folder),
    else ``$GPT2LOAD_TOKENIZER_DIR``; None when neither has them."""
    return next((f.resolve() for f in _candidates(path) if _pair_in(f) is not None), None)


def cache_dir() -> Path:
    """Where tokenizer files are downloaded when no model folder has them."""
    from .downloads.fetch import weights_root

    return weights_root() / "tokenizer"


@functools.lru_cache(maxsize=4)
def _encoding_from_files(encoder: Path, merges: Path) -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    _check_pair(encoder, merges)
    # The hashes again, so tiktoken's cache (keyed by path) cannot serve another file's bytes.
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(merges), str(encoder), _SHA256[VOCAB_BPE], _SHA256[ENCODER_JSON]
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_TOKEN_ID},
    )


def get_tokenizer(
    folder: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> Tokenizer:
    """The tokenizer of the model in ``folder`` (or beside the file it names).

    A ``meta.pkl`` there wins over GPT-2's files beside it: those are copied into folders as
    a convenience, a ``meta.pkl`` only for this model (and :func:`check_tokenizer_fits`
    refuses a wrong pick). Otherwise GPT-2's BPE from the folder, ``$GPT2LOAD_TOKENIZER_DIR``
    or ``cache_dir()``, downloading it there if need be.
    """
    meta = meta_pkl_beside(folder)
    if meta is not None:
        return CharTokenizer.from_meta_pkl(meta)
    found = tokenizer_folder(folder)
    if found is None:
        import requests

        from .downloads import DownloadError, download_file
        from .downloads.hosts import MIRROR_ENV
        from .releases import tokenizer_files as specs

        found = cache_dir()
        try:
            for spec in specs():  # two retries: a user without network hears so in seconds
                facts = {"size": spec.size, "sha256": spec.sha256, "progress": progress}
                download_file(spec.url, found / spec.path, **facts, retries=2)
        except (DownloadError, OSError, ValueError, requests.RequestException) as exc:
            with contextlib.suppress(OSError):
                found.rmdir()  # only when the failed attempt left it empty
            looked = [str(Path(folder))] if folder is not None else []
            env_dir = os.environ.get(TOKENIZER_DIR_ENV, "").strip()
            looked.append(f"${TOKENIZER_DIR_ENV} ({env_dir or 'not set'})")
            raise TokenizerNotFoundError(
                f"no GPT-2 tokenizer available: {ENCODER_JSON} + {VOCAB_BPE} (or "
                f"{HF_NAMES[ENCODER_JSON]} + {HF_NAMES[VOCAB_BPE]}) are not in "
                f"{' nor '.join(looked)}, and downloading them into {found} failed: {exc}. "
                f"Give a folder holding the two files (a model folder, `finetune --tokenizer-dir "
                f"DIR`, or {TOKENIZER_DIR_ENV}=DIR; `gpt2load download gpt2` adds them to its "
                f"folder), or allow the download: network access to "
                f"openaipublic.blob.core.windows.net, or {MIRROR_ENV}=URL for a mirror serving "
                f"/gpt-2/encodings/main/."
            ) from exc
    encoder, merges = _pair_in(found)
    return _encoding_from_files(encoder.resolve(), merges.resolve())


class StreamDecoder:
    """Token ids to text one at a time, for printing as they arrive: a GPT-2 token can end
    inside a multi-byte UTF-8 character, whose bytes are held back until it is complete."""

    def __init__(self, encoding: Tokenizer) -> None:
        self._encoding = encoding
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._encoding.decode_single_token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def tokenizer_key(tokenizer: Tokenizer) -> str:
    """``NAME/N_VOCAB``: equal for two tokenizers exactly when they encode alike (the form
    finetune's ``tokenizer_id`` records; a character vocabulary's name hashes its characters)."""
    return f"{tokenizer.name}/{tokenizer.n_vocab}"


def describe_tokenizer(tokenizer: Tokenizer) -> str:
    """A few words for reports: which tokenizer, how many tokens."""
    if isinstance(tokenizer, CharTokenizer):
        where = f" ({tokenizer.source.name})" if tokenizer.source is not None else ""
        return f"{tokenizer.n_vocab} characters{where}"
    return f"GPT-2 BPE ({tokenizer.n_vocab:,})"


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int, label: str) -> None:
    """Refuse a tokenizer that cannot go with the model ``label`` of ``vocab_size`` ids.

    A character vocabulary must be the model's exactly (ids mean characters only in the
    order it was trained with); GPT-2's BPE may be smaller (nanoGPT pads 50257 to 50304),
    never larger: its ids would index past the embedding.
    """
    if isinstance(tokenizer, CharTokenizer) and tokenizer.n_vocab != vocab_size:
        raise CharVocabularyError(
            f"{tokenizer.source or META_PKL} lists {tokenizer.n_vocab} characters but the model "
            f"{label} has a vocabulary of {vocab_size} tokens; this meta.pkl belongs to another "
            f"model"
        )
    if not isinstance(tokenizer, CharTokenizer) and tokenizer.n_vocab > vocab_size:
        raise ValueError(
            f"the model {label} has a vocabulary of {vocab_size} tokens, fewer than GPT-2's "
            f"tokenizer ({tokenizer.n_vocab}), so it was not trained with GPT-2's BPE; a "
            f"character-level nanoGPT model needs its {META_PKL} (nanoGPT writes it to "
            f"data/<dataset>/{META_PKL}) copied beside its checkpoint"
        )


def prompt_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ids of a prompt; an empty one starts a new document: GPT-2's at ``<|endoftext|>`` (which
    a prompt may also contain), a character vocabulary's at a newline, as nanoGPT's
    ``sample.py`` does."""
    if isinstance(tokenizer, CharTokenizer):
        if text:
            return tokenizer.encode(text, what="the prompt")
        if "\n" in tokenizer.stoi:
            return [tokenizer.stoi["\n"]]
        raise CharVocabularyError(
            "the prompt is empty and this character vocabulary has no newline to start "
            "from; give a prompt"
        )
    ids = tokenizer.encode(text, allowed_special={EOT})
    return ids or [tokenizer.eot_token]


def prompt_tensor(tokenizer: Tokenizer, text: str, device: torch.device | str) -> torch.Tensor:
    """:func:`prompt_ids` as a ``[1, time]`` tensor on ``device``, ready for generation."""
    import torch

    return torch.tensor([prompt_ids(tokenizer, text)], dtype=torch.long, device=device)
