"""Small random-weight GPT-2 checkpoints in every layout found in the wild.

Every writer starts from one state dict in the Hugging Face ``GPT2Model`` layout
(``random_hf_state_dict``) and converts it by hand, here, without
``gpt2load.formats``: the tests then check the loader against an independent
statement of each layout, and files written from the same dict hold the same
model, so one reference (``reference_logits``, from ``transformers``) serves all.

TensorFlow and transformers are imported only by the functions that need them,
so the benchmark can build safetensors/PyTorch files without either.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from gpt2load.config import GPTConfig

Tensors = dict[str, torch.Tensor]

# (HF block suffix, our names, how): "conv1d" weights are [in, out] and get transposed;
# "qkv" tensors hold query, key and value side by side along their last axis.
_BLOCK_MAP = (
    ("ln_1.weight", ("norm1.scale",), "same"),
    ("ln_1.bias", ("norm1.shift",), "same"),
    ("attn.c_attn.weight", ("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"), "qkv"),
    ("attn.c_attn.bias", ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"), "qkv"),
    ("attn.c_proj.weight", ("att.out_proj.weight",), "conv1d"),
    ("attn.c_proj.bias", ("att.out_proj.bias",), "same"),
    ("ln_2.weight", ("norm2.scale",), "same"),
    ("ln_2.bias", ("norm2.shift",), "same"),
    ("mlp.c_fc.weight", ("ff.layers.0.weight",), "conv1d"),
    ("mlp.c_fc.bias", ("ff.layers.0.bias",), "same"),
    ("mlp.c_proj.weight", ("ff.layers.2.weight",), "conv1d"),
    ("mlp.c_proj.bias", ("ff.layers.2.bias",), "same"),
)
_TF_BLOCK_NAMES = {
    "ln_1.weight": "ln_1/g",
    "ln_1.bias": "ln_1/b",
    "attn.c_attn.weight": "attn/c_attn/w",
    "attn.c_attn.bias": "attn/c_attn/b",
    "attn.c_proj.weight": "attn/c_proj/w",
    "attn.c_proj.bias": "attn/c_proj/b",
    "ln_2.weight": "ln_2/g",
    "ln_2.bias": "ln_2/b",
    "mlp.c_fc.weight": "mlp/c_fc/w",
    "mlp.c_fc.bias": "mlp/c_fc/b",
    "mlp.c_proj.weight": "mlp/c_proj/w",
    "mlp.c_proj.bias": "mlp/c_proj/b",
}


def random_hf_state_dict(config: GPTConfig, seed: int = 0) -> Tensors:
    """Random GPT-2 weights in the Hugging Face layout: no prefix, Conv1D ``[in, out]``.

    Every tensor is random (LayerNorm gains around 1, biases non-zero), so a bias
    or gain mapped to the wrong place changes the logits. The config's variant settings
    shape it: no biases where it has none, its MLP width, an ``lm_head.weight`` when untied.
    """
    g = torch.Generator().manual_seed(seed)
    d, v, t, f = config.n_embd, config.vocab_size, config.context_length, config.ff_width

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def gain(n: int) -> torch.Tensor:
        return 1.0 + (torch.rand(n, generator=g) - 0.5) * 0.4

    state: Tensors = {"wte.weight": normal(v, d), "wpe.weight": normal(t, d, std=0.01)}
    for i in range(config.n_layer):
        h = f"h.{i}."
        state[h + "ln_1.weight"] = gain(d)
        state[h + "ln_1.bias"] = normal(d)
        state[h + "attn.c_attn.weight"] = normal(d, 3 * d)
        state[h + "attn.c_attn.bias"] = normal(3 * d)
        state[h + "attn.c_proj.weight"] = normal(d, d)
        state[h + "attn.c_proj.bias"] = normal(d)
        state[h + "ln_2.weight"] = gain(d)
        state[h + "ln_2.bias"] = normal(d)
        state[h + "mlp.c_fc.weight"] = normal(d, f)
        state[h + "mlp.c_fc.bias"] = normal(f)
        state[h + "mlp.c_proj.weight"] = normal(f, d)
        state[h + "mlp.c_proj.bias"] = normal(d)
    state["ln_f.weight"] = gain(d)
    state["ln_f.bias"] = normal(d)
    if not config.tie_head:
        state["lm_head.weight"] = normal(v, d)
    for name in list(state):
        qkv = name.endswith("c_attn.bias")
        if name.endswith(".bias") and not (config.qkv_bias if qkv else config.bias):
            del state[name]
    return state


def hf_config_dict(config: GPTConfig) -> dict:
    """A ``config.json`` as ``save_pretrained`` writes it for this size (dropouts off)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": {"gelu_tanh": "gelu_new"}.get(config.activation, config.activation),
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "vocab_size": config.vocab_size,
        "layer_norm_epsilon": config.layer_norm_eps,
        "n_inner": config.n_inner,
        "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": config.tie_head,
        "bos_token_id": min(50256, config.vocab_size - 1),
        "eos_token_id": min(50256, config.vocab_size - 1),
    }


