"""``gpt2load chat`` in a pseudo-terminal, as a user at a keyboard has it: readline editing, a
history kept across sessions, Ctrl-D leaving on a fresh line."""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_cli_generate import make_checkpoint

pty = pytest.importorskip("pty")  # POSIX only
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Terminal:
    """A child on a pseudo-terminal: keys typed in, the screen's text read back."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            try:
                os.chdir(REPO_ROOT)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)  # never back into pytest
        self.raw = b""

    @property
    def text(self) -> str:
        """What was written, without colours, cursor moves and carriage returns."""
        return ESCAPES.sub("", self.raw.decode("utf-8", errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Some output within ``timeout`` seconds; False once the child closed the terminal."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child has gone
            return False
        self.raw += chunk
        return bool(chunk)

    def wait_for(self, predicate, what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                pytest.fail(f"waiting for {what}; the terminal so far: {self.text[-2000:]!r}")
        return self.text

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def finish(self, timeout: float = 30) -> int:
        """The exit code, once everything it wrote has been read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        for _ in range(int(timeout * 10)):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        pytest.fail(f"the console did not leave; the terminal: {self.text[-2000:]!r}")

    def close(self) -> None:
        os.close(self.fd)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def answers(text: str, prompt: str) -> list[str]:
    """The model's answers to ``prompt``: lines it starts (the typed echo starts with "> ")."""
    return [line for line in text.split("\n") if line.startswith(prompt)]


def answered(prompt: str, times: int):
    """Whether ``prompt`` was answered ``times`` times and the console waits for the next."""
    return lambda text: len(answers(text, prompt)) == times and text.endswith("> ")


def test_arrow_up_recalls_prompts_of_this_and_earlier_sessions(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    history = tmp_path / "cache" / "gpt2load" / "chat_history"
    history.parent.mkdir(parents=True)
    history.write_text("JULIET: from before\n")  # an earlier session's
    env = {k: v for k, v in os.environ.items() if k != "GPT2LOAD_CHAT_HISTORY"}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.update(TERM="xterm", INPUTRC=os.devnull)  # no user's key bindings (vi mode)
    argv = [sys.executable, "-m", "gpt2load", "chat", str(folder), "--device", "cpu",
            "--temperature", "0", "--max-new-tokens", "3"]  # fmt: skip
    term = Terminal(argv, env)
    try:
        ready = term.wait_for(lambda t: t.endswith("> "), "the first prompt")
        assert f"loaded {folder}" in ready and "float32 on cpu" in ready, ready
        term.type("\x1b[A\r")  # arrow up: the earlier session's prompt
        term.wait_for(answered("JULIET: from before", 1), "the recalled prompt's answer")
        term.type("ROMEO: once more\r")
        term.wait_for(answered("ROMEO: once more", 1), "the first answer")
        term.type("\x1b[A\r")  # arrow up: the prompt just typed, asked again
        out = term.wait_for(answered("ROMEO: once more", 2), "the second answer")
        first, second = answers(out, "ROMEO: once more")
        assert first == second  # greedy: the same answer to the same prompt
        term.type("\x04")  # Ctrl-D
        code = term.finish()
    finally:
        term.close()
    assert code == 0, term.text
    assert term.text.endswith("> \n"), term.text[-200:]  # the shell's prompt starts afresh
    assert "^[[A" not in term.text
    # This session's prompt added (a line repeating the one before is kept once).
    assert history.read_text().splitlines() == ["JULIET: from before", "ROMEO: once more"]
