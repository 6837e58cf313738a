"""GPT-2's byte-level BPE through tiktoken, from OpenAI's ``encoder.json`` + ``vocab.bpe`` (or
Hugging Face's ``vocab.json`` + ``merges.txt``) checked against the published sha256, or a hub
folder's only ``tokenizer.json`` checked against tiktoken's hash of GPT-2's ranks. ``gpt2load
download`` puts them in every folder it fills; else they are fetched once into weights/tokenizer."""

from __future__ import annotations

import base64
import codecs
import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken

from .char_tokenizer import META_PKL, CharTokenizer, CharVocabularyError, meta_pkl_beside
from .config import EOT_TOKEN_ID, VOCAB_SIZE
from .errors import TokenizerError, TokenizerNotFoundError
from .releases import TOKENIZER_FACTS

if TYPE_CHECKING:  # pragma: no cover
    import torch

# What get_tokenizer returns: GPT-2's BPE, or a character vocabulary from a meta.pkl.
Tokenizer = tiktoken.Encoding | CharTokenizer

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
# The same two files under the names a Hugging Face folder gives them.
HF_NAMES = {ENCODER_JSON: "vocab.json", VOCAB_BPE: "merges.txt"}
TOKENIZER_JSON = "tokenizer.json"
# tiktoken's published sha256 of r50k_base.tiktoken: GPT-2's ranks, one "base64 rank" a line.
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT = "<|endoftext|>"
TOKENIZER_DIR_ENV = "GPT2LOAD_TOKENIZER_DIR"
_SHA256 = {name: sha256 for name, (_, sha256) in TOKENIZER_FACTS.items()}  # as published


def tokenizer_in(folder: Path) -> dict[str, Path]:
    """GPT-2's tokenizer files in ``folder`` (resolved) by OpenAI's names: the pair under
    either naming, else a hub's ``tokenizer.json``; unchecked; empty when it has neither."""
    found = {
        name: next((folder / n for n in (name, other) if (folder / n).is_file()), None)
        for name, other in HF_NAMES.items()
    }
    if not all(found.values()):
        single = folder / TOKENIZER_JSON
        found = {TOKENIZER_JSON: single} if single.is_file() else {}
    return {name: path.resolve() for name, path in found.items()}


def _candidates(path: str | os.PathLike[str] | None) -> list[Path]:
    # The folder ``path`` names (or holds the file it names), then $GPT2LOAD_TOKENIZER_DIR.
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates.append(p if p.is_dir() else p.parent)
    if env := os.environ.get(TOKENIZER_DIR_ENV):
        candidates.append(Path(env).expanduser())
    return candidates


def tokenizer_files(path: str | os.PathLike[str] | None) -> dict[str, Path]:
    """What to copy beside the model at ``path`` so its folder tokenizes alone: its ``meta.pkl``,
    else GPT-2's checked files from the folders ``get_tokenizer`` reads (never downloaded)."""
    meta = meta_pkl_beside(path)
    if meta is not None:
        return {META_PKL: meta.resolve()}
    for folder in [*_candidates(path), cache_dir()]:
        files = tokenizer_in(folder)
        with contextlib.suppress(OSError, ValueError):  # files get_tokenizer refuses are not copied
            if files and _encoding(files):
                return files
    return {}


def tokenizer_folder(path: str | os.PathLike[str] | None) -> Path | None:
    """The first of ``path``'s folder and ``$GPT2LOAD_TOKENIZER_DIR`` with tokenizer files."""
    return next((f.resolve() for f in _candidates(path) if tokenizer_in(f)), None)


def cache_dir() -> Path:
    """Where tokenizer files are downloaded when no model folder has them."""
    from .downloads.fetch import weights_root

    return weights_root() / "tokenizer"


def _encoding(files: dict[str, Path]) -> tiktoken.Encoding:
    """The encoding of ``tokenizer_in``'s files; a ``ValueError`` unless they are GPT-2's."""
    if TOKENIZER_JSON in files:
        return _encoding_from_tokenizer_json(files[TOKENIZER_JSON])
    return _encoding_from_files(files[ENCODER_JSON], files[VOCAB_BPE])


