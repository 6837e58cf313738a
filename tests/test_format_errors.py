"""Every way a checkpoint can be wrong gives an error that names the problem, file and tensor."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gpt2load.cli import main as cli_main
from gpt2load.formats import CheckpointError, detect_format, inspect_checkpoint, load_checkpoint
from tests.checkpoint_factory import (
    hf_file_state_dict,
    random_hf_state_dict,
    write_every_layout,
    write_hf_bin,
    write_hf_safetensors,
)
from tests.conftest import TINY_CONFIGS

CONFIG = TINY_CONFIGS["tiny"]


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_hf_state_dict(CONFIG)


def _save(folder: Path, tensors: dict[str, torch.Tensor], config_json: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    if config_json:
        (folder / "config.json").write_text(
            json.dumps({"model_type": "gpt2", "n_head": CONFIG.n_head})
        )
    return path


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


def test_missing_tensor_is_named_with_its_file(tmp_path: Path, state) -> None:
    tensors = dict(state)
    del tensors["h.1.mlp.c_fc.bias"]
    path = _save(tmp_path, tensors)
    message = _error(path)
    assert "missing tensor 'h.1.mlp.c_fc.bias'" in message
    assert (
        str(path) in message and "trf_blocks.1.ff.layers.0.bias" in message and "[128]" in message
    )


def test_missing_tensor_in_a_tf_checkpoint(tmp_path: Path, state) -> None:
    import numpy as np

    from tests.checkpoint_factory import openai_arrays, write_openai_tf

    folder = write_openai_tf(tmp_path, state, CONFIG)
    arrays = openai_arrays(state, CONFIG)
    del arrays["model/h0/attn/c_proj/b"]
    for file in folder.glob("model.ckpt.*"):
        file.unlink()
    from tests.checkpoint_factory import write_tf_bundle

    write_tf_bundle(folder / "model.ckpt", {k: np.asarray(v) for k, v in arrays.items()})
    assert "missing tensor 'model/h0/attn/c_proj/b'" in _error(folder)


def test_wrong_shape_names_tensor_file_and_both_shapes(tmp_path: Path, state) -> None:
    tensors = dict(state)
    tensors["h.0.attn.c_attn.weight"] = torch.zeros(32, 95)
    path = _save(tmp_path, tensors)
    message = _error(path)
    assert "tensor 'h.0.attn.c_attn.weight'" in message and str(path) in message
    assert "has shape [32, 95], expected [32, 96]" in message


def test_transposed_weight_is_a_shape_error(tmp_path: Path, state) -> None:
    """A Conv1D weight stored as nn.Linear ([out, in]) must not slip through when not square."""
    tensors = dict(state)
    tensors["h.1.mlp.c_fc.weight"] = state["h.1.mlp.c_fc.weight"].t()
    assert "has shape [128, 32], expected [32, 128]" in _error(_save(tmp_path, tensors))


def test_config_disagreeing_with_the_tensors(tmp_path: Path, state) -> None:
    path = _save(tmp_path, state)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_layer": 3, "n_embd": 32, "n_head": 4})
    )
    message = _error(path)
    assert "missing tensor 'h.2.ln_1.weight'" in message


def test_unexpected_tensor(tmp_path: Path, state) -> None:
    tensors = {**state, "h.0.attn.rotary.inv_freq": torch.ones(4)}
    assert "unexpected tensor 'h.0.attn.rotary.inv_freq'" in _error(_save(tmp_path, tensors))


def test_extra_layer_beyond_the_config(tmp_path: Path, state) -> None:
    tensors = {**state, "h.2.ln_1.weight": torch.ones(32)}
    path = _save(tmp_path, tensors)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 4})
    )
    message = _error(path)
    assert (
        "unexpected tensor 'h.2.ln_1.weight'" in message and "trf_blocks.2.norm1.scale" in message
    )


def test_duplicated_tensor_under_two_prefixes(tmp_path: Path, state) -> None:
    tensors = {**state, "transformer.wte.weight": state["wte.weight"].clone()}
    message = _error(_save(tmp_path, tensors))
    assert (
        "stored twice" in message
        and "'wte.weight'" in message
        and "'transformer.wte.weight'" in message
    )


def test_untied_output_head_is_refused(tmp_path: Path, state) -> None:
    tensors = {**state, "lm_head.weight": state["wte.weight"] + 0.5}
    message = _error(_save(tmp_path, tensors))
    assert "'lm_head.weight' differs from the token embedding 'wte.weight'" in message


def test_integer_weights_are_refused(tmp_path: Path, state) -> None:
    tensors = {**state, "ln_f.bias": torch.zeros(32, dtype=torch.int32)}
    assert "tensor 'ln_f.bias'" in _error(_save(tmp_path, tensors))


def test_truncated_safetensors(tmp_path: Path, state) -> None:
    path = _save(tmp_path, state)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    message = _error(path)
    assert "is truncated" in message and str(path) in message and "needs bytes" in message
    path.write_bytes(data[:100])
    assert "is truncated" in _error(path)


def test_truncated_pytorch_bin(tmp_path: Path, state) -> None:
    path = write_hf_bin(tmp_path, state, CONFIG)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _error(path)
    assert "truncated or corrupt" in message and str(path) in message


def test_truncated_tf_checkpoint(tmp_path: Path, state) -> None:
    folder = write_every_layout(tmp_path, CONFIG, state, only=["openai"])["openai"]
    data_file = folder / "model.ckpt.data-00000-of-00001"
    data = data_file.read_bytes()
    data_file.write_bytes(data[: len(data) - 4096])
    message = _error(folder)
    assert "is truncated" in message and "model.ckpt.data-00000-of-00001" in message
    data_file.write_bytes(data)
    index = folder / "model.ckpt.index"
    index_bytes = index.read_bytes()
    index.write_bytes(index_bytes[:-10])
    # The table footer is gone, so the index is no longer recognised at all.
    assert re.search(r"not a checkpoint|no checkpoint found|truncated", _error(folder))
    index.write_bytes(index_bytes[:40] + bytes(8) + index_bytes[48:])  # corrupt a data block
    assert "is truncated or corrupt" in _error(folder)


def test_missing_tf_data_shard(tmp_path: Path, state) -> None:
    folder = write_every_layout(tmp_path, CONFIG, state, only=["openai"])["openai"]
    (folder / "model.ckpt.data-00000-of-00001").unlink()
    assert "model.ckpt.data-00000-of-00001 is missing" in _error(folder)


class _RunsCode:
    """Unpickling this calls os.system: exactly what weights_only loading must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pth", "ckpt.pt"])
