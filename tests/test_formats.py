"""Every checkpoint layout loads into the model that transformers computes from the same weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import gpt2load
from gpt2load.cli import main, warnings_as_lines
from gpt2load.cli import main as cli_main
from gpt2load.config import GPTConfig
from gpt2load.formats import CheckpointError, detect_format, inspect_checkpoint, load_checkpoint
from tests.checkpoint_factory import (
    EXPECTED_FORMATS,
    book_config_dict,
    random_hf_state_dict,
    reference_logits,
    sample_ids,
    write_every_layout,
    write_hf_save_pretrained,
    write_native,
    write_rasbt,
)
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model

TOLERANCE = 1e-5
# The conftest sizes plus a head size of 7, so no axis mix-up can pass by symmetry.
CONFIGS = {
    **TINY_CONFIGS,
    "head7": GPTConfig(n_layer=3, n_head=5, n_embd=35, context_length=20, vocab_size=300),
}


class Written:
    def __init__(self, config: GPTConfig, root: Path) -> None:
        self.config = config
        self.hf_state = random_hf_state_dict(config, seed=7)
        self.paths = write_every_layout(root, config, self.hf_state)
        self.idx = sample_ids(config)
        self.expected = reference_logits(self.hf_state, config, self.idx)
        # nanoGPT computes the exact GELU (transformers' "gelu") from the same weights.
        self.nanogpt_config = config.replace(activation="gelu")
        self.expected_nanogpt = reference_logits(self.hf_state, self.nanogpt_config, self.idx)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Written:
    return Written(CONFIGS[request.param], tmp_path_factory.mktemp(request.param))


def _max_diff(model: torch.nn.Module, written: Written, nanogpt: bool = False) -> float:
    expected = written.expected_nanogpt if nanogpt else written.expected
    with torch.no_grad():
        return (model(written.idx).float() - expected).abs().max().item()


@pytest.mark.parametrize("contiguous", [True, False], ids=["copies", "views"])
@pytest.mark.parametrize("layout", sorted(EXPECTED_FORMATS))
def test_every_layout_matches_transformers(written: Written, layout: str, contiguous: bool) -> None:
    path = written.paths[layout]
    assert detect_format(path) == EXPECTED_FORMATS[layout]
    model = load_checkpoint(path, contiguous=contiguous)
    nanogpt = layout.startswith("nanogpt")
    assert model.config == (written.nanogpt_config if nanogpt else written.config)
    assert not model.training
    assert model.out_head.weight is model.tok_emb.weight
    assert all(p.device.type == "cpu" for p in model.parameters())
    if contiguous:
        assert all(p.is_contiguous() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert _max_diff(model, written, nanogpt) <= TOLERANCE


def test_public_load_accepts_every_path_form(written: Written) -> None:
    """Folder, weights file, TF prefix, TF index, TF data shard and TF state file all load."""
    openai = written.paths["openai"]
    forms = [
        openai,
        openai / "model.ckpt.index",
        openai / "model.ckpt.data-00000-of-00001",
        openai / "checkpoint",
        written.paths["hf_hub"] / "model.safetensors",
        written.paths["hf_bin"] / "pytorch_model.bin",
        written.paths["rasbt_pth"] / "gpt2-small-124M.pth",
        written.paths["nanogpt"] / "ckpt.pt",
        str(written.paths["native"] / "model.safetensors"),
    ]
    for form in forms:
        nanogpt = "nanogpt" in str(form)
        assert _max_diff(gpt2load.load(form), written, nanogpt) <= TOLERANCE, form


def test_tf_prefix_that_is_not_a_file_loads(written: Written) -> None:
    prefix = written.paths["openai"] / "model.ckpt"
    assert _max_diff(load_checkpoint(prefix), written) <= TOLERANCE
    assert _max_diff(gpt2load.load(prefix), written) <= TOLERANCE


def test_detection_reads_contents_not_names(tmp_path: Path) -> None:
    config = CONFIGS["small_vocab"]
    state = random_hf_state_dict(config)
    paths = write_every_layout(
        tmp_path / "src", config, state, only=["hf_hub", "rasbt_pth", "native"]
    )
    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    # A safetensors file called .bin, a pickle called .safetensors, a native file called .pt.
    shutil.copy(paths["hf_hub"] / "model.safetensors", misnamed / "weights.bin")
    shutil.copy(paths["rasbt_pth"] / "gpt2-small-124M.pth", misnamed / "looks.safetensors")
    shutil.copy(paths["native"] / "model.safetensors", misnamed / "model.pt")
    (misnamed / "config.json").write_text(json.dumps({"n_head": config.n_head}))
    assert detect_format(misnamed / "weights.bin") == "hf-safetensors"
    assert detect_format(misnamed / "looks.safetensors") == "rasbt-torch"
    assert detect_format(misnamed / "model.pt") == "native"


def test_transformers_save_pretrained_output_loads(tmp_path: Path) -> None:
    config = CONFIGS["head7"]
    state = random_hf_state_dict(config, seed=3)
    idx = sample_ids(config)
    expected = reference_logits(state, config, idx)
    folder = write_hf_save_pretrained(tmp_path, state, config)
    assert detect_format(folder) == "hf-safetensors"
    with torch.no_grad():
        assert (load_checkpoint(folder)(idx) - expected).abs().max().item() <= TOLERANCE


def test_sharded_safetensors_with_index_json(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    config = CONFIGS["tiny"]
    state = random_hf_state_dict(config)
    names = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for file, keys in halves.items():
        save_file(
            {f"transformer.{k}": state[k] for k in keys},
            str(tmp_path / file),
            metadata={"format": "pt"},
        )
        weight_map.update({f"transformer.{k}": file for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_head": config.n_head})
    )
    idx = sample_ids(config)
    with torch.no_grad():
        diff = (load_checkpoint(tmp_path)(idx) - reference_logits(state, config, idx)).abs().max()
    assert diff.item() <= TOLERANCE


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("bf16", torch.bfloat16),
        ("float16", torch.float16),
        (torch.float64, torch.float64),
        ("fp32", torch.float32),
    ],
)
def test_dtype_is_applied_to_every_parameter(tmp_path: Path, dtype, expected: torch.dtype) -> None:
    config = CONFIGS["tiny"]
    state = random_hf_state_dict(config)
    path = write_every_layout(tmp_path, config, state, only=["hf_hub"])["hf_hub"]
    model = load_checkpoint(path, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}
    idx = sample_ids(config)
    with torch.no_grad():
        diff = (
            (model(idx).double() - reference_logits(state, config, idx).double()).abs().max().item()
        )
    assert diff <= (5e-2 if expected in (torch.bfloat16, torch.float16) else TOLERANCE)


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dtype 'fp12'"):
        load_checkpoint(tmp_path, dtype="fp12")


def test_stored_dtype_is_kept_by_default(tmp_path: Path) -> None:
    config = CONFIGS["tiny"]
    state = {k: v.to(torch.bfloat16) for k, v in random_hf_state_dict(config).items()}
    path = write_every_layout(tmp_path, config, state, only=["hf_prefixed"])["hf_prefixed"]
    assert {p.dtype for p in load_checkpoint(path).parameters()} == {torch.bfloat16}


def test_book_file_at_a_published_width_needs_no_config(tmp_path: Path) -> None:
    """The rasbt files store no head count; GPT-2's widths fix it (768 -> 12 heads)."""
    config = GPTConfig(n_layer=1, n_head=12, n_embd=768, context_length=8, vocab_size=50)
    state = random_hf_state_dict(config)
    path = write_rasbt(tmp_path / "gpt2-small-124M.safetensors", state, config, config_json=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_checkpoint(path)
    assert model.config == config
    idx = sample_ids(config)
    with torch.no_grad():
        assert (model(idx) - reference_logits(state, config, idx)).abs().max().item() <= TOLERANCE


def test_book_file_at_an_odd_width_needs_its_head_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No guessing: a bare .pth of a width GPT-2 never had loads only when told its heads."""
    config = CONFIGS["head7"]
    path = write_rasbt(tmp_path / "x.pth", random_hf_state_dict(config), config, config_json=False)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "does not record its number of attention heads" in message
    assert "config.json" in message and "n_head=" in message and "--n-head" in message
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpt2load info: error: ")
    assert load_checkpoint(path, n_head=config.n_head).config == config
    told = ["--n-head", str(config.n_head)]
    assert main(["info", str(path), *told]) == 0
    assert main(["verify", str(path), "--no-known-answer", *told]) == 0
    assert f"n_head={config.n_head}" in capsys.readouterr().out
    assert gpt2load.load(path, n_head=config.n_head).config == config
    (tmp_path / "config.json").write_text(json.dumps(book_config_dict(config)))
    assert load_checkpoint(path).config == config
    with pytest.raises(CheckpointError, match="records n_head=5, not the n_head=7 given"):
        load_checkpoint(path, n_head=7)


def test_warnings_print_as_one_line_while_a_command_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        with warnings_as_lines("gpt2load info"):
            warnings.warn("the head count\n   is a guess", UserWarning, stacklevel=1)
        assert warnings.showwarning is before  # only while the command ran
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gpt2load info: warning: the head count is a guess"]


def test_from_scratch_model_without_qkv_bias(tmp_path: Path) -> None:
    """The book trains from scratch with qkv_bias=False; such a state dict loads as such."""
    config = TINY_CONFIGS["odd"].replace(qkv_bias=False)
    model = random_model(config, seed=4)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    loaded = load_checkpoint(tmp_path / "model.pth")
    assert loaded.config == config
    idx = sample_ids(config)
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))


def test_our_own_model_round_trips_through_save_native(tmp_path: Path, any_tiny_config) -> None:
    model = random_model(any_tiny_config, seed=2)
    gpt2load.save_native(model, tmp_path)
    loaded = gpt2load.load(tmp_path)
    assert loaded.config == any_tiny_config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_changing_a_loaded_model_never_writes_to_its_file(tmp_path: Path) -> None:
    """Parameters may be views of the memory-mapped file; they must be copy-on-write."""
    config = CONFIGS["tiny"]
    state = random_hf_state_dict(config)
    paths = write_every_layout(tmp_path, config, state, only=["native", "openai", "rasbt_pth"])
    for path in paths.values():
        files = {p: p.read_bytes() for p in Path(path).iterdir() if p.is_file()}
        model = load_checkpoint(path)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        del model
        for file, data in files.items():
            assert file.read_bytes() == data, file


def test_info_describes_without_loading(written: Written) -> None:
    info = inspect_checkpoint(written.paths["hf_hub"])
    c = written.config
    assert info.format == "hf-safetensors"
    assert info.config == c
    assert info.config_source == "config.json"
    expected_params = sum(p.numel() for p in random_model(c).parameters())
    assert info.num_parameters == expected_params
    assert info.dtypes == {"float32": 2 + 12 * c.n_layer + 2}
    assert len(info.ignored) == c.n_layer
    assert {p.name for p, _ in info.files} == {"model.safetensors", "config.json"}
    text = info.describe()
    assert "hf-safetensors" in text and f"{expected_params:,}" in text
    nano = inspect_checkpoint(written.paths["nanogpt"])
    assert nano.config_source == "model_args" and nano.has_output_head


def test_info_command(written: Written, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["info", str(written.paths["openai"])]) == 0
    out = capsys.readouterr().out
    assert "openai-tf" in out and "model.ckpt.data-00000-of-00001" in out and "hparams.json" in out
    assert cli_main(["info", "--json", str(written.paths["native"])]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "native" and data["config"] == written.config.to_dict()


def test_reading_a_tf_checkpoint_does_not_import_tensorflow(tmp_path: Path) -> None:
    config = CONFIGS["tiny"]
    path = write_every_layout(tmp_path, config, random_hf_state_dict(config), only=["openai"])[
        "openai"
    ]
    code = (
        "import sys, gpt2load; m = gpt2load.load(sys.argv[1]); "
        "print('tensorflow' in sys.modules, m.config.n_layer)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    assert result.stdout.split() == ["False", str(config.n_layer)]


def test_native_checkpoint_from_the_factory_matches(tmp_path: Path) -> None:
    config = CONFIGS["small_vocab"]
    state = random_hf_state_dict(config)
    path = write_native(tmp_path / "m.safetensors", state, config)
    idx = sample_ids(config)
    with torch.no_grad():
        diff = (load_checkpoint(path)(idx) - reference_logits(state, config, idx)).abs().max()
    assert diff.item() <= TOLERANCE


def test_default_load_keeps_transposed_weights_as_views(written: Written) -> None:
    """The default load copies nothing it can avoid (the fast, lean load for inference)."""
    for layout in ("hf_hub", "openai", "hf_bin"):
        model = gpt2load.load(written.paths[layout])
        assert not model.trf_blocks[0].ff.layers[0].weight.is_contiguous()
        assert _max_diff(model, written) <= TOLERANCE
