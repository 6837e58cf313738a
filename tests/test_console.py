"""``gpt2load chat`` driven through a pipe, as a script or a user with a keyboard would."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpt2load.config import GPTConfig
from gpt2load.console import (
    HISTORY_LENGTH,
    Console,
    Settings,
    history_path,
    line_editing,
    settings_from_checkpoint,
)
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model
from tests.test_cli_generate import make_checkpoint, run_cli, run_main


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


def test_piped_prompts_stream_answers(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process (a real process's pipe: ``test_console_script_runs_in_a_subprocess``)."""
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    stdin = "/temp 0\n/max 5\n/settings\nROMEO:\n/bogus\nROMEO:\n/quit\nnever read\n"
    result = run_main(capsys, "chat", str(folder), "--device", "cpu", stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "temperature = 0.0" in lines
    assert any(line.startswith("temperature=0.0") and "max_new_tokens=5" in line for line in lines)
    answers = [line for line in lines if line.startswith("ROMEO:")]
    assert len(answers) == 2 and answers[0] == answers[1]  # greedy: the same twice
    assert any(line.startswith("error: unknown command '/bogus'") for line in lines)


def test_defaults_come_from_the_checkpoints_own_sampling_settings(tmp_path: Path) -> None:
    from gpt2load.native import save_native

    model = random_model(GPTConfig(n_layer=1, n_head=2, n_embd=8, context_length=8, vocab_size=50))
    run = tmp_path / "run"
    # What finetune saves with every checkpoint: its sampling settings, an unset top_k as null.
    save_native(model, run / "best", generation={"temperature": 0.3, "top_k": None,
                                                 "max_new_tokens": 33})  # fmt: skip
    expected = Settings(temperature=0.3, top_k=None, max_new_tokens=33)
    assert settings_from_checkpoint(run / "best") == expected
    assert settings_from_checkpoint(run / "best" / "model.safetensors") == expected
    save_native(
        model, run / "best", generation={"top_k": 7, "temperature": 0, "max_new_tokens": 100}
    )
    assert settings_from_checkpoint(run / "best") == Settings(
        temperature=0.0, top_k=7, max_new_tokens=100
    )
    save_native(model, tmp_path / "plain")
    assert settings_from_checkpoint(tmp_path / "plain") == Settings()
    # A Hugging Face folder's generation_config.json counts too (do_sample false: greedy).
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "generation_config.json").write_text('{"do_sample": false, "top_k": 5}')
    assert settings_from_checkpoint(tmp_path / "hf") == Settings(temperature=0.0, top_k=5)


def test_sampling_settings_the_console_would_refuse_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(
        '{"temperature": -2, "top_k": "lots", "top_p": 1.5, "max_new_tokens": 0}'
    )
    assert settings_from_checkpoint(tmp_path) == Settings()
    (tmp_path / "generation_config.json").write_text("not [json")
    assert settings_from_checkpoint(tmp_path) == Settings()


def test_help_and_bad_values_of_every_command_get_one_line(tokenizer) -> None:
    console, out = make_console(tokenizer)
    assert console.handle("/help")
    text = out.getvalue()
    for command in ("/temp", "/topk", "/topp", "/max", "/seed", "/settings", "/help", "/quit"):
        assert command in text
    bad = [
        "/topp 0", "/topp -0.1", "/topp 1.01", "/topp nan", "/topp x",
        "/seed -1", "/seed 1.5", "/seed 99999999999999999999999", f"/seed {2**63}",
        "/temp -1", "/temp nan", "/temp inf", "/max 0", "/max 2.5", "/topk 1.5",
    ]  # fmt: skip
    before = dataclasses.replace(console.settings)
    for line in bad:
        start = len(out.getvalue())
        assert console.handle(line)
        new = out.getvalue()[start:]
        assert new.startswith("error: bad value") and new.count("\n") == 1, (line, new)
    assert console.settings == before
    assert "[0, 2**63)" in out.getvalue()
    for line, value in (("/seed 0", 0), (f"/seed {2**63 - 1}", 2**63 - 1), ("/seed none", None)):
        assert console.handle(line) and console.settings.seed == value
    assert console.handle("/topp 1") and console.settings.top_p == 1.0
    assert console.handle("/topp off") and console.settings.top_p is None


