"""A mistyped sub-command or flag is answered in two lines with the closest real one, no
arguments print the help, and --version answers (issue 15), for gpt2load and finetune alike."""

from __future__ import annotations

import pytest

from finetune.cli import main as finetune_main
from gpt2load import __version__
from gpt2load.cli import main as gpt2load_main


def _fails(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_a_mistyped_sub_command_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _fails(gpt2load_main, ["generat", "gpt2"], capsys)
    assert lines[-1] == "gpt2load: error: unknown command 'generat'; did you mean generate?"
    assert len(lines) == 2 and "gpt2load --help" in lines[0]


def test_a_mistyped_flag_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _fails(gpt2load_main, ["generate", "gpt2", "--promt", "x"], capsys)
    assert lines[-1].endswith("unrecognized arguments: --promt x; did you mean --prompt?")
    assert len(lines) == 2 and lines[0].startswith("usage: gpt2load generate")
    lines = _fails(finetune_main, ["pretrain", "--max-iter", "3"], capsys)
    assert lines[-1].endswith("did you mean --max-iters?") and len(lines) == 2


def test_a_bad_value_or_a_mistyped_top_level_flag_is_two_lines_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _fails(finetune_main, ["pretrain", "--lr", "abc"], capsys)
    assert lines == [
        "usage: finetune pretrain ... (every option: finetune pretrain --help)",
        "finetune pretrain: error: argument --lr: invalid float value: 'abc'",
    ]
    lines = _fails(gpt2load_main, ["generate", "gpt2", "--dtype", "fp8"], capsys)
    assert len(lines) == 2 and "argument --dtype: invalid choice: 'fp8'" in lines[-1]
    for main, prog in ((gpt2load_main, "gpt2load"), (finetune_main, "finetune")):
        lines = _fails(main, ["--verison"], capsys)
        assert (
            lines[-1]
            == f"{prog}: error: unrecognized arguments: --verison; did you mean --version?"
        )
        assert len(lines) == 2


def test_nothing_close_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _fails(gpt2load_main, ["generate", "gpt2", "--zzzzzz"], capsys)
    assert "did you mean" not in lines[-1] and "--zzzzzz" in lines[-1]


def test_no_arguments_print_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpt2load_main([])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gpt2load") and "download" in out and "generate" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpt2load_main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gpt2load {__version__}"
