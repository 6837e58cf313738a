"""``convert``: load any checkpoint, write it as Hugging Face, OpenAI TF, nanoGPT, the book's
``.pth`` or native files, each of which its producer's own code loads and computes exactly.

A model its target cannot compute is refused before anything is written, with the
reason (``export.unsupported``)."""

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
from .errors import CheckpointError
from .export import stored_state_dict, unsupported
from .layouts import HF, NANOGPT, OPENAI, OURS
from .loader import load_checkpoint
from .tf_writer import write_state_file, write_tf_checkpoint

TARGETS = ("hf", "openai", "nanogpt", "rasbt", "native")
OPENAI_PREFIX = "model.ckpt"
CHAR_VOCAB = "meta.pkl"
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
        "n_inner": c.n_inner,
        "activation_function": HF_ACTIVATION[c.activation],
        "layer_norm_epsilon": c.layer_norm_eps,
        "scale_attn_by_inverse_layer_idx": c.scale_attn_by_inverse_layer_idx,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": c.tie_head,
        "bos_token_id": EOT_TOKEN_ID,
        "eos_token_id": EOT_TOKEN_ID,
        "torch_dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }


# transformers' name for each of our activations (ACT2FN).
HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


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

    folder.mkdir(parents=True, exist_ok=True)
    tensors = stored_state_dict(model, HF, prefix="transformer.")
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    written = [folder / "model.safetensors"]
    written.append(
        atomic_write_text(folder / "config.json", json.dumps(hf_config(model), indent=2) + "\n")
    )
    for name, src in tokenizer.items():
        written.append(_copy(src, folder / TOKENIZER_NAMES.get(name, name)))
    return written


def write_openai(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
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
    for name, src in tokenizer.items():
        written.append(_copy(src, folder / name))
    return written


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str,
    *,
    dtype: torch.dtype | str | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    n_head: int | None = None,
) -> list[Path]:
    """Write the checkpoint at ``src`` as ``to`` (one of ``TARGETS``) into ``dst``.

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
    if (source_folder / CHAR_VOCAB).is_file():  # nanoGPT's character vocabulary travels too
        tokenizer[CHAR_VOCAB] = source_folder / CHAR_VOCAB
    model = load_checkpoint(src, dtype=dtype, n_head=n_head)
    reasons = unsupported(model.config, to)
    if reasons:
        raise CheckpointError(f"{src} cannot be written as {to}: " + "; ".join(reasons))
    return WRITERS[to](model, dst, tokenizer)


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
    for name, src in tokenizer.items():
        written.append(_copy(src, folder / name))
    return written


def book_config(model: GPT) -> dict:
    """The book's cfg dict (``GPT_CONFIG_124M``'s keys), so ``GPTModel(cfg)`` rebuilds this model
    and gpt2load reads the head count back from it."""
    c = model.config
    return {
        "vocab_size": c.vocab_size,
        "context_length": c.context_length,
        "emb_dim": c.n_embd,
        "n_heads": c.n_head,
        "n_layers": c.n_layer,
        "drop_rate": c.dropout,
        "qkv_bias": c.qkv_bias,
    }


def write_rasbt(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """``model.pth`` as the book's ``torch.save(model.state_dict(), ...)`` writes it: its names,
    an ``out_head`` of its own and the causal-mask buffers, so the book's strict
    ``load_state_dict`` accepts it; ``config.json`` holds the book's cfg dict."""
    folder.mkdir(parents=True, exist_ok=True)
    state = stored_state_dict(model, OURS, head=True, qkv_zeros=False)
    n = model.config.context_length
    mask = torch.triu(torch.ones(n, n), diagonal=1)  # one tensor, saved once
    for i in range(model.config.n_layer):
        state[f"trf_blocks.{i}.att.mask"] = mask
    with atomic_path(folder / "model.pth") as tmp:
        torch.save(state, tmp)
    written = [folder / "model.pth"]
    text = json.dumps(book_config(model), indent=2) + "\n"
    written.append(atomic_write_text(folder / "config.json", text))
    for name, src in tokenizer.items():
        written.append(_copy(src, folder / name))
    return written


def nanogpt_model_args(model: GPT) -> dict:
    c = model.config
    return {
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "block_size": c.context_length,
        "bias": c.bias,
        "vocab_size": c.vocab_size,
        "dropout": c.dropout,
    }


class ActivationChangeWarning(UserWarning):
    """A tanh-GELU model was written for nanoGPT, whose GPT computes the exact GELU."""


def write_nanogpt(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """``ckpt.pt`` as nanoGPT's ``train.py`` saves it, minus the optimizer: what its
    ``sample.py`` (``init_from='resume'``) needs. nanoGPT always computes the exact GELU."""
    if model.config.activation == "gelu_tanh":
        warnings.warn(
            "nanoGPT's GPT computes the exact GELU, not this model's tanh GELU: its logits there "
            "differ slightly (about 1e-3 for GPT-2 124M); gpt2load reads the file back the way "
            "nanoGPT computes it",
            ActivationChangeWarning,
            stacklevel=3,
        )
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "model": stored_state_dict(
            model, NANOGPT, prefix="transformer.", head=True, zeros=model.config.bias
        ),
        "model_args": nanogpt_model_args(model),
        "iter_num": 0,
        "best_val_loss": float("inf"),
        "config": {},
    }
    # nanoGPT's lm_head lives outside its `transformer` module.
    checkpoint["model"]["lm_head.weight"] = checkpoint["model"].pop("transformer.lm_head.weight")
    with atomic_path(folder / "ckpt.pt") as tmp:
        torch.save(checkpoint, tmp)
    written = [folder / "ckpt.pt"]
    for name, src in tokenizer.items():
        written.append(_copy(src, folder / name))
    return written


WRITERS = {
    "hf": write_hf,
    "openai": write_openai,
    "nanogpt": write_nanogpt,
    "rasbt": write_rasbt,
    "native": write_native,
}
