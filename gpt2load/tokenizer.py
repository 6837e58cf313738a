"""GPT-2's byte-level BPE, through tiktoken, built from OpenAI's two files.

Every OpenAI release folder ships ``encoder.json`` and ``vocab.bpe`` (a Hugging Face
folder has the same bytes as ``vocab.json`` and ``merges.txt``), and ``gpt2load
download`` adds them to every folder it fills, so a downloaded model tokenizes with no
network at all. When no such files are beside the model or in
``$GPT2LOAD_TOKENIZER_DIR``, they are fetched once, by the project's own downloader
(mirror, resume, retries and the published sha256 all apply), into
``weights/tokenizer/`` (under ``$GPT2LOAD_WEIGHTS_DIR`` when set) and reused from there.

A character-level model (nanoGPT's ``shakespeare_char``) has its vocabulary in a
``meta.pkl`` beside its ``ckpt.pt``; :func:`get_tokenizer` returns a
:class:`~gpt2load.char_tokenizer.CharTokenizer` for it, which offers the same interface.
"""

from __future__ import annotations

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

if TYPE_CHECKING:  # pragma: no cover
    import torch

# What get_tokenizer returns: GPT-2's BPE, or a character vocabulary from a meta.pkl.
Tokenizer = tiktoken.Encoding | CharTokenizer

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
# The same two files under the names a Hugging Face folder gives them.
HF_NAMES = {ENCODER_JSON: "vocab.json", VOCAB_BPE: "merges.txt"}
# Published sha256 of OpenAI's files (PRODUCT.md). A copy that differs is refused.
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_SHA256 = {ENCODER_JSON: ENCODER_JSON_SHA256, VOCAB_BPE: VOCAB_BPE_SHA256}
EOT = "<|endoftext|>"
TOKENIZER_DIR_ENV = "GPT2LOAD_TOKENIZER_DIR"
CACHE_FOLDER = "tokenizer"  # under the weights root
DOWNLOAD_RETRIES = 2  # a user without network should hear so in seconds, not half a minute


def _pair_in(folder: Path) -> tuple[Path, Path] | None:
    """(encoder file, merges file) in ``folder`` under either naming, if both are there."""
    found = []
    for name in (ENCODER_JSON, VOCAB_BPE):
        hit = next(
            (folder / n for n in (name, HF_NAMES[name]) if (folder / n).is_file()),
            None,
        )
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def _candidates(path: str | os.PathLike[str] | None) -> list[Path]:
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates += [p] if p.is_dir() else [p.parent]
    if os.environ.get(TOKENIZER_DIR_ENV):
        candidates.append(Path(os.environ[TOKENIZER_DIR_ENV]).expanduser())
    return candidates


def local_tokenizer_files(path: str | os.PathLike[str] | None = None) -> tuple[Path, Path] | None:
    """(encoder, merges) files that :func:`get_tokenizer` would read for ``path`` without any
    download (a folder of ours, ``$GPT2LOAD_TOKENIZER_DIR`` or the download cache); None when
    there are none. For copying them beside a checkpoint so the folder is complete."""
    for folder in [*_candidates(path), cache_dir()]:
        pair = _pair_in(folder)
        if pair is None:
            continue
        try:  # a pair that get_tokenizer would refuse is no pair to copy
            _check_file(pair[0], ENCODER_JSON)
            _check_file(pair[1], VOCAB_BPE)
        except (OSError, ValueError):
            continue
        return pair[0].resolve(), pair[1].resolve()
    return None


def tokenizer_files(path: str | os.PathLike[str] | None) -> dict[str, Path]:
    """The tokenizer files that belong with the model at ``path`` (a file or folder), to
    copy beside its weights so the folder tokenizes alone: its ``meta.pkl``, else GPT-2's
    pair under OpenAI's names (from the folder, ``$GPT2LOAD_TOKENIZER_DIR`` or the download
    cache, checked against the published hashes); empty when none is at hand."""
    meta = meta_pkl_beside(path)
    if meta is not None:
        return {META_PKL: meta.resolve()}
    pair = local_tokenizer_files(path)
    return {ENCODER_JSON: pair[0], VOCAB_BPE: pair[1]} if pair is not None else {}


def tokenizer_folder(path: str | os.PathLike[str] | None) -> Path | None:
    """The folder holding ``encoder.json`` + ``vocab.bpe`` (or ``vocab.json`` + ``merges.txt``)
    for ``path`` (a file or folder), else ``$GPT2LOAD_TOKENIZER_DIR``; None when neither has them.
    """
    for folder in _candidates(path):
        if _pair_in(folder) is not None:
            return folder.resolve()
    return None


def cache_dir() -> Path:
    """Where tokenizer files are downloaded when no model folder has them."""
    from .downloads.fetch import weights_root

    return weights_root() / CACHE_FOLDER


def _check_file(path: Path, openai_name: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _SHA256[openai_name]:
        also = f" (OpenAI's {openai_name})" if path.name != openai_name else ""
        raise ValueError(
            f"the tokenizer file {path}{also} is not GPT-2's published file: sha256 {digest}, "
            f"expected {_SHA256[openai_name]}. Delete it and download again "
            f"(`gpt2load download gpt2`, or let get_tokenizer fetch it)."
        )


@functools.lru_cache(maxsize=4)
def _encoding_from_files(encoder: Path, merges: Path) -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    _check_file(encoder, ENCODER_JSON)
    _check_file(merges, VOCAB_BPE)
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(merges),
        encoder_json_file=str(encoder),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_TOKEN_ID},
    )