def test_code_running_pickle_is_refused_without_running(tmp_path: Path, state, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"wte.weight": state["wte.weight"], "evil": _RunsCode(marker)}, path)
    message = _error(path)
    assert "refusing to load" in message and str(path) in message
    assert "weights_only=True" in message and "system" in message
    assert not marker.exists()


def test_legacy_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "old.pth"
    torch.save({"x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=False)
    assert "refusing to load" in _error(path)
    assert not marker.exists()


def test_pickle_without_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save([1, 2, 3], path)
    assert "holds a list, not a state dict of tensors" in _error(path)


def test_non_checkpoint_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("this is not a model\n")
    message = _error(path)
    assert "is not a checkpoint gpt2load can read" in message and "this is no" in message
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert "it is empty" in _error(empty)


def test_zip_that_is_not_a_pytorch_checkpoint(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "is a zip archive but not a PyTorch checkpoint" in _error(path)


def test_folder_without_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text('{"!": 0}')
    (tmp_path / "notes.txt").write_text("nothing here")
    message = _error(tmp_path)
    assert f"no checkpoint found in {tmp_path}" in message and "2 files" in message


def test_folder_with_two_unrelated_checkpoints(tmp_path: Path, state) -> None:
    write_hf_safetensors(tmp_path, state, CONFIG, filename="a.safetensors")
    write_hf_safetensors(tmp_path, state, CONFIG, filename="b.safetensors")
    assert "holds several safetensors checkpoints (a.safetensors, b.safetensors)" in _error(
        tmp_path
    )


def test_safetensors_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, str(path))
    assert "holds no GPT-2 tensors" in _error(path)


def test_hf_config_of_another_architecture(tmp_path: Path, state) -> None:
    _save(tmp_path, state)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert "describes a 'llama' model, not GPT-2" in _error(tmp_path)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("scale_attn_weights", False, "sqrt(head size)"),
        ("add_cross_attention", True, "encoder"),
        ("activation_function", "silu", "does not compute"),
        ("layer_norm_epsilon", "small", "is not a number"),
        ("n_inner", 3 * CONFIG.n_embd, "but its tensors show n_inner=128"),
    ],
)
def test_hf_config_that_changes_the_maths_is_refused(
    tmp_path: Path, state, key: str, value: object, words: str
) -> None:
    """transformers would compute something else from these weights: refuse, naming file and key."""
    _save(tmp_path, hf_file_state_dict(state, CONFIG))
    config = tmp_path / "config.json"
    raw = json.loads(config.read_text()) | {"n_embd": CONFIG.n_embd, key: value}
    config.write_text(json.dumps(raw))
    message = _error(tmp_path)
    assert str(config) in message and f"{key}=" in message and words in message, message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scale_attn_by_inverse_layer_idx", False),
        ("scale_attn_weights", True),
        ("activation_function", "gelu_pytorch_tanh"),  # the same tanh GELU
        ("layer_norm_epsilon", 1.00001e-5),
        ("reorder_and_upcast_attn", True),  # float32 attention in transformers: the same maths
        ("n_ctx", 7),  # transformers ignores n_ctx; n_positions decides
    ],
)
def test_hf_config_with_gpt2_maths_loads_like_transformers(
    tmp_path: Path, state, key: str, value: object
) -> None:
    from tests.checkpoint_factory import reference_model, sample_ids

    _save(tmp_path, hf_file_state_dict(state, CONFIG))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {key: value}))
    idx = sample_ids(CONFIG)
    reference = reference_model(state, CONFIG)
    setattr(reference.config, key, value)
    for module in reference.modules():  # the attention layers copied the flags when built
        if hasattr(module, key):
            setattr(module, key, value)
    with torch.no_grad():
        ours, theirs = load_checkpoint(tmp_path)(idx), reference(idx).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_nanogpt_without_biases_is_refused(tmp_path: Path, state) -> None:
    from tests.checkpoint_factory import nanogpt_state_dict

    path = tmp_path / "ckpt.pt"
    model_args = {
        "n_layer": 2,
        "n_head": 4,
        "n_embd": 32,
        "block_size": 64,
        "bias": False,
        "vocab_size": 50257,
    }
    torch.save({"model": nanogpt_state_dict(state), "model_args": model_args}, path)
    assert "bias=False" in _error(path)


