"""``convert``: exported checkpoints load in transformers and TensorFlow, and round trips are exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2load.cli import main as cli_main
from gpt2load.config import GPTConfig
from gpt2load.formats import convert, detect_format, load_checkpoint
from gpt2load.formats.tf_bundle import TFBundleSource
from tests.checkpoint_factory import (
    random_hf_state_dict,
    reference_logits,
    sample_ids,
    write_every_layout,
)
from tests.conftest import TINY_CONFIGS, TOKENIZER_DIR, random_model

pytest.importorskip("tensorflow", reason="writing OpenAI checkpoints needs TensorFlow")

CONFIG = GPTConfig(n_layer=3, n_head=5, n_embd=35, context_length=20, vocab_size=300)


@pytest.fixture(scope="module")
def openai_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    state = random_hf_state_dict(CONFIG, seed=11)
    folder = write_every_layout(root, CONFIG, state, only=["openai"])["openai"]
    (folder / "encoder.json").write_text('{"!": 0}')  # stand-ins: convert copies, never parses
    (folder / "vocab.bpe").write_text("#version: 0.2\n")
    return folder


def _tf_tensors(folder: Path) -> dict[str, bytes]:
    source = TFBundleSource(folder / "model.ckpt")
    return {
        n: source.tensor(n).reshape(-1).view(torch.uint8).numpy().tobytes()
        for n in source.entries()
    }


def test_round_trip_openai_native_hf_openai_is_bit_identical(
    openai_folder: Path, tmp_path: Path
) -> None:
    convert(openai_folder, tmp_path / "native", "native")
    assert detect_format(tmp_path / "native") == "native"
    convert(tmp_path / "native", tmp_path / "hf", "hf")
    assert detect_format(tmp_path / "hf") == "hf-safetensors"
    convert(tmp_path / "hf", tmp_path / "openai", "openai")
    assert detect_format(tmp_path / "openai") == "openai-tf"
    original, final = _tf_tensors(openai_folder), _tf_tensors(tmp_path / "openai")
    assert original.keys() == final.keys()
    assert all(original[n] == final[n] for n in original)
    native = load_checkpoint(tmp_path / "native").state_dict()
    again = load_checkpoint(tmp_path / "openai").state_dict()
    assert all(torch.equal(native[k], again[k]) for k in native)


def test_hf_export_loads_in_transformers_with_the_same_logits(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    model = random_model(TINY_CONFIGS["odd"], seed=5)
    from gpt2load.native import save_native

    save_native(model, tmp_path / "ours")
    written = convert(tmp_path / "ours", tmp_path / "hf", "hf")
    assert {p.name for p in written} == {"model.safetensors", "config.json"}
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = sample_ids(model.config)
    with torch.no_grad():
        assert (theirs(idx).logits - model(idx)).abs().max().item() <= 1e-5


def test_openai_export_reads_in_tensorflow_like_the_release(
    openai_folder: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    convert(openai_folder, tmp_path / "hf", "hf")
    out = tmp_path / "openai"
    convert(tmp_path / "hf", out, "openai")
    assert (out / "checkpoint").read_text() == (
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams == {"n_vocab": 300, "n_ctx": 20, "n_embd": 35, "n_head": 5, "n_layer": 3}
    assert list(hparams) == ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"]
    assert (out / "model.ckpt.meta").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "scratch files left behind"
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    shapes = reader.get_variable_to_shape_map()
    assert shapes["model/h0/attn/c_attn/w"] == [1, 35, 105]
    original = tf.train.load_checkpoint(str(openai_folder / "model.ckpt"))
    for name in shapes:
        assert np.array_equal(reader.get_tensor(name), original.get_tensor(name)), name
    # The tokenizer files come along, under OpenAI names (HF's vocab.json/merges.txt in between).
    assert (tmp_path / "hf" / "vocab.json").read_text() == '{"!": 0}'
    assert (out / "encoder.json").read_text() == '{"!": 0}'
    assert (out / "vocab.bpe").is_file()


def test_hf_files_from_the_hub_layout_export_to_openai_with_real_tokenizer(tmp_path: Path) -> None:
    if not (TOKENIZER_DIR / "encoder.json").is_file():
        pytest.skip(
            f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR} (../shared/data absent)"
        )
    config = TINY_CONFIGS["tiny"]
    state = random_hf_state_dict(config)
    src = write_every_layout(tmp_path, config, state, only=["hf_hub"])["hf_hub"]
    convert(src, tmp_path / "openai", "openai", tokenizer_dir=TOKENIZER_DIR)
    assert (tmp_path / "openai" / "encoder.json").stat().st_size == 1_042_301
    assert (tmp_path / "openai" / "vocab.bpe").stat().st_size == 456_318
    idx = sample_ids(config)
    with torch.no_grad():
        logits = load_checkpoint(tmp_path / "openai")(idx)
    assert (logits - reference_logits(state, config, idx)).abs().max().item() <= 1e-5


def test_native_export_with_a_dtype(openai_folder: Path, tmp_path: Path) -> None:
    written = convert(openai_folder, tmp_path / "m.safetensors", "native", dtype="bf16")
    assert written == [tmp_path / "m.safetensors"]
    model = load_checkpoint(tmp_path / "m.safetensors")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config == CONFIG


def test_convert_command(
    openai_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["convert", str(openai_folder), str(tmp_path / "hf"), "--to", "hf"]) == 0
    out = capsys.readouterr().out
    assert "wrote hf checkpoint" in out and "model.safetensors" in out
    assert detect_format(tmp_path / "hf") == "hf-safetensors"


def test_convert_refuses_bad_requests(openai_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown target format 'onnx'"):
        convert(openai_folder, tmp_path / "x", "onnx")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        convert(openai_folder, blocker, "hf")
    with pytest.raises(FileNotFoundError, match="lacks the tokenizer files"):
        convert(openai_folder, tmp_path / "y", "openai", tokenizer_dir=tmp_path)
    no_bias = random_model(TINY_CONFIGS["tiny"].replace(qkv_bias=False))
    from gpt2load.native import save_native

    save_native(no_bias, tmp_path / "nobias")
    with pytest.raises(ValueError, match="QKV bias"):
        convert(tmp_path / "nobias", tmp_path / "z", "hf")
