"""Hosts, waits and time limits, end to end against the real local server: HF_ENDPOINT, the
Tiny Shakespeare download through the mirror, retry backoff that really waits, read timeouts.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from gpt2load import releases
from gpt2load.cli import main
from gpt2load.downloads import DownloadError, download, download_file, transfer
from gpt2load.downloads.manifest import read_record
from tests.conftest import SHAKESPEARE_TXT
from tests.http_server import (
    FAKE_TOKENIZER,
    Fault,
    FileServer,
)

ORIGIN = "https://origin.invalid"
DATA = os.urandom(100_000)
SHA = hashlib.sha256(DATA).hexdigest()


pytestmark = pytest.mark.usefixtures("hermetic_releases")


# -- HF_ENDPOINT -----------------------------------------------------------------------------
def test_hf_endpoint_serves_a_hugging_face_release(
    server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only $HF_ENDPOINT is set: the hub's files come from it, over plain http even."""
    monkeypatch.delenv("GPT2LOAD_MIRROR")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    built_in = releases.release("gpt2-medium", "hf")
    contents = {}
    for spec in built_in.files:
        if spec.path in FAKE_TOKENIZER:
            continue  # OpenAI's host, which HF_ENDPOINT does not cover: placed below instead
        contents[spec.path] = os.urandom(5_000)
        server.add_url(spec.url, contents[spec.path])  # with the hub's 302 + X-Linked-Etag
    folder = tmp_path / "weights" / "gpt2-medium" / "hf"
    folder.mkdir(parents=True)
    for name, data in FAKE_TOKENIZER.items():
        (folder / name).write_bytes(data)  # right by their published sha256: kept
    assert main(["download", "gpt2-medium", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(folder)
    for name, data in contents.items():
        assert (folder / name).read_bytes() == data
    paths = {r.path for r in server.log()}
    assert paths == {
        "/openai-community/gpt2-medium/resolve/main/config.json",
        "/openai-community/gpt2-medium/resolve/main/model.safetensors",
    } | {f"/_cdn/{hashlib.sha256(d).hexdigest()}" for d in contents.values()}
    record = read_record(folder)
    assert record.file("model.safetensors").url.startswith("https://huggingface.co/")


def test_hf_endpoint_does_not_move_other_hosts(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT2LOAD_MIRROR")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    manifest = {"files": [{"url": "http://elsewhere.invalid/x.bin"}]}
    with pytest.raises(ValueError, match="refusing plain http"):
        download("m", manifest=manifest, progress=False)
    assert server.count() == 0


# -- Tiny Shakespeare through the mirror -----------------------------------------------------
SHAKESPEARE_PATH = "/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


@pytest.fixture
def shakespeare() -> bytes:
    if not SHAKESPEARE_TXT.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE_TXT}")
    return SHAKESPEARE_TXT.read_bytes()


def test_shakespeare_comes_through_the_mirror(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shakespeare: bytes
) -> None:
    from finetune.prepare import fetch_shakespeare

    server.add(SHAKESPEARE_PATH, shakespeare, Fault(cut_after=300_000))  # and resumes
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    path = fetch_shakespeare(tmp_path / "data", log=lambda _: None)
    assert path == tmp_path / "data" / "shakespeare" / "input.txt"
    assert path.read_bytes() == shakespeare
    assert [r.range for r in server.log()][0] is None and server.log()[1].range is not None
    assert sorted(p.name for p in path.parent.iterdir()) == ["input.txt"]  # no part, no lock
    server.reset_log()
    assert fetch_shakespeare(tmp_path / "data", log=lambda _: None) == path
    assert server.count() == 0


def test_shakespeare_with_wrong_bytes_is_refused(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shakespeare: bytes
) -> None:
    from finetune.errors import DataError
    from finetune.prepare import fetch_shakespeare

    server.add(SHAKESPEARE_PATH, shakespeare, Fault(corrupt_at=12_345))
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch_shakespeare(tmp_path / "data", log=lambda _: None)
    assert not (tmp_path / "data" / "shakespeare" / "input.txt").exists()


# -- retries really wait ---------------------------------------------------------------------
def test_backoff_doubles_between_attempts(server: FileServer, tmp_path: Path) -> None:
    server.add("/d.bin", DATA, Fault(fail_times=3))
    download_file(
        f"{ORIGIN}/d.bin", tmp_path / "d.bin", sha256=SHA, mirror=server.url, progress=False,
        backoff=0.2,
    )  # fmt: skip
    times = [r.time for r in server.log("/d.bin")]
    assert [r.status for r in server.log("/d.bin")] == [503, 503, 503, 200]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, wanted in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert gap >= wanted * 0.95, (gaps, "backoff 0.2 s doubling")
    assert gaps[2] < 3.0  # and not wildly more


def test_backoff_comes_from_the_environment(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT2LOAD_BACKOFF", "0.3")
    server.add("/d.bin", DATA, Fault(fail_times=1, fail_status=500))
    download_file(f"{ORIGIN}/d.bin", tmp_path / "d.bin", mirror=server.url, progress=False)
    first, second = server.log("/d.bin")
    assert second.time - first.time >= 0.3 * 0.95


def test_retry_after_is_honoured(server: FileServer, tmp_path: Path) -> None:
    server.add("/d.bin", DATA, Fault(fail_times=1, fail_status=429, retry_after="1"))
    download_file(
        f"{ORIGIN}/d.bin", tmp_path / "d.bin", mirror=server.url, progress=False, backoff=0
    )
    first, second = server.log("/d.bin")
    assert second.time - first.time >= 0.95


# -- time limits -----------------------------------------------------------------------------
def test_default_read_timeout_applies_to_a_stalled_body(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timeout= given: the module's (connect, read) default is what cuts the stall short."""
    monkeypatch.setattr(transfer, "DEFAULT_TIMEOUT", (5.0, 0.4))
    server.add("/d.bin", DATA, Fault(stall_after=10_000, stall_seconds=6.0))
    dest = tmp_path / "d.bin"
    started = time.monotonic()
    download_file(f"{ORIGIN}/d.bin", dest, sha256=SHA, mirror=server.url, progress=False)
    assert time.monotonic() - started < 4.0  # the client gave up on the stall, not the server
    assert dest.read_bytes() == DATA
    assert server.count("/d.bin") == 2


def test_a_server_that_never_answers_is_retried(server: FileServer, tmp_path: Path) -> None:
    server.add("/d.bin", DATA, Fault(hang_seconds=4.0, hang_times=1))
    dest = tmp_path / "d.bin"
    download_file(
        f"{ORIGIN}/d.bin", dest, sha256=SHA, mirror=server.url, progress=False, timeout=(5.0, 0.4)
    )
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.log("/d.bin")] == [0, 200]


def test_a_release_passes_its_timeout_to_every_file(server: FileServer, tmp_path: Path) -> None:
    data = os.urandom(20_000)
    server.add("/r/a.bin", data, Fault(hang_seconds=4.0, hang_times=5))
    manifest = {"files": [{"url": f"{ORIGIN}/r/a.bin"}]}
    with pytest.raises(DownloadError, match="after 2 failed attempts \\(timed out\\)"):
        download("m", manifest=manifest, mirror=server.url, progress=False, retries=1, timeout=0.3)
    assert server.count("/r/a.bin") == 2


def test_default_timeouts_cover_connect_and_read() -> None:
    connect, read = transfer.DEFAULT_TIMEOUT
    assert 0 < connect <= 30 and 0 < read <= 300


# -- addresses that are no URLs ------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "value", "reason"),
    [
        ("GPT2LOAD_MIRROR", "http://user:pw@127.0.0.1:abc", "Port could not be cast"),
        ("--mirror", "http://127.0.0.1:99999", "Port out of range"),
        ("manifest", "https://user:pw@example.invalid:99999/a.bin", "Port out of range"),
        ("HF_ENDPOINT", "http://[::1", "Invalid IPv6 URL"),
    ],
)
def test_a_bad_address_is_one_line_naming_it_before_any_folder(
    where: str,
    value: str,
    reason: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port that is no number or past 65535, or a broken IPv6 bracket, in a mirror, a
    manifest or HF_ENDPOINT: one line naming where it came from, credentials hidden, exit 2,
    and no folder made (requests would only find it mid-download, in a traceback)."""
    argv = ["download", "gpt2", "--quiet"]
    if where in ("GPT2LOAD_MIRROR", "HF_ENDPOINT"):
        monkeypatch.setenv(where, value)
        argv[1] = "org/tiny" if where == "HF_ENDPOINT" else "gpt2"
    elif where == "--mirror":
        argv += ["--mirror", value]
    else:
        manifest = tmp_path / "m.json"
        manifest.write_text(json.dumps({"files": [{"url": value}]}))
        argv = ["download", "mine", "--manifest", str(manifest), "--quiet"]
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert reason in err and "is not a valid URL" in err, err
    assert (where if where != "manifest" else "the download URL") in err
    assert "pw" not in err and ("***@" in err or "@" not in value)
    assert set(tmp_path.rglob("*")) == before


def test_a_redirect_to_a_bad_address_is_one_line(tmp_path: Path) -> None:
    """A server redirecting to a URL with a broken port: the download fails in one line that
    names the redirect, rather than in requests' InvalidURL."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:abc/d.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        mirror = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            with pytest.raises(DownloadError, match=r"redirect target of .* is not a valid URL"):
                download_file(f"{ORIGIN}/d.bin", tmp_path / "d.bin", mirror=mirror, progress=False)
        finally:
            httpd.shutdown()
    assert not (tmp_path / "d.bin").exists()