def test_an_error_in_one_answer_is_one_line_and_the_console_goes_on(
    tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    console, out = make_console(tokenizer)
    console.settings.seed = 10**30  # past the command's check, as a bad run config could
    assert console.handle("ROMEO:")
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("error: ValueError: seed must be in [0, 2**63)"), lines

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    console.settings.seed = 1
    monkeypatch.setattr(console.model, "forward", broken)
    start = len(out.getvalue())
    assert console.handle("JULIET:")
    new = out.getvalue()[start:].splitlines()
    assert new == ["JULIET:", "error: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"]
    monkeypatch.undo()
    console.settings.max_new_tokens = 3
    assert console.handle("ROMEO:")  # still answering
    assert out.getvalue().splitlines()[-1].startswith("ROMEO:")


def test_a_fixed_seed_repeats_a_sampled_answer(tokenizer) -> None:
    console, out = make_console(tokenizer)
    for line in ("/temp 1.2", "/topk none", "/max 12", "/seed 7"):
        console.handle(line)
    answers = []
    for seed in ("7", "7", "8"):
        console.handle(f"/seed {seed}")
        start = len(out.getvalue())
        console.handle("ROMEO:")
        answers.append(out.getvalue()[start:])
    assert answers[0] == answers[1] != answers[2]
    assert len(answers[0]) > len("ROMEO:\n")


def test_bad_start_up_flags_exit_2_before_the_loop(
    tmp_path: Path,
    tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpt2load.cli import main

    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    for i, (flag, value) in enumerate(
        (
            ("--temperature", "-1"),
            ("--top-k", "0"),
            ("--top-p", "2"),
            ("--max-new-tokens", "0"),
            ("--seed", "99999999999999999999999"),
        )
    ):
        argv = ("chat", str(folder), "--device", "cpu", flag, value)
        if i == 0:  # one in a process of its own; the others in this one, which is faster
            result = run_cli(*argv, stdin="ROMEO:\n")
            code, out, err = result.returncode, result.stdout, result.stderr.strip()
        else:
            monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))
            code = main(list(argv))
            out, err = capsys.readouterr()
            err = err.strip()
        assert code == 2, (flag, out, err)
        assert out == ""  # no answer: the loop never ran
        assert err.startswith(f"gpt2load chat: error: {flag} ") and "\n" not in err, err


def test_start_up_flags_apply_silently(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    stdin = "/settings\nROMEO:\n"
    args = ("--temperature", "0", "--top-k", "none", "--max-new-tokens", "4", "--seed", "3")
    result = run_main(capsys, "chat", str(folder), "--device", "cpu", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "temperature=0.0  top_k=None  top_p=None  max_new_tokens=4  seed=3"
    assert not any(" = " in line for line in lines)  # no "temperature = 0.0" echo
    assert lines[1].startswith("ROMEO:") and len(lines) == 2


def test_console_script_runs_in_a_subprocess(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "console.py"), str(folder), "--device", "cpu",
         "--temperature", "0", "--max-new-tokens", "5"],
        cwd=tmp_path, input="ROMEO:\n/settings\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    chat = run_cli("chat", str(folder), "--device", "cpu", "--temperature", "0",
                   "--max-new-tokens", "5", stdin="ROMEO:\n/settings\n")  # fmt: skip
    assert result.stdout == chat.stdout
    assert result.stdout.startswith("ROMEO:") and "max_new_tokens=5" in result.stdout


