"""GPT-2's byte-level BPE, through tiktoken.

Every OpenAI release folder ships ``encoder.json`` and ``vocab.bpe``; building
the encoding from those local files means a downloaded model tokenizes with no
network at all. Only when no such folder is known do we fall back to
tiktoken's own ``gpt2`` encoding, which downloads once and caches.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import tiktoken

from .config import EOT_TOKEN_ID, VOCAB_SIZE

ENCODER_JSON = "encoder.json"
VOCAB_BPE = "vocab.bpe"
# Published sha256 of OpenAI's files (PRODUCT.md). Passing them to tiktoken makes it
# refuse a corrupted copy and never serve a stale cached one.
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
EOT = "<|endoftext|>"
TOKENIZER_DIR_ENV = "GPT2LOAD_TOKENIZER_DIR"


class TokenizerNotFoundError(FileNotFoundError):
    """Neither local tokenizer files nor tiktoken's download are available."""


def tokenizer_folder(path: str | os.PathLike[str] | None) -> Path | None:
    """The folder holding ``encoder.json`` + ``vocab.bpe`` for ``path`` (a file or folder), if any."""
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates += [p] if p.is_dir() else [p.parent]
    if os.environ.get(TOKENIZER_DIR_ENV):
        candidates.append(Path(os.environ[TOKENIZER_DIR_ENV]).expanduser())
    for folder in candidates:
        if (folder / ENCODER_JSON).is_file() and (folder / VOCAB_BPE).is_file():
            return folder.resolve()
    return None


@functools.lru_cache(maxsize=4)
def _encoding_from_folder(folder: Path) -> tiktoken.Encoding:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(folder / VOCAB_BPE),
            encoder_json_file=str(folder / ENCODER_JSON),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    except ValueError as exc:
        raise ValueError(
            f"the tokenizer files in {folder} ({ENCODER_JSON}, {VOCAB_BPE}) are not GPT-2's "
            f"published files: {exc}. Delete them and download again "
            f"(`gpt2load download gpt2 --source openai`)."
        ) from exc
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: EOT_TOKEN_ID},
    )


def get_tokenizer(folder: str | os.PathLike[str] | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding: from local files beside ``folder`` (or ``$GPT2LOAD_TOKENIZER_DIR``),
    else tiktoken's cached/downloaded ``gpt2``.
    """
    local = tokenizer_folder(folder)
    if local is not None:
        return _encoding_from_folder(local)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:
        where = f" in {Path(folder)}" if folder is not None else ""
        raise TokenizerNotFoundError(
            f"no GPT-2 tokenizer available: no {ENCODER_JSON} + {VOCAB_BPE}{where}, and tiktoken "
            f"could not fetch its 'gpt2' encoding ({type(exc).__name__}: {exc}). Either put "
            f"{ENCODER_JSON} and {VOCAB_BPE} in the model folder or point {TOKENIZER_DIR_ENV} at a "
            f"folder holding them (`gpt2load download gpt2 --source openai` fetches them), or allow "
            f"network access once so tiktoken can download and cache its gpt2 encoding."
        ) from exc


class StreamDecoder:
    """Turn token ids into text one at a time, for printing as tokens arrive.

    A GPT-2 token can end in the middle of a multi-byte UTF-8 character; an
    incremental decoder holds such bytes back until the character is complete
    instead of printing a replacement mark.
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        import codecs

        self._encoding = encoding
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._encoding.decode_single_token_bytes(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