def download_tokenizer(folder: str | os.PathLike[str] | None = None, progress: bool = True) -> Path:
    """Fetch OpenAI's ``encoder.json`` + ``vocab.bpe`` into ``folder`` (default ``cache_dir()``).

    Through ``gpt2load.downloads.download_file``: ``$GPT2LOAD_MIRROR`` applies, the files
    are checked against the published size and sha256, and files already right cost
    no request (nor any write).
    """
    from .downloads import download_file
    from .releases import tokenizer_files

    target = Path(folder).expanduser() if folder is not None else cache_dir()
    for spec in tokenizer_files():
        download_file(
            spec.url,
            target / spec.path,
            size=spec.size,
            sha256=spec.sha256,
            progress=progress,
            retries=DOWNLOAD_RETRIES,
        )
    return target


def get_tokenizer(
    folder: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> Tokenizer:
    """The tokenizer of the model in ``folder`` (or beside the file it names).

    A ``meta.pkl`` there (nanoGPT's character vocabulary) gives a :class:`CharTokenizer`,
    read without running code; it wins over GPT-2's files in the same folder, because
    it can only have been put there for this model, while GPT-2's files are added to
    folders as a convenience (finetune copies them beside every checkpoint). A wrong pick
    cannot pass silently: :func:`check_tokenizer_fits` refuses a character vocabulary
    whose size is not the model's. Otherwise the GPT-2 encoding, from ``encoder.json`` +
    ``vocab.bpe`` (or the Hugging Face names ``vocab.json`` + ``merges.txt``) in
    ``folder``, else in ``$GPT2LOAD_TOKENIZER_DIR``, else downloaded once into ``cache_dir()``.

    Raises ``ValueError`` for a ``meta.pkl`` that is not a plain vocabulary and for local
    files that are not the published ones, and ``TokenizerNotFoundError`` (naming both
    fixes) when none are found and the download fails.
    """
    meta = meta_pkl_beside(folder)
    if meta is not None:
        return CharTokenizer.from_meta_pkl(meta)
    for candidate in _candidates(folder):
        pair = _pair_in(candidate)
        if pair is not None:
            return _encoding_from_files(pair[0].resolve(), pair[1].resolve())
    import requests

    from .downloads import DownloadError
    from .downloads.hosts import MIRROR_ENV

    cache = cache_dir()
    try:
        target = download_tokenizer(cache, progress=progress)
    except (DownloadError, OSError, ValueError, requests.RequestException) as exc:
        with contextlib.suppress(OSError):
            cache.rmdir()  # only when the failed attempt left it empty
        looked = [str(Path(folder))] if folder is not None else []
        env_dir = os.environ.get(TOKENIZER_DIR_ENV, "").strip()
        looked.append(f"${TOKENIZER_DIR_ENV} ({env_dir or 'not set'})")
        raise TokenizerNotFoundError(
            f"no GPT-2 tokenizer available: {ENCODER_JSON} + {VOCAB_BPE} (or "
            f"{HF_NAMES[ENCODER_JSON]} + {HF_NAMES[VOCAB_BPE]}) are not in "
            f"{' nor '.join(looked)}, and downloading them into {cache} failed: {exc}. "
            f"Give a folder holding the two files (a model folder, `finetune --tokenizer-dir "
            f"DIR`, or {TOKENIZER_DIR_ENV}=DIR; `gpt2load download gpt2` adds them to its "
            f"folder), or allow the download: network access to "
            f"openaipublic.blob.core.windows.net, or {MIRROR_ENV}=URL for a mirror serving "
            f"/gpt-2/encodings/main/."
        ) from exc
    return _encoding_from_files((target / ENCODER_JSON).resolve(), (target / VOCAB_BPE).resolve())


class StreamDecoder:
    """Turn token ids into text one at a time, for printing as tokens arrive.

    A GPT-2 token can end in the middle of a multi-byte UTF-8 character; an
    incremental decoder holds such bytes back until the character is complete
    instead of printing a replacement mark.
    """

    def __init__(self, encoding: Tokenizer) -> None:
        import codecs

        self._encoding = encoding
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._encoding.decode_single_token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# ---------------------------------------------------------------- a tokenizer and its model
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
    """Refuse a tokenizer that cannot go with a model of ``vocab_size`` ids (``label`` names
    the model in the message).

    A character vocabulary must be the model's exactly: ids mean characters only in the
    order the model was trained with. A BPE tokenizer may be smaller than the model
    (nanoGPT pads 50257 to 50304; sampling stops at the tokenizer's ids), never larger:
    its ids would index past the embedding.
    """
    if isinstance(tokenizer, CharTokenizer):
        if tokenizer.n_vocab != vocab_size:
            where = tokenizer.source or META_PKL
            raise CharVocabularyError(
                f"{where} lists {tokenizer.n_vocab} characters but the model {label} has a "
                f"vocabulary of {vocab_size} tokens; this meta.pkl belongs to another model"
            )
        return
    if tokenizer.n_vocab > vocab_size:
        raise ValueError(
            f"the model {label} has a vocabulary of {vocab_size} tokens, fewer than GPT-2's "
            f"tokenizer ({tokenizer.n_vocab}), so it was not trained with GPT-2's BPE; a "
            f"character-level nanoGPT model needs its {META_PKL} (nanoGPT writes it to "
            f"data/<dataset>/{META_PKL}) copied beside its checkpoint"
        )


def prompt_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ids of a prompt; an empty prompt starts a new document.

    GPT-2 starts from ``<|endoftext|>`` (which a prompt may also contain); a character
    vocabulary has no such token, so it starts from a newline as nanoGPT's ``sample.py``
    does. A character outside the vocabulary is an error naming it.
    """
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
