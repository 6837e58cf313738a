"""``convert``: load any checkpoint, write it as Hugging Face, OpenAI TF or native files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..config import EOT_TOKEN_ID
from ..fileio import atomic_path, atomic_write_text
from ..model import GPT
from ..native import save_native
from ..tokenizer import TOKENIZER_DIR_ENV
from .detect import locate
from .export import stored_state_dict
from .layouts import HF, OPENAI
from .loader import load_checkpoint
from .tf_writer import write_state_file, write_tf_checkpoint

TARGETS = ("hf", "openai", "native")
OPENAI_PREFIX = "model.ckpt"
# The same two tokenizer files under OpenAI's and Hugging Face's names.
TOKENIZER_NAMES = {"encoder.json": "vocab.json", "vocab.bpe": "merges.txt"}


def hf_config(model: GPT) -> dict:
    """A ``config.json`` that ``transformers.GPT2LMHeadModel`` reads as this exact model."""
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context_length,
        "n_ctx": c.context_length,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_TOKEN_ID,
        "eos_token_id": EOT_TOKEN_ID,
        "torch_dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }


def openai_hparams(model: GPT) -> dict:
    c = model.config
    return {
        "n_vocab": c.vocab_size,
        "n_ctx": c.context_length,
        "n_embd": c.n_embd,
        "n_head": c.n_head,
        "n_layer": c.n_layer,
    }


def _find_tokenizer(folders: list[Path]) -> dict[str, Path]:
    """OpenAI-named tokenizer file -> an existing copy under either naming.

    Only a complete pair counts (one file alone tokenizes nothing); the first
    folder holding both wins, so a pair never mixes two sources.
    """
    for folder in folders:
        found: dict[str, Path] = {}
        for openai_name, hf_name in TOKENIZER_NAMES.items():
            hit = next((folder / n for n in (openai_name, hf_name) if (folder / n).is_file()), None)
            if hit is not None:
                found[openai_name] = hit
        if len(found) == len(TOKENIZER_NAMES):
            return found
    return {}


def _copy(src: Path, dst: Path) -> Path:
    if src.resolve() != dst.resolve():
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    return dst


def write_hf(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    from safetensors.torch import save_file

    if model.config.qkv_bias is False:
        raise ValueError("GPT-2's Hugging Face layout always has a QKV bias; this model has none")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = stored_state_dict(model, HF, prefix="transformer.")
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    written = [folder / "model.safetensors"]
    written.append(
        atomic_write_text(folder / "config.json", json.dumps(hf_config(model), indent=2) + "\n")
    )
    for openai_name, src in tokenizer.items():
        written.append(_copy(src, folder / TOKENIZER_NAMES[openai_name]))
    return written


def write_openai(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    if model.config.qkv_bias is False:
        raise ValueError("the OpenAI layout always has a QKV bias; this model has none")
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.float().numpy() for name, t in stored_state_dict(model, OPENAI).items()}
    written = []
    # TensorFlow writes into a hidden scratch folder; finished files are renamed into place.
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=folder) as scratch:
        for produced in write_tf_checkpoint(Path(scratch) / OPENAI_PREFIX, arrays):
            os.replace(produced, folder / produced.name)
            written.append(folder / produced.name)
    written.append(write_state_file(folder, OPENAI_PREFIX))
    written.append(
        atomic_write_text(
            folder / "hparams.json", json.dumps(openai_hparams(model), indent=2) + "\n"
        )
    )
    for openai_name, src in tokenizer.items():
        written.append(_copy(src, folder / openai_name))
    return written


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str,
    *,
    dtype: torch.dtype | str | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the checkpoint at ``src`` as ``to`` (``hf``, ``openai`` or ``native``) into ``dst``.

    Returns the files written. ``dst`` is a folder (for ``native`` it may also be a
    ``.safetensors`` file). Tokenizer files are copied from ``tokenizer_dir`` or, when
    not given, from beside ``src``, if they are there; ``openai`` then also tries
    ``$GPT2LOAD_TOKENIZER_DIR`` and, since the release layout includes them, warns
    (``MissingTokenizerWarning``) when it writes a folder without them. The OpenAI
    layout is always float32.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r}; choose one of: {', '.join(TARGETS)}")
    dst = Path(dst).expanduser()
    if to != "native" and dst.is_file():
        raise ValueError(f"{dst} is a file; converting to {to} writes a folder")
    source_folder = locate(Path(src).expanduser()).folder
    # The tokenizer is settled before anything loads or is written.
    if tokenizer_dir is not None:
        tokenizer = _find_tokenizer([Path(tokenizer_dir).expanduser()])
        if not tokenizer:
            raise FileNotFoundError(
                f"{tokenizer_dir} lacks the tokenizer files (encoder.json and vocab.bpe, "
                f"or vocab.json and merges.txt)"
            )
    else:
        tokenizer = _find_tokenizer([source_folder])
        if not tokenizer and to == "openai":
            tokenizer = _tokenizer_for_openai(source_folder)
    model = load_checkpoint(src, dtype=dtype)
    if to == "hf":
        return write_hf(model, dst, tokenizer)
    if to == "openai":
        return write_openai(model, dst, tokenizer)
    return write_native(model, dst, tokenizer)


class MissingTokenizerWarning(UserWarning):
    """An OpenAI-layout folder was written without encoder.json and vocab.bpe."""


def _tokenizer_for_openai(source_folder: Path) -> dict[str, Path]:
    """The OpenAI layout includes the tokenizer: from ``$GPT2LOAD_TOKENIZER_DIR`` or the
    tokenizer download cache (``weights/tokenizer``), or a warning.

    The weights alone still make a valid checkpoint (gpt2load and TensorFlow read it),
    so the conversion goes on, but loudly: the folder is not the complete release layout.
    """
    from ..tokenizer import cache_dir

    env = os.environ.get(TOKENIZER_DIR_ENV, "").strip()
    places = ([Path(env).expanduser()] if env else []) + [cache_dir()]  # no download here
    tokenizer = _find_tokenizer(places)
    if not tokenizer:
        looked = f"{source_folder}" + (f", ${TOKENIZER_DIR_ENV} ({env})" if env else "")
        looked += f" or {cache_dir()}"
        warnings.warn(
            f"no tokenizer files (encoder.json + vocab.bpe, or vocab.json + merges.txt) in "
            f"{looked}: the OpenAI folder is written WITHOUT them, so it is not the complete "
            f"release layout and tokenizing needs them from elsewhere; pass --tokenizer-dir DIR "
            f"or set {TOKENIZER_DIR_ENV} (`gpt2load download gpt2 --source openai` fetches them)",
            MissingTokenizerWarning,
            stacklevel=3,
        )
    return tokenizer


def write_native(model: GPT, dst: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """``model.safetensors`` (or the named ``.safetensors`` file), and the tokenizer beside it,
    under OpenAI's names since that is where ``gpt2load`` looks for it."""
    written = [save_native(model, dst)]
    folder = written[0].parent
    for openai_name, src in tokenizer.items():
        written.append(_copy(src, folder / openai_name))
    return written
