"""Without a network every command fails at once with the same advice (issue 15), and a mirror
that answered with other bytes is told so, not to find a reachable mirror."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import pytest

from finetune.cli import main as finetune_main
from gpt2load.cli import main as gpt2load_main
from gpt2load.downloads import download_file
from gpt2load.downloads.file import fetch
from gpt2load.downloads.transfer import Options, new_session
from gpt2load.errors import NO_NETWORK_ADVICE, RetriesExhaustedError
from gpt2load.releases import FileSpec
from tests.http_server import UNREACHABLE_MIRROR, FileServer

NOWHERE = "http://gpt2load-offline.invalid"  # .invalid never resolves (RFC 6761)
COMMANDS = {
    "generate": (gpt2load_main, ["generate", "gpt2", "--prompt", "Hi"]),
    "chat": (gpt2load_main, ["chat", "gpt2"]),
    "compare": (gpt2load_main, ["compare", "gpt2", "--prompt", "Hi", "--no-eval"]),
    "download": (gpt2load_main, ["download", "gpt2"]),
    "finetune": (finetune_main, ["shakespeare", "--init", "gpt2", "--force-cpu"]),
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every host unresolvable, nothing cached; the default backoff, so a retry would show."""
    for name in ("GPT2LOAD_MIRROR", "HF_ENDPOINT"):
        monkeypatch.setenv(name, NOWHERE)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tmp_path / "tokenizer"))
    for name in ("GPT2LOAD_BACKOFF", "GPT2LOAD_OFFLINE", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # chat: stdin closed
    monkeypatch.chdir(tmp_path)  # an empty data/ and runs/


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_offline_error_is_quick_and_gives_the_advice(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main, argv = COMMANDS[command]
    start = time.monotonic()
    code = main(argv)
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert took < 5, f"{took:.1f}s: {err}"  # no retries: five of them back off 31 s
    assert "Traceback" not in err and "retry" not in err, err
    assert len(err.strip().splitlines()) <= 3, err
    assert NO_NETWORK_ADVICE in err, err
    assert "does not resolve" in err, err


def test_switched_off_downloads_give_the_advice(
    no_network: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert gpt2load_main(["generate", "gpt2", "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err
    assert "downloads are switched off" in err and NO_NETWORK_ADVICE in err, err


def test_refused_connection_fails_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(RetriesExhaustedError, match="at once: connection failed") as info:
        download_file(f"{NOWHERE}/f.bin", tmp_path / "f.bin", mirror=UNREACHABLE_MIRROR)
    assert time.monotonic() - start < 5
    assert NO_NETWORK_ADVICE in str(info.value)


def test_a_host_that_answered_before_is_retried(tmp_path: Path) -> None:
    """Refused after it answered once: a flaky network, not an absent one."""
    opts = Options(new_session(), UNREACHABLE_MIRROR, progress=False, retries=2, backoff=0)
    opts.reached = True
    with pytest.raises(RetriesExhaustedError, match="after 3 failed attempts"):
        fetch(FileSpec(f"{NOWHERE}/f.bin", "f.bin"), tmp_path / "f.bin", opts)


def test_other_bytes_from_a_mirror_are_not_a_network_problem(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/f.bin", b"what the mirror has")
    published = hashlib.sha256(b"the published bytes").hexdigest()
    manifest = tmp_path / "files.json"
    manifest.write_text(json.dumps({"files": [{"url": f"{NOWHERE}/f.bin", "sha256": published}]}))
    argv = ["download", "x", "--manifest", str(manifest), "--dir", str(tmp_path / "w")]
    assert gpt2load_main([*argv, "--mirror", server.url, "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert "sha256 mismatch" in line and "serves other bytes than the published ones" in line
    assert "another mirror" in line
    assert "reachable mirror" not in line and "No network" not in line, line
    assert not (tmp_path / "w" / "f.bin").exists()
