"""What finetune's data step says to the user: ``finetune shakespeare`` refuses other text in
one line (issue 15) instead of training on it under Shakespeare's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import cli
from finetune.errors import ConfigError
from finetune.prepare import check_shakespeare_data


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
