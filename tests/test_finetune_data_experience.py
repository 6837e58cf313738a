"""What finetune's data step says to the user: ``finetune shakespeare`` refuses other text in
one line (issue 15) instead of training on it under Shakespeare's name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune import cli
from finetune.errors import ConfigError
from finetune.prepare import check_shakespeare_data
from tests.conftest import make_dataset


def test_shakespeare_with_other_data_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("Not a line of Shakespeare in here. " * 200)
    argv = ["shakespeare", "--data", str(other), "--init", "scratch", "--force-cpu"]
    argv += ["--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data")]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("finetune shakespeare: error: --data ")
    assert f"use `finetune pretrain --data {other}`" in captured.err
    # Refused before anything was prepared, downloaded or trained.
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
    assert "step" not in captured.out


def test_only_other_text_under_shakespeare_is_refused() -> None:
    for command, data in (("shakespeare", None), ("shakespeare", ["Shakespeare"])):
        assert check_shakespeare_data(command, data) is None  # its own data, given or not
    assert check_shakespeare_data("pretrain", ["other.txt"]) is None
    with pytest.raises(ConfigError, match=r"use `finetune pretrain --data a\.txt notes/`"):
        check_shakespeare_data("shakespeare", ["a.txt", "notes/"])
    with pytest.raises(ConfigError, match=r"use `finetune pretrain --data a\.txt` "):
        check_shakespeare_data("shakespeare", ["shakespeare", "a.txt"])  # a runnable advice


def test_other_text_from_a_config_file_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other.txt").write_text("Not a line of Shakespeare in here. " * 200)
    (tmp_path / "c.toml").write_text('data = ["other.txt"]\n')
    argv = ["shakespeare", "--config", "c.toml", "--init", "scratch", "--force-cpu"]
    assert cli.main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use `finetune pretrain --data other.txt`" in err
    assert not (tmp_path / "data").exists()


def test_a_missing_data_path_is_the_first_and_only_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --data path is told before the device, memory or starting weights."""
    monkeypatch.chdir(tmp_path)
    argv = ["pretrain", "--data", "missing.txt", "--init", "scratch", "--force-cpu"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == "finetune pretrain: error: data path missing.txt does not exist\n"
    assert captured.out == ""  # no "device: ..." or "memory: ..." line first
    assert list(tmp_path.iterdir()) == []


TINY = "--init scratch --n-layer 1 --n-head 2 --n-embd 16 --block-size 16 --batch-size 2 "
TINY += "--max-iters 2 --eval-interval 2 --warmup-iters 1 --force-cpu --no-progress"


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_prepared_folder_trains_only_under_its_own_vocabulary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A character-prepared folder (meta.pkl) under --tokenizer gpt2 trained a 50257-token BPE
    model on character ids to the end, exit 0; a BPE-prepared one under --tokenizer char."""
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "play.txt"
    text.write_text("ROMEO: what light through yonder window breaks?\n" * 60)
    assert cli.main(["prepare", str(text), "--tokenizer", "char", "--name", "chars"]) == 0
    assert (tmp_path / "data" / "chars" / "meta.pkl").is_file()
    make_dataset(tmp_path / "data" / "bpe")  # GPT-2 ids, as `finetune prepare` leaves them
    err = _refused(
        capsys,
        ["pretrain", "--tokenizer", "gpt2", "--data", "data/chars", "--out", "r1", *TINY.split()],
    )
    assert err.startswith(
        "finetune pretrain: error: --data data/chars was prepared with a character vocabulary "
        "(its meta.pkl lists "
    )
    assert "--tokenizer gpt2 trains on: drop --tokenizer gpt2" in err
    err = _refused(
        capsys,
        ["pretrain", "--tokenizer", "char", "--data", "data/bpe", "--out", "r2", *TINY.split()],
    )
    assert err.startswith(
        "finetune pretrain: error: --data data/bpe holds no meta.pkl, so its ids are GPT-2's BPE "
        "tokens, not the characters --tokenizer char trains on: give the text itself"
    )
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    # Each under its own vocabulary (auto) still trains.
    assert cli.main(["pretrain", "--data", "data/chars", "--out", "r3", *TINY.split()]) == 0


def test_a_tokenizer_dir_that_is_not_there_is_refused_and_resume_keeps_working(
    tmp_path: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mistyped --tokenizer-dir fell back to $GPT2LOAD_TOKENIZER_DIR (or a download) without
    a word. A run's own one, gone since it started, is no reason to stop resuming it: its
    checkpoint carries the same checked files (and the setting cannot change on resume)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer_dir))
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    (tmp_path / "notes.txt").write_text("A line of plain words for a tiny model. " * 300)
    flags = [*TINY.split(), "--data", "notes.txt", "--sample-interval", "2"]
    err = _refused(capsys, ["pretrain", *flags, "--tokenizer-dir", "missing", "--out", "r1"])
    assert err.startswith("finetune pretrain: error: --tokenizer-dir missing does not exist; ")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "data").exists()

    own = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, own)
    assert cli.main(["pretrain", *flags, "--tokenizer-dir", str(own), "--out", "run"]) == 0
    shutil.rmtree(own)
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR")
    capsys.readouterr()
    assert cli.main(["resume", "run", "--max-iters", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sample at step 4" in out and "no tokenizer for samples" not in out