@functools.lru_cache(maxsize=4)
def _encoding_from_files(encoder: Path, merges: Path) -> tiktoken.Encoding:
    """OpenAI's pair, refused with the fix unless each file has its published sha256."""
    for path, name in ((encoder, ENCODER_JSON), (merges, VOCAB_BPE)):
        digest, expected = hashlib.sha256(path.read_bytes()).hexdigest(), _SHA256[name]
        if digest != expected:
            also = f" (OpenAI's {name})" if path.name != name else ""
            raise ValueError(
                f"the tokenizer file {path}{also} is not GPT-2's published file: sha256 {digest}, "
                f"expected {expected}. Delete it and download again "
                f"(`gpt2load download gpt2`, or let get_tokenizer fetch it)."
            )
    vocab = json.loads(encoder.read_bytes())
    merge_lines = merges.read_text(encoding="utf-8").split("\n")[1:-1]
    return _bpe_encoding(vocab, merge_lines, merges, proven=True)


@functools.lru_cache(maxsize=4)
def _encoding_from_tokenizer_json(path: Path) -> tiktoken.Encoding:
    try:
        model = json.loads(path.read_bytes())["model"]
        vocab, merges = model["vocab"], model["merges"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{path} is not a byte-level BPE tokenizer.json ({exc!r})") from None
    return _bpe_encoding(vocab, merges, path)


def _bpe_encoding(vocab: Any, merges: Any, path: Path, proven: bool = False) -> tiktoken.Encoding:
    """GPT-2's BPE from a vocabulary and merges (``"a b"`` strings or ``[a, b]`` pairs: both are
    in the wild), refused unless they are GPT-2's ranks (``proven``: a published sha256 said)."""
    from tiktoken_ext.openai_public import r50k_pat_str

    # The byte each character of GPT-2's byte-to-unicode mapping stands for.
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    byte_of = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}
    try:
        ranks = {bytes([b]): i for i, b in enumerate(printable + others)}
        for merge in merges:
            first, second = merge.split(" ") if isinstance(merge, str) else merge
            ranks[bytes(byte_of[c] for c in first + second)] = len(ranks)
        vocab = {bytes(byte_of[c] for c in k): v for k, v in vocab.items() if k != EOT}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TokenizerError(f"{path} is not a byte-level BPE tokenizer ({exc!r})") from None
    if not proven:
        lines = b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items())
        proven = hashlib.sha256(lines).hexdigest() == R50K_SHA256
    if vocab != ranks or not proven:
        raise TokenizerError(
            f"{path} is not GPT-2's tokenizer: its vocabulary and merges are not GPT-2's BPE "
            f"ranks (tiktoken's r50k_base, sha256 {R50K_SHA256}); give a folder with GPT-2's "
            f"tokenizer files (`finetune --tokenizer-dir DIR` or {TOKENIZER_DIR_ENV}=DIR)"
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
    """The tokenizer of the model in ``folder`` (or beside the file it names): its ``meta.pkl``,
    which wins (GPT-2's files are copied into folders as a convenience, a ``meta.pkl`` only for
    this model), else GPT-2's BPE from ``tokenizer_folder``, else ``cache_dir()``, fetched there."""
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
                f"{HF_NAMES[ENCODER_JSON]} + {HF_NAMES[VOCAB_BPE]}, or {TOKENIZER_JSON}) are not in "
                f"{' nor '.join(looked)}, and downloading them into {found} failed: {exc}. "
                f"Give a folder holding the two files (a model folder, `finetune --tokenizer-dir "
                f"DIR`, or {TOKENIZER_DIR_ENV}=DIR; `gpt2load download gpt2` adds them to its "
                f"folder), or allow the download: network access to "
                f"openaipublic.blob.core.windows.net, or {MIRROR_ENV}=URL for a mirror serving "
                f"/gpt-2/encodings/main/."
            ) from exc
    return _encoding(tokenizer_in(found))


class StreamDecoder:
    """Token ids to text as they arrive, holding back a UTF-8 character split across tokens."""

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
    if isinstance(tokenizer, CharTokenizer):
        where = f" ({tokenizer.source.name})" if tokenizer.source is not None else ""
        return f"{tokenizer.n_vocab} characters{where}"
    return f"GPT-2 BPE ({tokenizer.n_vocab:,})"


def check_tokenizer_fits(tokenizer: Tokenizer, vocab_size: int, label: str) -> None:
    """Refuse a tokenizer that cannot go with the model ``label`` of ``vocab_size`` ids: a
    character vocabulary must be the model's exactly (ids mean characters only in the order it
    was trained with); GPT-2's BPE may be smaller (nanoGPT pads 50257 to 50304), never larger."""
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
    """Ids of a prompt (``<|endoftext|>`` allowed in it); an empty one starts a new document: at
    ``<|endoftext|>``, or a character vocabulary's newline, as nanoGPT's ``sample.py`` does."""
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
    import torch

    return torch.tensor([prompt_ids(tokenizer, text)], dtype=torch.long, device=device)
