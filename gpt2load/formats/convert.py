"""``convert``: load any checkpoint and write it as Hugging Face, OpenAI TF, nanoGPT, the
book's ``.pth`` or native files, each of which its producer's own code loads and computes
exactly; a model the target cannot compute is refused first (``export.unsupported``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..char_tokenizer import META_PKL, CharTokenizer
from ..config import EOT_TOKEN_ID
from ..errors import CheckpointError, Gpt2loadError, TokenizerError
from ..fileio import atomic_path, atomic_write_text
from ..model import GPT
from ..native import save_native
from ..tokenizer import HF_NAMES, TOKENIZER_DIR_ENV, cache_dir, get_tokenizer, tokenizer_in
from .checkpoint import load_checkpoint
from .detect import locate
from .export import stored_state_dict, unsupported
from .hints import ALIASES
from .layouts import HF, NANOGPT, OPENAI, OURS

OPENAI_PREFIX = "model.ckpt"
# transformers' name for each of our activations (ACT2FN).
HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# The keys of Hugging Face's config.json, OpenAI's hparams.json, nanoGPT's model_args and the
# book's cfg dict (GPT_CONFIG_124M), each our field under its ``hints.ALIASES`` name.
HF_KEYS = "vocab_size n_positions n_ctx n_embd n_layer n_head n_inner layer_norm_epsilon"
OPENAI_HPARAMS = "n_vocab n_ctx n_embd n_head n_layer"
NANOGPT_ARGS = "n_layer n_head n_embd block_size bias vocab_size dropout"
BOOK_CFG = "vocab_size context_length emb_dim n_heads n_layers drop_rate qkv_bias"


class DestinationError(Gpt2loadError, ValueError):
    """A DST that ``convert`` refuses before it reads or writes anything: empty, a dangling link,
    a file where a folder is written, or the checkpoint's own folder (which it would overwrite)."""


class MissingTokenizerWarning(UserWarning):
    """An OpenAI-layout folder was written without encoder.json and vocab.bpe."""


class ActivationChangeWarning(UserWarning):
    """A tanh-GELU model was written for nanoGPT, whose GPT computes the exact GELU."""


def _named(model: GPT, keys: str) -> dict:
    return {key: getattr(model.config, ALIASES[key]) for key in keys.split()}


def hf_config(model: GPT) -> dict:
    """A ``config.json`` that ``transformers.GPT2LMHeadModel`` reads as this exact model."""
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        **_named(model, HF_KEYS),
        "activation_function": HF_ACTIVATION[c.activation],
        "scale_attn_by_inverse_layer_idx": c.scale_attn_by_inverse_layer_idx,
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), c.dropout),
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": c.tie_head,
        "bos_token_id": EOT_TOKEN_ID,
        "eos_token_id": EOT_TOKEN_ID,
        "torch_dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }


def _json(path: Path, value: dict) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def _copy(tokenizer: dict[str, Path], folder: Path, names: dict | None = None) -> list[Path]:
    """The tokenizer files copied into ``folder``, renamed as ``names`` says."""
    written = [folder / (names or {}).get(name, name) for name in tokenizer]
    for src, dst in zip(tokenizer.values(), written, strict=True):
        if src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    return written


