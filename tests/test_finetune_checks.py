"""Mistakes caught before the expensive steps: data preparation and the weights download."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import cli, launch

from .conftest import make_dataset


@pytest.fixture
def offline_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No weights on disk and no network: any attempt to fetch gpt2 fails at once."""
    weights = tmp_path / "weights"
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return weights


def _unprepared_text(tmp_path: Path) -> tuple[Path, Path]:
    """A text file and the data folder it would be prepared into (not created yet)."""
    text = tmp_path / "t.txt"
    text.write_text("some text to prepare " * 50)
    return text, tmp_path / "data"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    base = ["pretrain", "--force-cpu", "--no-progress", "--sample-interval", "0"]
    assert cli.main([*base, *argv]) == 2
    return capsys.readouterr().err


def test_shape_and_context_are_checked_before_data_or_weights(
    tmp_path: Path, offline_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, data_dir = _unprepared_text(tmp_path)
    common = ["--data", str(text), "--data-dir", str(data_dir), "--init", "gpt2"]

    err = _run(capsys, *common, "--block-size", "2048")
    assert "--block-size 2048 is longer than the model's context of 1024" in err
    err = _run(capsys, *common, "--n-layer", "4", "--block-size", "64")
    assert "another size" in err and "--n-layer 4 (the checkpoint has 12)" in err
    # Neither prepared data nor tried to download (offline, that would say so).
    assert "download" not in err
    assert not data_dir.exists() and not offline_weights.exists()
    assert not (tmp_path / "runs").exists()


def test_text_shorter_than_a_window_is_said_before_the_download(
    tmp_path: Path, offline_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = make_dataset(tmp_path / "short", train_tokens=3000, val_tokens=300)
    err = _run(capsys, "--data", str(short), "--init", "gpt2", "--block-size", "512")
    assert "the val split" in err and "300 tokens, fewer than one context window" in err
    assert "--block-size 512" in err and "--val-fraction" in err
    assert "download" not in err and not offline_weights.exists()


def test_a_failed_weights_download_is_one_clear_line(
    tmp_path: Path, offline_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path / "ds")
    err = _run(capsys, "--data", str(data), "--init", "gpt2", "--block-size", "32")
    assert err.startswith("finetune pretrain: error: could not download --init gpt2")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "GPT2LOAD_MIRROR" in err and "gpt2load download gpt2" in err
    assert "--init scratch" in err


def test_a_download_error_from_anywhere_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpt2load.downloads import DownloadError
    from gpt2load.errors import NO_NETWORK_ADVICE, RetriesExhaustedError

    def fail(cfg, **kwargs):
        raise DownloadError("host unreachable\nafter 3 tries")

    monkeypatch.setattr(launch, "start", fail)
    assert cli.main(["pretrain", "--data", "x", "--force-cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "host unreachable after 3 tries" in err

    # An absent network gets the ways round, said once, as gpt2load says them everywhere.
    def absent(cfg, **kwargs):
        raise RetriesExhaustedError("x: giving up at once: its host name does not resolve")

    monkeypatch.setattr(launch, "start", absent)
    assert cli.main(["pretrain", "--data", "x", "--force-cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("GPT2LOAD_MIRROR") == 1
    assert " ".join(NO_NETWORK_ADVICE.split()) in err


def test_a_missing_init_is_said_before_data_is_prepared(
    tmp_path: Path, offline_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, data_dir = _unprepared_text(tmp_path)
    err = _run(capsys, "--data", str(text), "--data-dir", str(data_dir), "--init", "nowhere/x")
    assert "--init 'nowhere/x' is neither scratch, a GPT-2 name" in err
    assert not data_dir.exists() and not (tmp_path / "runs").exists()


def test_any_checkpoint_layout_is_sized_up_before_data_is_prepared(
    tmp_path: Path, offline_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Hugging Face file, not a finetune one: its shape still comes from its headers."""
    from gpt2load.config import GPTConfig

    from .checkpoint_factory import random_hf_state_dict, write_hf_safetensors

    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=64, vocab_size=50257)
    write_hf_safetensors(tmp_path / "hf", random_hf_state_dict(config), config)
    text, data_dir = _unprepared_text(tmp_path)
    common = ["--data", str(text), "--data-dir", str(data_dir), "--init", str(tmp_path / "hf")]
    err = _run(capsys, *common, "--block-size", "128")
    assert "--block-size 128 is longer than the model's context of 64" in err
    err = _run(capsys, *common, "--n-embd", "64", "--block-size", "32")
    assert "--n-embd 64 (the checkpoint has 32)" in err
    assert not data_dir.exists()


def test_weights_of_another_size_under_a_models_name_are_refused(
    tmp_path: Path,
    offline_weights: Path,
    tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mirror or a copied folder can put any model where gpt2-medium belongs."""
    import shutil

    from gpt2load.config import GPTConfig

    from .checkpoint_factory import random_hf_state_dict, write_hf_safetensors

    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=1024, vocab_size=50257)
    folder = offline_weights / "gpt2-medium" / "hf"
    write_hf_safetensors(folder, random_hf_state_dict(config), config)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, folder / name)
    data = make_dataset(tmp_path / "ds")
    err = _run(capsys, "--data", str(data), "--init", "gpt2-medium", "--block-size", "32")
    assert "--init gpt2-medium: the weights found for it (n_layer=2" in err
    assert "are not gpt2-medium (n_layer=24" in err and "Delete" in err
    assert not (tmp_path / "runs" / "pretrain" / "last").exists()


def test_a_pre_zip_pickle_is_sized_up_only_once_loaded(tmp_path: Path) -> None:
    """PyTorch's old pickle format has no headers: planning would read it whole, so it does not
    (the zip format, memory-mapped, is planned from its headers like the others)."""
    import torch

    from finetune.config import TrainConfig
    from finetune.modelinit import init_model, planned_config
    from gpt2load.config import GPTConfig

    from .checkpoint_factory import random_hf_state_dict, write_hf_bin

    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=64, vocab_size=50257)
    state = random_hf_state_dict(config)
    zipped = write_hf_bin(tmp_path / "zip", state, config)
    legacy = write_hf_bin(tmp_path / "legacy", state, config)
    torch.save(torch.load(legacy), legacy, _use_new_zipfile_serialization=False)

    def cfg(folder: Path) -> TrainConfig:
        return TrainConfig(init=str(folder), block_size=32, out=str(tmp_path / "run"))

    assert planned_config(cfg(zipped.parent)) == config
    assert planned_config(cfg(legacy.parent)) is None
    assert init_model(cfg(legacy.parent), log=lambda _: None).config.n_embd == 32


def test_the_tokenizer_beside_init_prepares_the_data_with_no_other_source(
    tmp_path: Path,
    offline_weights: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--init weights/gpt2/openai`` style: GPT-2's files sit beside the weights, and no
    $GPT2LOAD_TOKENIZER_DIR, download cache or network is there to fall back on."""
    import shutil

    from gpt2load import GPT, GPTConfig, save_native

    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    init = tmp_path / "init"
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, context_length=32, vocab_size=50257)
    save_native(GPT(config), init)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, init / name)
    text, data_dir = _unprepared_text(tmp_path)
    argv = ["pretrain", "--init", str(init), "--data", str(text), "--data-dir", str(data_dir)]
    argv += ["--block-size", "16", "--batch-size", "2", "--max-iters", "1", "--force-cpu"]
    assert cli.main([*argv, "--no-progress", "--sample-interval", "1", "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "data: prepared" in out and "--- sample at step 1 ---" in out
    assert not (offline_weights / "tokenizer").exists()  # nothing was fetched
