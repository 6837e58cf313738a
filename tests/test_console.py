"""``gpt2load chat`` driven through a pipe, as a script or a user with a keyboard would."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt2load.console import Console, Settings, settings_from_run
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model
from tests.test_cli_generate import make_checkpoint, run_cli


def make_console(tokenizer) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(random_model(TINY_CONFIGS["tiny"]), tokenizer, Settings(), out), out


def test_commands_change_settings_and_bad_ones_get_one_line(tokenizer) -> None:
    console, out = make_console(tokenizer)
    for line in ("/temp 0.5", "/topk 40", "/topp 0.9", "/max 7", "/seed 0", "/topk none"):
        assert console.handle(line)
    assert console.settings == Settings(
        temperature=0.5, top_k=None, top_p=0.9, max_new_tokens=7, seed=0
    )
    out.truncate(0)
    out.seek(0)
    for bad in ("/temp hot", "/topk 0", "/topp 2", "/max", "/frobnicate"):
        before = out.getvalue()
        assert console.handle(bad)
        new = out.getvalue()[len(before) :]
        assert new.startswith("error:") and new.count("\n") == 1, new
    assert console.settings.temperature == 0.5
    assert not console.handle("/quit")


def test_piped_prompts_stream_answers(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    stdin = "/temp 0\n/max 5\n/settings\nROMEO:\n/bogus\nROMEO:\n/quit\nnever read\n"
    result = run_cli("chat", str(folder), "--device", "cpu", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "temperature = 0.0" in lines
    assert any(line.startswith("temperature=0.0") and "max_new_tokens=5" in line for line in lines)
    answers = [line for line in lines if line.startswith("ROMEO:")]
    assert len(answers) == 2 and answers[0] == answers[1]  # greedy: the same twice
    assert any(line.startswith("error: unknown command '/bogus'") for line in lines)


def test_defaults_come_from_the_run_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.toml").write_text("temperature = 0.3\ntop_k = 7\nsample_tokens = 33\n")
    assert settings_from_run(run / "best") == Settings(temperature=0.3, top_k=7, max_new_tokens=33)
    assert settings_from_run(tmp_path) == Settings()


def test_ctrl_c_stops_a_generation_but_not_the_console(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2load", "chat", str(folder), "--device", "cpu"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A very long answer, so that it is still streaming when the interrupt arrives.
        proc.stdin.write("/max 1000000\nROMEO:\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("max_new_tokens = ")
        head = proc.stdout.read(len("ROMEO:") + 20)  # the answer has started streaming
        assert head.startswith("ROMEO:")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("/settings\n/quit\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "[stopped]" in out
    assert "max_new_tokens=1000000" in out.split("[stopped]")[1]
