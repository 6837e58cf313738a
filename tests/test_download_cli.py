"""The command line around downloads: one-line errors with exit code 2 (a failed download, an
unusable --device), --fast and --quiet as a user types them, and what --help promises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gpt2load.cli import main
from gpt2load.downloads.lock import exclusive_lock
from gpt2load.downloads.manifest import LOCK_NAME
from gpt2load.native import save_native
from tests import http_server
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model
from tests.http_server import (
    UNREACHABLE_MIRROR,
    FileServer,
)

pytestmark = pytest.mark.usefixtures("hermetic_releases")


def serve_release(server: FileServer, model: str, source: str) -> dict[str, bytes]:
    return http_server.serve_release(server, model, source, step=7_000)


def one_error_line(err: str, command: str, *, after_notes: bool = False) -> str:
    """The error line; ``after_notes``: retry notes (shown without --quiet) may come first."""
    assert "Traceback" not in err
    lines = err.splitlines()
    if after_notes:
        assert all("retry" in line for line in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gpt2load {command}: error: "), err
    return lines[0]


# -- failures are one line, exit code 2 ------------------------------------------------------
def test_failed_download_in_a_real_process(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GPT2LOAD_MIRROR": UNREACHABLE_MIRROR,
        "GPT2LOAD_BACKOFF": "0",
        "PYTHONPATH": str(REPO_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gpt2load", "download", "gpt2-large", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    line = one_error_line(result.stderr, "download")
    assert "giving up on http://127.0.0.1:9/" in line and "(Connection refused)" in line
    assert "--mirror" in line and "GPT2LOAD_WEIGHTS_DIR" in line  # the ways round
    assert result.stdout == ""
    assert not (tmp_path / "weights").exists()  # no empty folder to mistake for a download


def test_failed_download_on_first_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["generate", "gpt2-medium", "--prompt", "Hi", "--max-new-tokens", "2"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err, "generate", after_notes=True)
    assert "giving up on http://127.0.0.1:9/openai-community/gpt2-medium/" in line


def test_checksum_failure_is_one_line(
    server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_release(server, "gpt2", "hf")  # random bytes where 548,105,171 published ones belong
    assert main(["download", "gpt2", "--mirror", server.url, "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err, "download")
    assert "the expected size is 548105171 bytes" in line


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_native(random_model(TINY_CONFIGS["tiny"]), tmp_path / "ckpt")


@pytest.mark.parametrize("command", ["generate", "verify"])
def test_a_device_that_is_no_device(
    command: str, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, str(checkpoint), "--device", "gpu0"]) == 2
    line = one_error_line(capsys.readouterr().err, command)
    assert "--device 'gpu0' is not a device" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["generate", "verify", "compare"])
def test_cuda_without_a_gpu(
    command: str, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, str(checkpoint), "--device", "cuda:0"]
    argv += ["--prompt", "x"] if command == "compare" else []
    assert main(argv) == 2
    assert "no CUDA GPU is available" in one_error_line(capsys.readouterr().err, command)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_there_is_none(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(checkpoint), "--device", "mps"]) == 2
    assert "MPS backend is not available" in one_error_line(capsys.readouterr().err, "verify")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to count devices")
def test_a_cuda_index_past_the_last_gpu(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(checkpoint), "--device", "cuda:99"]) == 2
    assert "CUDA device(s) are visible" in one_error_line(capsys.readouterr().err, "verify")


# -- flags as typed --------------------------------------------------------------------------
def test_fast_flag_keeps_a_same_size_edit(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    argv = ["download", "gpt2-large", "--source", "openai", "--mirror", server.url, "--quiet"]
    assert main(argv) == 0
    folder = Path(capsys.readouterr().out.splitlines()[-1])
    edited = folder / "hparams.json"
    edited.write_bytes(bytes(b ^ 1 for b in contents["hparams.json"]))
    server.reset_log()
    assert main([*argv, "--fast"]) == 0
    assert server.count() == 0 and server.count(method="HEAD") == 0
    assert edited.read_bytes() != contents["hparams.json"]
    assert main(argv) == 0
    assert [r.path for r in server.log()] == ["/gpt-2/models/774M/hparams.json"]
    assert edited.read_bytes() == contents["hparams.json"]


def test_quiet_still_says_it_waits_for_a_lock(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_release(server, "gpt2-large", "openai")
    folder = tmp_path / "weights" / "gpt2-large" / "openai"
    argv = ["download", "gpt2-large", "--source", "openai", "--mirror", server.url, "--quiet"]
    codes: list[int] = []
    with exclusive_lock(folder / LOCK_NAME):  # another download holds the folder
        worker = threading.Thread(target=lambda: codes.append(main(argv)))
        worker.start()
        seen, deadline = "", time.monotonic() + 10
        while "waiting for another download" not in seen:
            assert time.monotonic() < deadline, f"no waiting message on stderr: {seen!r}"
            time.sleep(0.05)
            seen += capsys.readouterr().err
    worker.join(timeout=60)
    assert codes == [0]
    assert str(folder / LOCK_NAME) in seen
    assert "%" not in seen + capsys.readouterr().err  # and still no progress bars


def test_help_says_what_rasbt_fetches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["download", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "rasbt means its .safetensors files (for its .pth use --manifest)" in text
    assert "gpt2-small-124M.pth" in text