def write_hf(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    from safetensors.torch import save_file

    tensors = {f"transformer.{k}": v for k, v in stored_state_dict(model, HF).items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = _json(folder / "config.json", hf_config(model))
    return [folder / "model.safetensors", config, *_copy(tokenizer, folder, HF_NAMES)]


def write_openai(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """The release layout as its TF1 ``Saver`` wrote it (index, data, ``.meta`` graph,
    ``checkpoint``, hparams.json), so OpenAI's code loads it: TensorFlow's job, imported here."""
    # oneDNN only changes how TensorFlow computes, and we only save: off, and quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError:
        raise ValueError(
            "writing a TensorFlow checkpoint needs TensorFlow: pip install tensorflow-cpu "
            "(reading one does not)"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.float().numpy() for name, t in stored_state_dict(model, OPENAI).items()}
    v1 = tf.compat.v1
    written = []
    # TensorFlow writes into a hidden scratch folder; finished files are renamed into place.
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=folder) as scratch:
        with tf.Graph().as_default() as graph:
            # Each variable is initialised by feeding its array: the graph holds no weights.
            variables = [
                v1.get_variable(name, a.shape, tf.as_dtype(a.dtype), v1.zeros_initializer())
                for name, a in arrays.items()
            ]
            saver = v1.train.Saver(variables, write_version=v1.train.SaverDef.V2)
            with v1.Session(graph=graph) as session:
                for variable, array in zip(variables, arrays.values(), strict=True):
                    session.run(variable.initializer, {variable.initializer.inputs[1]: array})
                prefix = Path(scratch) / OPENAI_PREFIX
                saver.save(session, str(prefix), write_meta_graph=True, write_state=False)
        for produced in sorted(Path(scratch).glob(OPENAI_PREFIX + ".*")):
            os.replace(produced, folder / produced.name)
            written.append(folder / produced.name)
    state = (
        f'model_checkpoint_path: "{OPENAI_PREFIX}"\nall_model_checkpoint_paths: "{OPENAI_PREFIX}"\n'
    )
    written.append(atomic_write_text(folder / "checkpoint", state))
    written.append(_json(folder / "hparams.json", _named(model, OPENAI_HPARAMS)))
    return written + _copy(tokenizer, folder)


def write_native(model: GPT, dst: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """``model.safetensors`` (or the named file), the tokenizer beside it under OpenAI's names."""
    file = save_native(model, dst)
    return [file, *_copy(tokenizer, file.parent)]


def write_rasbt(model: GPT, folder: Path, tokenizer: dict[str, Path]) -> list[Path]:
    """``model.pth`` as the book's ``torch.save(model.state_dict())`` writes it (its names, its
    own ``out_head``, the masks: its strict load wants them), its cfg dict as ``config.json``."""
    state = stored_state_dict(model, OURS, head=True, qkv_zeros=False)
    n = model.config.context_length
    mask = torch.triu(torch.ones(n, n), diagonal=1)  # one tensor, saved once
    state |= {f"trf_blocks.{i}.att.mask": mask for i in range(model.config.n_layer)}
    with atomic_path(folder / "model.pth") as tmp:
        torch.save(state, tmp)
    config = _json(folder / "config.json", _named(model, BOOK_CFG))
    return [folder / "model.pth", config, *_copy(tokenizer, folder)]


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
    stored = stored_state_dict(model, NANOGPT, head=True, zeros=model.config.bias)
    # nanoGPT's lm_head lives outside its `transformer` module.
    state = {("" if k == "lm_head.weight" else "transformer.") + k: v for k, v in stored.items()}
    checkpoint = {"model": state, "model_args": _named(model, NANOGPT_ARGS), "iter_num": 0}
    checkpoint |= {"best_val_loss": float("inf"), "config": {}}
    with atomic_path(folder / "ckpt.pt") as tmp:
        torch.save(checkpoint, tmp)
    return [folder / "ckpt.pt", *_copy(tokenizer, folder)]


WRITERS = {
    "hf": write_hf,
    "openai": write_openai,
    "nanogpt": write_nanogpt,
    "rasbt": write_rasbt,
    "native": write_native,
}


def _checked(folder: Path, files: dict[str, Path]) -> dict[str, Path]:
    """``files`` (found in ``folder``), refused in one line naming the file unless
    ``get_tokenizer(folder)`` accepts them: convert copies no tokenizer that generate refuses."""
    if not files:
        return files
    try:
        tokenizer = get_tokenizer(folder, progress=False)  # the files are there: no download
    except (OSError, ValueError) as exc:
        instead = "" if META_PKL in files else " (or give --tokenizer-dir a folder of GPT-2's)"
        raise TokenizerError(f"{str(exc).rstrip('.')}; nothing was written{instead}") from None
    if isinstance(tokenizer, CharTokenizer) != (META_PKL in files):  # a meta.pkl wins there
        raise TokenizerError(
            f"{folder} holds a {META_PKL} beside GPT-2's tokenizer files, and gpt2load reads the "
            f"{META_PKL}: give --tokenizer-dir a folder holding GPT-2's files alone"
        )
    return files


def _tokenizer_for_openai(source_folder: Path) -> dict[str, Path]:
    """The release layout includes the tokenizer: from ``$GPT2LOAD_TOKENIZER_DIR`` or the
    download cache (no download here; checked), else the weights alone, with a warning."""
    env = os.environ.get(TOKENIZER_DIR_ENV, "").strip()
    folders = [*([Path(env).expanduser()] if env else []), cache_dir()]
    for folder in folders:
        if tokenizer := tokenizer_in(folder):
            return _checked(folder, tokenizer)
    looked = f"{source_folder}" + (f", ${TOKENIZER_DIR_ENV} ({env})" if env else "")
    warnings.warn(
        f"no tokenizer files (encoder.json + vocab.bpe, or vocab.json + merges.txt) in "
        f"{looked} or {cache_dir()}: the OpenAI folder is written WITHOUT them, so it "
        f"is not the complete release layout and tokenizing needs them from elsewhere; "
        f"pass --tokenizer-dir DIR or set {TOKENIZER_DIR_ENV} (`gpt2load download gpt2 "
        f"--source openai` fetches them)",
        MissingTokenizerWarning,
        stacklevel=3,
    )
    return {}


def _destination(dst: str | os.PathLike[str], to: str) -> tuple[Path, Path]:
    """``dst`` as a path and the folder written into, refused unless it can be: an empty name
    (which would be the current folder), a dangling link (mkdir cannot pass it), a file."""
    if not str(dst).strip():
        raise DestinationError(
            "DST is empty: give the folder to write (for --to native also a .safetensors file)"
        )
    path = Path(dst).expanduser()
    # As save_native decides: a .safetensors name is the file, anything else its folder.
    folder = path.parent if to == "native" and path.suffix == ".safetensors" else path
    if folder.is_file():
        also = " (or name a .safetensors file)" if to == "native" else ""
        raise DestinationError(f"{folder} is a file; converting to {to} writes a folder{also}")
    if folder.is_symlink() and not folder.exists():
        raise DestinationError(
            f"{folder} is a symbolic link to {os.readlink(folder)}, which does not exist: "
            f"remove the link (or create the folder it names) and run again"
        )
    return path, folder


def _refuse_own_folder(src: str | os.PathLike[str], folder: Path, source_folder: Path) -> None:
    """Refuse a DST folder that is SRC's (links resolved, a SRC file counting by its folder) or
    holds any file SRC's folder links to: writing there would replace the weights being read."""
    target = folder.resolve()
    theirs = {source_folder.resolve()}
    theirs |= {p.resolve().parent for p in source_folder.iterdir() if p.is_file()}
    if target in theirs:
        raise DestinationError(
            f"{folder} is where {src} lies ({target}): converting into it would overwrite the "
            f"checkpoint being read; give DST a folder of its own"
        )


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str,
    *,
    dtype: torch.dtype | str | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    n_head: int | None = None,
) -> list[Path]:
    """Write the checkpoint at ``src`` as ``to`` (a key of ``WRITERS``) into the folder ``dst`` (for
    ``native`` also a ``.safetensors`` file); the files. Tokenizer files come from ``tokenizer_dir``
    or beside ``src``; ``openai`` (always float32) also looks in ``$GPT2LOAD_TOKENIZER_DIR`` and
    the download cache, and warns (``MissingTokenizerWarning``) without them. Refused before
    anything is written: a DST that is SRC's own folder (``DestinationError``) and tokenizer
    files ``get_tokenizer`` would refuse (``TokenizerError``)."""
    if to not in WRITERS:
        raise ValueError(f"unknown target format {to!r}; choose one of: {', '.join(WRITERS)}")
    dst, folder = _destination(dst, to)
    source_folder = locate(Path(src).expanduser()).folder
    _refuse_own_folder(src, folder, source_folder)
    # The tokenizer is settled and checked before anything loads or is written. A character
    # model's is its meta.pkl alone (as finetune saves it): no GPT-2 files are looked for.
    meta = source_folder / META_PKL
    if tokenizer_dir is not None:
        tokenizer = tokenizer_in(Path(tokenizer_dir).expanduser())
        if not tokenizer:
            raise FileNotFoundError(
                f"{tokenizer_dir} lacks the tokenizer files (encoder.json and vocab.bpe, "
                f"or vocab.json and merges.txt)"
            )
        tokenizer = _checked(Path(tokenizer_dir).expanduser(), tokenizer)
    elif meta.is_file():
        tokenizer = {}
    else:
        tokenizer = _checked(source_folder, tokenizer_in(source_folder))
        if not tokenizer and to == "openai":
            tokenizer = _tokenizer_for_openai(source_folder)
    if meta.is_file():  # nanoGPT's character vocabulary travels too
        tokenizer |= _checked(source_folder, {META_PKL: meta})
    model = load_checkpoint(src, dtype=dtype, n_head=n_head)
    reasons = unsupported(model.config, to)
    if reasons:
        raise CheckpointError(f"{src} cannot be written as {to}: " + "; ".join(reasons))
    return WRITERS[to](model, dst, tokenizer)