NANO_ARGS = {
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 32,
    "block_size": 64,
    "bias": True,
    "vocab_size": 50257,
}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("bias", "False", "model_args says bias='False', but bias must be a boolean"),
        ("vocab_size", "50257", "model_args says vocab_size='50257', but vocab_size must be an"),
        ("block_size", "64", "model_args says block_size='64', but block_size must be an integer"),
    ],
)
def test_nanogpt_model_args_of_the_wrong_type_say_so(
    tmp_path: Path, state, key: str, value: object, words: str
) -> None:
    """A string is no boolean nor integer: "bias='False'" must not read as "bias=False, but
    the file holds no such tensors", nor "'50257'" as a vocabulary the tensors contradict."""
    from tests.checkpoint_factory import nanogpt_state_dict

    path = tmp_path / "ckpt.pt"
    torch.save({"model": nanogpt_state_dict(state), "model_args": NANO_ARGS | {key: value}}, path)
    message = _error(path)
    assert str(path) in message and words in message, message
    assert "holds no such tensors" not in message and "tensors show" not in message


def test_nanogpt_head_that_differs_from_its_embedding_is_refused(tmp_path: Path, state) -> None:
    """nanoGPT always ties the two (its load makes both the head), so a file whose head has its
    own values computes other logits there: refused, not read as the book's untied head."""
    from tests.checkpoint_factory import nanogpt_state_dict

    model = nanogpt_state_dict(state)
    model["lm_head.weight"] = model["transformer.wte.weight"] + 0.5
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model, "model_args": NANO_ARGS}, path)
    for call in (load_checkpoint, inspect_checkpoint):
        with pytest.raises(CheckpointError) as info:
            call(path)
        message = str(info.value)
        assert (
            str(path) in message and "'lm_head.weight' differs from the token embedding" in message
        )
        assert "'transformer.wte.weight'" in message and "model_args ties the two" in message
        assert "nanoGPT always ties the two" in message and "tie_word_embeddings" not in message
    torch.save({"model": nanogpt_state_dict(state), "model_args": NANO_ARGS}, path)
    assert load_checkpoint(path).config.tie_head  # the head it shares loads, tied


def test_missing_path() -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint("/nonexistent/model.safetensors")


def test_info_and_detect_report_the_same_problems(tmp_path: Path, state) -> None:
    tensors = hf_file_state_dict(state, CONFIG)
    del tensors["wpe.weight"]
    path = _save(tmp_path, tensors)
    for call in (inspect_checkpoint, detect_format):
        with pytest.raises(CheckpointError, match="no position embedding"):
            call(path)


def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.bin"
    path.write_text("hello")
    assert cli_main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt2load info: error:") and "not a checkpoint" in err and "\n" not in err
    assert cli_main(["convert", str(path), str(tmp_path / "out"), "--to", "hf"]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