def reference_model(hf_state: Tensors, config: GPTConfig):
    """``transformers.GPT2LMHeadModel`` holding ``hf_state``: the reference for logits.

    transformers' GPT-2 always has biases: a bias-free config gets zeros, which compute
    the same."""
    from transformers import GPT2Config, GPT2LMHeadModel

    raw = hf_config_dict(config)
    raw.pop("architectures")
    raw.pop("model_type")
    model = GPT2LMHeadModel(GPT2Config(**raw)).eval()
    state = {k if k == "lm_head.weight" else f"transformer.{k}": v for k, v in hf_state.items()}
    for name, tensor in model.state_dict().items():
        buffer = name.endswith((".attn.bias", ".attn.masked_bias"))
        if name.endswith(".bias") and not buffer and name not in state:
            state[name] = torch.zeros_like(tensor)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert tied == config.tie_head
    return model


def sample_ids(config: GPTConfig, batch: int = 2, length: int | None = None, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    length = min(config.context_length, 12) if length is None else length
    return torch.randint(0, config.vocab_size, (batch, length), generator=g)


@torch.no_grad()
def reference_logits(hf_state: Tensors, config: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    return reference_model(hf_state, config)(idx).logits


# --- Hugging Face ---------------------------------------------------------------------------


def hf_file_state_dict(
    hf_state: Tensors,
    config: GPTConfig,
    *,
    prefix: str = "",
    attn_bias: bool = False,
    masked_bias: bool = False,
    lm_head: bool = False,
) -> Tensors:
    """The tensors of a hub file: ``prefix`` (``""`` as on the hub, ``"transformer."`` as
    ``save_pretrained`` writes), optional causal-mask buffers and an optional tied head."""
    out = {prefix + k: v for k, v in hf_state.items()}
    t = config.context_length
    for i in range(config.n_layer):
        if attn_bias:
            out[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(t, t)).view(1, 1, t, t)
        if masked_bias:
            out[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    if lm_head:
        out["lm_head.weight"] = hf_state["wte.weight"]
    return out


def _write_config_json(folder: Path, config: GPTConfig) -> None:
    (folder / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))


def write_hf_safetensors(
    folder: str | os.PathLike[str],
    hf_state: Tensors,
    config: GPTConfig,
    *,
    prefix: str = "",
    attn_bias: bool = False,
    masked_bias: bool = False,
    lm_head: bool = False,
    config_json: bool = True,
    filename: str = "model.safetensors",
) -> Path:
    """A Hugging Face safetensors file (+ ``config.json``); returns the weights file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_file_state_dict(
        hf_state, config, prefix=prefix, attn_bias=attn_bias, masked_bias=masked_bias, lm_head=False
    )
    if lm_head:  # safetensors refuses shared memory, so the head is stored as a copy
        tensors["lm_head.weight"] = hf_state["wte.weight"].clone()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    path = folder / filename
    save_file(tensors, str(path), metadata={"format": "pt"})
    if config_json:
        _write_config_json(folder, config)
    return path


def write_hf_bin(
    folder: str | os.PathLike[str],
    hf_state: Tensors,
    config: GPTConfig,
    *,
    prefix: str = "",
    attn_bias: bool = False,
    masked_bias: bool = False,
    lm_head: bool = False,
    config_json: bool = True,
    filename: str = "pytorch_model.bin",
) -> Path:
    """A Hugging Face ``pytorch_model.bin`` (+ ``config.json``); a stored head shares the
    embedding's storage, as ``torch.save`` of a tied model does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    tensors = hf_file_state_dict(
        hf_state,
        config,
        prefix=prefix,
        attn_bias=attn_bias,
        masked_bias=masked_bias,
        lm_head=lm_head,
    )
    torch.save(tensors, path)
    if config_json:
        _write_config_json(folder, config)
    return path


def write_hf_save_pretrained(
    folder: str | os.PathLike[str], hf_state: Tensors, config: GPTConfig
) -> Path:
    """What ``transformers`` itself writes (``save_pretrained``: safetensors with the
    ``transformer.`` prefix, no head); returns the folder."""
    folder = Path(folder)
    reference_model(hf_state, config).save_pretrained(folder)
    return folder


# --- from-scratch (rasbt) and native ---------------------------------------------------------


def ours_state_dict(hf_state: Tensors, config: GPTConfig) -> Tensors:
    """The same weights under our (the book's) names, ``nn.Linear`` ``[out, in]``, no head."""
    out: Tensors = {
        "tok_emb.weight": hf_state["wte.weight"],
        "pos_emb.weight": hf_state["wpe.weight"],
        "final_norm.scale": hf_state["ln_f.weight"],
        "final_norm.shift": hf_state["ln_f.bias"],
    }
    for i in range(config.n_layer):
        for hf_suffix, ours, how in _BLOCK_MAP:
            tensor = hf_state[f"h.{i}.{hf_suffix}"]
            if how == "qkv":
                parts = tensor.chunk(3, dim=-1)
                parts = [p.t() for p in parts] if tensor.dim() == 2 else list(parts)
            elif how == "conv1d":
                parts = [tensor.t()]
            else:
                parts = [tensor]
            for name, part in zip(ours, parts, strict=True):
                out[f"trf_blocks.{i}.{name}"] = part.contiguous()
    return out


def rasbt_state_dict(
    hf_state: Tensors, config: GPTConfig, *, mask: bool = True, out_head: bool = True
) -> Tensors:
    """A book-style state dict: our names plus ``att.mask`` buffers and a separate ``out_head``."""
    out = ours_state_dict(hf_state, config)
    t = config.context_length
    if out_head:
        out["out_head.weight"] = out["tok_emb.weight"].clone()
    if mask:
        for i in range(config.n_layer):
            out[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(t, t), diagonal=1)
    return out


def book_config_dict(config: GPTConfig) -> dict:
    """The book's ``GPT_CONFIG_124M`` spelling of a config."""
    return {
        "vocab_size": config.vocab_size,
        "context_length": config.context_length,
        "emb_dim": config.n_embd,
        "n_heads": config.n_head,
        "n_layers": config.n_layer,
        "drop_rate": 0.0,
        "qkv_bias": True,
    }


def write_rasbt(
    path: str | os.PathLike[str],
    hf_state: Tensors,
    config: GPTConfig,
    *,
    mask: bool = True,
    out_head: bool = True,
    config_json: bool = True,
) -> Path:
    """A rasbt ``.pth`` or ``.safetensors`` file (chosen by suffix).

    These files store no head count; ``config_json`` writes the book-style config beside
    them, needed for any width other than GPT-2's published ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = rasbt_state_dict(hf_state, config, mask=mask, out_head=out_head)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)
    if config_json:
        (path.parent / "config.json").write_text(json.dumps(book_config_dict(config)))
    return path


def write_native(path: str | os.PathLike[str], hf_state: Tensors, config: GPTConfig) -> Path:
    """Our native file (``model.safetensors`` with format and config metadata), by hand."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "gpt2load", "config": json.dumps(config.to_dict())}
    save_file(ours_state_dict(hf_state, config), str(path), metadata=metadata)
    return path


# --- nanoGPT ---------------------------------------------------------------------------------


def nanogpt_state_dict(
    hf_state: Tensors,
    *,
    compiled: bool = False,
    attn_bias: bool = False,
    config: GPTConfig | None = None,
) -> Tensors:
    """nanoGPT's ``model.state_dict()``: HF names with ``transformer.``, ``nn.Linear``
    weights ``[out, in]``, ``lm_head`` sharing the embedding; ``_orig_mod.`` if compiled."""
    out: Tensors = {}
    for name, tensor in hf_state.items():
        is_linear = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        out[f"transformer.{name}"] = tensor.t().contiguous() if is_linear else tensor
    out["lm_head.weight"] = out["transformer.wte.weight"]
    if attn_bias:
        assert config is not None, "the mask buffers need the config"
        t = config.context_length
        for i in range(config.n_layer):
            out[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(t, t)).view(1, 1, t, t)
    if compiled:
        out = {f"_orig_mod.{k}": v for k, v in out.items()}
    return out


def write_nanogpt_ckpt(
    path: str | os.PathLike[str],
    hf_state: Tensors,
    config: GPTConfig,
    *,
    compiled: bool = False,
    attn_bias: bool = False,
) -> Path:
    """A nanoGPT ``ckpt.pt``: model, model_args, optimizer state and training counters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = nanogpt_state_dict(hf_state, compiled=compiled, attn_bias=attn_bias, config=config)
    model_args = {
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "block_size": config.context_length,
        "bias": True,
        "vocab_size": config.vocab_size,
        "dropout": 0.0,
    }
    first = next(iter(model.values()))
    checkpoint = {
        "model": model,
        "optimizer": {
            "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros_like(first)}},
            "param_groups": [{"lr": 6e-4, "weight_decay": 0.1, "params": [0]}],
        },
        "model_args": model_args,
        "iter_num": 5,
        "best_val_loss": torch.tensor(4.25),
        "config": {**model_args, "learning_rate": 6e-4, "dataset": "shakespeare"},
    }
    torch.save(checkpoint, path)
    return path


# --- OpenAI TensorFlow -----------------------------------------------------------------------


def openai_arrays(hf_state: Tensors, config: GPTConfig) -> dict[str, np.ndarray]:
    """The OpenAI variables: HF's Conv1D layout with a leading axis of 1 on every ``w``."""
    out = {
        "model/wte": hf_state["wte.weight"].numpy(),
        "model/wpe": hf_state["wpe.weight"].numpy(),
        "model/ln_f/g": hf_state["ln_f.weight"].numpy(),
        "model/ln_f/b": hf_state["ln_f.bias"].numpy(),
    }
    for i in range(config.n_layer):
        for hf_suffix, tf_suffix in _TF_BLOCK_NAMES.items():
            array = hf_state[f"h.{i}.{hf_suffix}"].numpy()
            out[f"model/h{i}/{tf_suffix}"] = array[None] if tf_suffix.endswith("/w") else array
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def openai_hparams(config: GPTConfig) -> dict:
    return {
        "n_vocab": config.vocab_size,
        "n_ctx": config.context_length,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_layer": config.n_layer,
    }


def write_tf_bundle(prefix: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Any arrays as a TensorFlow checkpoint, written by TensorFlow's own ``SaveV2`` op."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = list(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(arrays[n]) for n in names],
    )
    return prefix


def write_openai_tf(
    folder: str | os.PathLike[str],
    hf_state: Tensors,
    config: GPTConfig,
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """An OpenAI release folder: ``checkpoint``, ``hparams.json``, ``model.ckpt.*`` (written by
    TensorFlow), plus ``encoder.json``/``vocab.bpe`` copied from ``tokenizer_dir``."""
    folder = Path(folder)
    write_tf_bundle(folder / "model.ckpt", openai_arrays(hf_state, config))
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    (folder / "hparams.json").write_text(json.dumps(openai_hparams(config), indent=2) + "\n")
    if tokenizer_dir is not None:
        for name in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(Path(tokenizer_dir) / name, folder / name)
    return folder


# --- all at once -----------------------------------------------------------------------------

#: layout name -> the format ``gpt2load.formats.detect_format`` must report for it
EXPECTED_FORMATS = {
    "openai": "openai-tf",
    "hf_hub": "hf-safetensors",
    "hf_prefixed": "hf-safetensors",
    "hf_head": "hf-safetensors",
    "hf_bin": "hf-torch",
    "hf_bin_masked": "hf-torch",
    "rasbt_pth": "rasbt-torch",
    "rasbt_safetensors": "rasbt-safetensors",
    "nanogpt": "nanogpt-torch",
    "nanogpt_compiled": "nanogpt-torch",
    "native": "native",
}


def write_every_layout(
    root: str | os.PathLike[str],
    config: GPTConfig,
    hf_state: Tensors,
    *,
    only: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Write ``hf_state`` in every layout of ``EXPECTED_FORMATS`` (or those in ``only``),
    each in its own folder under ``root``; returns layout name -> path to load."""
    root = Path(root)
    writers = {
        "openai": lambda d: write_openai_tf(d, hf_state, config),
        "hf_hub": lambda d: write_hf_safetensors(d, hf_state, config, attn_bias=True),
        "hf_prefixed": lambda d: write_hf_safetensors(d, hf_state, config, prefix="transformer."),
        "hf_head": lambda d: write_hf_safetensors(
            d, hf_state, config, prefix="transformer.", lm_head=True
        ),
        "hf_bin": lambda d: write_hf_bin(d, hf_state, config, prefix="transformer.", lm_head=True),
        "hf_bin_masked": lambda d: write_hf_bin(
            d, hf_state, config, attn_bias=True, masked_bias=True
        ),
        "rasbt_pth": lambda d: write_rasbt(d / "gpt2-small-124M.pth", hf_state, config),
        "rasbt_safetensors": lambda d: write_rasbt(
            d / "gpt2-small-124M.safetensors", hf_state, config
        ),
        "nanogpt": lambda d: write_nanogpt_ckpt(d / "ckpt.pt", hf_state, config, attn_bias=True),
        "nanogpt_compiled": lambda d: write_nanogpt_ckpt(
            d / "ckpt.pt", hf_state, config, compiled=True
        ),
        "native": lambda d: write_native(d, hf_state, config),
    }
    selected = list(writers) if only is None else list(only)
    paths = {}
    for name in selected:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        writers[name](folder)
        paths[name] = folder
    return paths
