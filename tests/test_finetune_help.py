"""finetune's help and command-line errors (issue 15): no arguments print the help, a typo
gets the closest real name in two lines, --version answers, resume's help says what resuming
means, and an error about a flag's value names the flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finetune.cli import main
from gpt2load import DTYPE_ALIASES, __version__

from .conftest import REPO_ROOT


def _exits(argv: list[str], capsys: pytest.CaptureFixture[str], code: int) -> tuple[str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_no_arguments_print_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _exits([], capsys, 0)
    assert out.startswith("usage: finetune") and not err
    for command in ("shakespeare", "pretrain", "prepare", "resume", "--version"):
        assert command in out


def test_a_mistyped_sub_command_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _exits(["shakespear"], capsys, 2)
    lines = err.splitlines()
    assert len(lines) == 2 and "finetune --help" in lines[0]
    assert lines[1] == "finetune: error: unknown command 'shakespear'; did you mean shakespeare?"


def test_a_mistyped_flag_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _exits(["shakespeare", "--max-iter", "3"], capsys, 2)
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: finetune shakespeare")
    assert "finetune shakespeare --help" in lines[0]
    assert lines[1] == (
        "finetune shakespeare: error: unrecognized arguments: --max-iter 3; "
        "did you mean --max-iters?"
    )
    _, err = _exits(["resume", "runs/x", "--max-iter", "3"], capsys, 2)
    assert err.splitlines()[-1].endswith("did you mean --max-iters?")


def test_version_in_process_and_through_the_console_entry_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = _exits(["--version"], capsys, 0)
    assert out.strip() == f"finetune {__version__}"
    script = (
        "import sys; from importlib.metadata import entry_points; "
        "(ep,) = entry_points(group='console_scripts', name='finetune'); "
        "assert ep.value == 'finetune.cli:main', ep.value; sys.exit(ep.load()())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "--version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"finetune {__version__}"


def test_resume_help_says_what_resuming_means(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _exits(["resume", "--help"], capsys, 0)
    text = " ".join(out.split())
    assert "--max-iters is the step to reach, not a number of extra steps" in text
    assert "keeps the run's own value" in text and "What can change" in text
    assert "(--seed, --batch-size, --block-size, --eval-batches)" in text
    assert "the step to reach (the total, not extra steps)" in text  # --max-iters' own help
    options = out.split("options:", 1)[1]
    assert "--lr X" in options and "--device DEVICE" in options
    assert "--seed N" not in options and "--n-layer" not in options  # fixed: not offered


def test_every_training_option_says_its_default_and_dtype_takes_gpt2loads_spellings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = _exits(["pretrain", "--help"], capsys, 0)
    text = " ".join(out.split())
    assert "--dtype {auto,bfloat16,float16,float32}" in text
    for spelling in ("bf16", "fp16", "fp32"):
        assert spelling in DTYPE_ALIASES and spelling in text.split("--dtype", 2)[2][:300]
    assert "--max-iters N optimizer steps to train for" in text and "(default: 2000)" in text


def test_an_error_about_a_flags_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--data", "x", "--top-k", "0", "--force-cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("finetune pretrain: error: --top-k: ") and "top_k must be >= 1" in err
    assert main(["prepare", "x.txt", "--val-fraction", "nan"]) == 2
    assert "--val-fraction: val_fraction must be finite" in capsys.readouterr().err


def test_prepare_help_speaks_only_of_prepares_own_flags(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare has no --init, so --tokenizer auto cannot mean the --init checkpoint's own."""
    monkeypatch.setenv("COLUMNS", "200")  # argparse breaks words longer than a narrow line
    out, _ = _exits(["prepare", "--help"], capsys, 0)
    out = " ".join(out.split())  # as argparse wrapped it for this terminal's width
    assert "the --init checkpoint's own" not in out
    assert "auto and gpt2: GPT-2's BPE" in out and "(default: 'auto')" in out
    pretrain, _ = _exits(["pretrain", "--help"], capsys, 0)
    assert "the --init checkpoint's own" in " ".join(
        pretrain.split()
    )  # training keeps the field's own words
