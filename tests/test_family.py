"""The GPT-2 family (issue 12): every variant people make loads with its producer's maths, computes
what the producer's own code computes (1e-5, fp32), and is written back for that code to load.

References: transformers for the Hugging Face settings, the book's own ``llms_from_scratch``
package for its ``GPTModel``, and ``tests.nanogpt_reference`` for nanoGPT (no package).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import gpt2load
from gpt2load.cli import main
from gpt2load.config import GPTConfig
from gpt2load.formats import CheckpointError, convert, detect_format, load_checkpoint
from tests.checkpoint_factory import (
    random_hf_state_dict,
    reference_logits,
    sample_ids,
    write_hf_safetensors,
)
from tests.conftest import random_model
from tests.nanogpt_reference import NanoConfig, NanoGPT, load_ckpt, save_ckpt

TOLERANCE = 1e-5
BASE = GPTConfig(n_layer=3, n_head=4, n_embd=32, context_length=24, vocab_size=97)

# Every Hugging Face setting that changes the maths, one at a time and all at once.
HF_VARIANTS = {
    "untied": BASE.replace(tie_head=False),
    "n_inner": BASE.replace(n_inner=48),
    "exact_gelu": BASE.replace(activation="gelu"),
    "relu": BASE.replace(activation="relu"),
    "eps": BASE.replace(layer_norm_eps=1e-3),
    "layer_scaling": BASE.replace(scale_attn_by_inverse_layer_idx=True),
    "all": BASE.replace(
        tie_head=False,
        n_inner=40,
        activation="gelu",
        layer_norm_eps=1e-6,
        scale_attn_by_inverse_layer_idx=True,
    ),
}


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# --- Hugging Face ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(HF_VARIANTS))
def test_hf_variant_loads_as_transformers_computes_it(tmp_path: Path, variant: str) -> None:
    config = HF_VARIANTS[variant]
    state = random_hf_state_dict(config, seed=3)
    write_hf_safetensors(tmp_path, state, config)
    idx = sample_ids(config)
    model = load_checkpoint(tmp_path)
    assert model.config == config
    assert (model.out_head.weight is model.tok_emb.weight) == config.tie_head
    with torch.no_grad():
        assert _diff(model(idx), reference_logits(state, config, idx)) <= TOLERANCE


def test_hf_old_config_n_ctx_is_ignored_as_transformers_ignores_it(tmp_path: Path) -> None:
    state = random_hf_state_dict(BASE, seed=1)
    write_hf_safetensors(tmp_path, state, BASE)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(raw | {"n_ctx": 2 * BASE.context_length}))
    assert load_checkpoint(tmp_path).config.context_length == BASE.context_length


@pytest.mark.parametrize("variant", ["all", "untied", "relu"])
def test_hf_export_of_a_variant_is_read_by_transformers(tmp_path: Path, variant: str) -> None:
    from transformers import GPT2LMHeadModel

    config = HF_VARIANTS[variant]
    model = random_model(config, seed=5)
    gpt2load.save_native(model, tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "hf", "hf")
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.tie_word_embeddings == config.tie_head
    idx = sample_ids(config)
    with torch.no_grad():
        assert _diff(model(idx), theirs(idx).logits) <= TOLERANCE
    back = load_checkpoint(tmp_path / "hf")
    assert back.config == config
    for name, tensor in model.state_dict().items():  # bit-identical round trip
        assert torch.equal(back.state_dict()[name], tensor), name


def test_bias_free_model_exports_to_hf_and_openai_with_zero_biases(tmp_path: Path) -> None:
    config = BASE.replace(bias=False, qkv_bias=False)
    model = random_model(config, seed=6)
    gpt2load.save_native(model, tmp_path / "src")
    idx = sample_ids(config)
    convert(tmp_path / "src", tmp_path / "hf", "hf")
    theirs = reference_model_from_folder(tmp_path / "hf")
    with torch.no_grad():
        expected = model(idx)
        assert _diff(expected, theirs(idx).logits) <= TOLERANCE
        # Read back, the zeros are biases (GPT-2's layout has them) computing the same.
        assert _diff(load_checkpoint(tmp_path / "hf")(idx), expected) == 0.0


def reference_model_from_folder(folder: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(folder).eval()


def test_openai_export_refuses_what_its_code_cannot_compute(tmp_path: Path) -> None:
    model = random_model(BASE.replace(tie_head=False, activation="gelu"), seed=1)
    gpt2load.save_native(model, tmp_path / "src")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--to", "openai"]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError) as caught:
        convert(tmp_path / "src", tmp_path / "out", "openai")
    message = str(caught.value)
    assert "tie_head=False: openai's model has no output head of its own" in message
    assert "activation='gelu': openai's model computes only GELU" in message


# --- the book (llms-from-scratch) -----------------------------------------------------------

book = pytest.importorskip("llms_from_scratch.ch04", reason="pip install llms-from-scratch")


def _book_cfg(qkv_bias: bool, context: int = 16) -> dict:
    """The book's cfg dict, GPT_CONFIG_124M's keys at a tiny size (it trains at context 256)."""
    return {
        "vocab_size": 101,
        "context_length": context,
        "emb_dim": 32,
        "n_heads": 4,
        "n_layers": 2,
        "drop_rate": 0.0,
        "qkv_bias": qkv_bias,
    }


def _trained_book_model(cfg: dict, steps: int = 3):
    """The book's GPTModel after a few AdamW steps: its out_head has left tok_emb behind."""
    torch.manual_seed(0)
    model = book.GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"] + 1), generator=g)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), optimizer


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no_qkv_bias", "qkv_bias"])
def test_book_trained_model_loads_untied_and_computes_the_same(
    tmp_path: Path, qkv_bias: bool
) -> None:
    cfg = _book_cfg(qkv_bias)
    theirs, optimizer = _trained_book_model(cfg)
    torch.save(theirs.state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    # The training checkpoint form of chapter 5 loads too.
    both = {"model_state_dict": theirs.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
    torch.save(both, tmp_path / "model_and_optimizer.pth")
    idx = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"]))
    for name in ("model.pth", "model_and_optimizer.pth"):
        ours = load_checkpoint(tmp_path / name)
        assert ours.config.tie_head is False and ours.config.qkv_bias is qkv_bias
        assert ours.out_head.weight is not ours.tok_emb.weight
        with torch.no_grad():
            assert _diff(ours(idx), theirs(idx)) <= TOLERANCE, name


def test_book_greedy_decoding_equals_generate_text_simple(tmp_path: Path) -> None:
    cfg = _book_cfg(False)
    theirs, _ = _trained_book_model(cfg)
    torch.save(theirs.state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    prompt = torch.tensor([[3, 14, 15, 92]])
    # Past the context, so both crop to the last 16 tokens the same way.
    expected = book.generate_text_simple(theirs, prompt, 20, cfg["context_length"])
    ours = gpt2load.generate(load_checkpoint(tmp_path), prompt, 20, temperature=0)
    assert torch.equal(ours, expected)


def test_book_export_is_accepted_by_the_books_strict_load(tmp_path: Path) -> None:
    cfg = _book_cfg(False)
    theirs, _ = _trained_book_model(cfg)
    torch.save(theirs.state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    written = convert(tmp_path / "model.pth", tmp_path / "back", "rasbt")
    assert tmp_path / "back" / "model.pth" in written
    exported_cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert exported_cfg == cfg
    again = book.GPTModel(exported_cfg)
    again.load_state_dict(torch.load(tmp_path / "back" / "model.pth"), strict=True)
    for name, tensor in theirs.state_dict().items():  # bit-identical, masks included
        assert torch.equal(again.state_dict()[name], tensor), name


def test_published_gpt2_exports_to_the_book_and_loads_in_its_gptmodel(tmp_path: Path) -> None:
    """A tied GPT-2 (our default) becomes the book's untied head holding the same values."""
    config = BASE.replace(n_head=4)
    model = random_model(config, seed=8)
    gpt2load.save_native(model, tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "book", "rasbt")
    cfg = json.loads((tmp_path / "book" / "config.json").read_text())
    theirs = book.GPTModel(cfg)
    theirs.load_state_dict(torch.load(tmp_path / "book" / "model.pth"), strict=True)
    idx = sample_ids(config)
    with torch.no_grad():
        assert _diff(theirs.eval()(idx), model(idx)) <= TOLERANCE
    assert load_checkpoint(tmp_path / "book").config == config  # an equal head reads as tied


def test_book_export_refuses_a_model_the_book_cannot_compute(tmp_path: Path) -> None:
    gpt2load.save_native(random_model(BASE.replace(n_inner=40)), tmp_path / "src")
    with pytest.raises(CheckpointError, match="n_inner=40: rasbt's model has an MLP width"):
        convert(tmp_path / "src", tmp_path / "out", "rasbt")


# --- nanoGPT --------------------------------------------------------------------------------


def _nano(bias: bool, vocab: int = 65, seed: int = 0) -> NanoGPT:
    torch.manual_seed(seed)
    config = NanoConfig(block_size=24, vocab_size=vocab, n_layer=2, n_head=4, n_embd=32, bias=bias)
    return NanoGPT(config).eval()


@pytest.mark.parametrize(
    ("bias", "vocab", "compiled"),
    [(False, 65, False), (True, 50304, False), (False, 65, True)],
    ids=["char_bias_free", "bpe_padded_vocab", "compiled"],
)
def test_nanogpt_checkpoint_computes_nanogpts_logits(
    tmp_path: Path, bias: bool, vocab: int, compiled: bool
) -> None:
    theirs = _nano(bias, vocab)
    path = save_ckpt(theirs, tmp_path / "out" / "ckpt.pt", compiled=compiled)
    ours = load_checkpoint(path)
    assert detect_format(path) == "nanogpt-torch"
    c = ours.config
    assert (c.bias, c.qkv_bias, c.activation, c.vocab_size) == (bias, bias, "gelu", vocab)
    if not bias:  # no bias parameters at all, not zeros
        assert not any(n.endswith((".bias", ".shift")) for n, _ in ours.named_parameters())
    idx = torch.randint(0, vocab, (2, 24))
    with torch.no_grad():
        assert _diff(ours(idx), theirs(idx)) <= TOLERANCE


def test_nanogpt_char_model_greedy_decoding_equals_nanogpts(tmp_path: Path) -> None:
    theirs = _nano(False)
    path = save_ckpt(theirs, tmp_path / "ckpt.pt")
    prompt = torch.tensor([[18, 27, 26, 17, 39]])
    expected = theirs.generate(prompt, 30, top_k=1)  # beyond the block of 24: crops alike
    assert torch.equal(
        gpt2load.generate(load_checkpoint(path), prompt, 30, temperature=0), expected
    )


@pytest.mark.parametrize("bias", [False, True])
def test_nanogpt_export_loads_in_nanogpts_strict_sample_path(tmp_path: Path, bias: bool) -> None:
    theirs = _nano(bias)
    src = save_ckpt(theirs, tmp_path / "src" / "ckpt.pt")
    with open(tmp_path / "src" / "meta.pkl", "wb") as handle:
        chars = [chr(c) for c in range(32, 97)]
        itos = dict(enumerate(chars))
        stoi = {c: i for i, c in itos.items()}
        pickle.dump({"vocab_size": 65, "itos": itos, "stoi": stoi}, handle)
    written = convert(src, tmp_path / "back", "nanogpt")
    assert tmp_path / "back" / "meta.pkl" in written  # the vocabulary travels along
    again = load_ckpt(tmp_path / "back" / "ckpt.pt")
    idx = torch.randint(0, 65, (2, 24))
    with torch.no_grad():
        assert _diff(again(idx), theirs(idx)) == 0.0
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    # The folder itself loads: its meta.pkl is a vocabulary, not a second checkpoint.
    assert load_checkpoint(tmp_path / "back").config == load_checkpoint(src).config


def test_gpt2_exported_to_nanogpt_warns_that_nanogpt_uses_exact_gelu(tmp_path: Path) -> None:
    model = random_model(BASE, seed=2)
    gpt2load.save_native(model, tmp_path / "src")
    with pytest.warns(UserWarning, match="computes the exact GELU"):
        convert(tmp_path / "src", tmp_path / "nano", "nanogpt")
    theirs = load_ckpt(tmp_path / "nano" / "ckpt.pt")
    back = load_checkpoint(tmp_path / "nano")
    assert back.config == BASE.replace(activation="gelu")
    idx = sample_ids(BASE)
    with torch.no_grad():
        assert _diff(back(idx), theirs(idx)) <= TOLERANCE
    for name, tensor in model.state_dict().items():  # the weights themselves: bit-identical
        assert torch.equal(back.state_dict()[name], tensor), name


def test_nanogpt_export_refuses_an_untied_model(tmp_path: Path) -> None:
    gpt2load.save_native(random_model(BASE.replace(tie_head=False)), tmp_path / "src")
    with pytest.raises(CheckpointError, match="tie_head=False: nanogpt's model has no output"):
        convert(tmp_path / "src", tmp_path / "out", "nanogpt")


# --- what is still refused, in one line -----------------------------------------------------


def test_bias_free_checkpoint_whose_config_claims_biases(tmp_path: Path) -> None:
    theirs = _nano(False)
    path = tmp_path / "ckpt.pt"
    save_ckpt(theirs, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_args"]["bias"] = True
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "model_args says bias=True" in message
    assert "holds no such tensors" in message and "\n" not in message


def test_a_file_claiming_a_million_layers_fails_at_once(tmp_path: Path) -> None:
    theirs = _nano(False)
    path = save_ckpt(theirs, tmp_path / "ckpt.pt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_args"]["n_layer"] = 10**6
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="says n_layer=1000000, but it stores 2 blocks"):
        load_checkpoint(path)
    state = checkpoint["model"]
    state["transformer.h.10000000.ln_1.weight"] = torch.ones(32)
    checkpoint["model_args"]["n_layer"] = 2
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="name blocks up to 10000000 but 3 blocks"):
        load_checkpoint(path)