class OutputReader:
    """Collects a child's stdout on a thread, so the test can wait for text with a timeout."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._data = bytearray()
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        fd = self._stream.fileno()
        while chunk := os.read(fd, 65536):
            with self._changed:
                self._data += chunk
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._data.decode("utf-8", errors="replace")

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = self._data.decode("utf-8", errors="replace")
                if predicate(text):
                    return text
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    ended = "the output ended" if self._ended else f"{timeout:.0f} s passed"
                    pytest.fail(f"waiting for {what}: {ended}; output so far: {text[-2000:]!r}")
                self._changed.wait(left)


def test_ctrl_c_stops_a_generation_but_not_the_console(tmp_path: Path, tokenizer_dir: Path) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2load", "chat", str(folder), "--device", "cpu"],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a background job: SIGINT ignored on the way in. The console must still
        # turn Ctrl-C into stopping the answer (it once inherited the ignore and ran on).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    reader = OutputReader(proc.stdout)
    try:
        # Ready: the model is loaded and the loop answers commands.
        proc.stdin.write(b"/max 1000000\n")
        proc.stdin.flush()
        reader.wait_for(lambda t: "max_new_tokens = 1000000\n" in t, 180, "the console")
        # A very long answer; interrupt it once it is visibly streaming.
        proc.stdin.write(b"ROMEO:\n")
        proc.stdin.flush()
        marker = "max_new_tokens = 1000000\nROMEO:"
        reader.wait_for(lambda t: len(t.partition(marker)[2]) >= 20, 120, "the answer")
        proc.send_signal(signal.SIGINT)
        reader.wait_for(lambda t: "[stopped]\n" in t, 120, "[stopped]")
        proc.stdin.write(b"/settings\n/quit\n")
        proc.stdin.close()
        proc.wait(timeout=120)
        out = reader.wait_for(lambda t: "max_new_tokens=1000000" in t, 10, "the settings")
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    answer, _, after = out.partition(marker)[2].partition("[stopped]")
    assert len(answer) < 1_000_000  # stopped early, not finished
    assert "max_new_tokens=1000000" in after  # the console went on after the interrupt


def test_bare_help_quit_and_exit_are_the_commands(tokenizer) -> None:
    console, out = make_console(tokenizer)
    assert console.handle("help\n") and "/temp" in out.getvalue()
    assert not console.handle(" Quit ") and not console.handle("exit")


def test_history_is_kept_in_the_cache_capped_and_a_broken_one_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readline = pytest.importorskip("readline")
    monkeypatch.delenv("GPT2LOAD_CHAT_HISTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert history_path() == tmp_path / "cache" / "gpt2load" / "chat_history"
    monkeypatch.setenv("GPT2LOAD_CHAT_HISTORY", "")
    assert history_path() is None  # empty: none kept
    old = tmp_path / "history"
    old.write_text("".join(f"prompt {i}\n" for i in range(HISTORY_LENGTH + 50)))
    with line_editing(old):
        assert readline.get_history_item(readline.get_current_history_length()).endswith("1049")
        readline.add_history("ROMEO:")
    lines = old.read_text().splitlines()
    assert len(lines) == HISTORY_LENGTH and lines[-1] == "ROMEO:" and lines[0] == "prompt 51"
    (tmp_path / "file").write_text("")  # where the history's folder should be
    warned = pytest.warns(UserWarning, match=r"cannot save the chat history to .*file/chat_hist")
    with warned, line_editing(tmp_path / "file" / "chat_history"):
        readline.add_history("JULIET:")
    readline.clear_history()


def test_console_script_takes_flags_before_the_model(tmp_path: Path, tokenizer_dir: Path) -> None:
    """``scripts/console.py --temperature 0 MODEL`` is ``gpt2load chat`` with those words in any
    order, as ``gpt2load chat --temperature 0 MODEL`` is; only no model at all means gpt2."""
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    flags = ["--device=cpu", "--temperature", "0", "--max-new-tokens", "5"]
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "console.py"), *flags, str(folder)],
        cwd=tmp_path, input="ROMEO:\n/settings\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and "max_new_tokens=5" in result.stdout
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from console import names_a_model
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    assert not names_a_model(["--temperature", "0.5", "--seed=1", "--help"])
    assert names_a_model(["--help", "gpt2-medium"]) and names_a_model(["runs/x", "--seed", "1"])
