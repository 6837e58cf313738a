"""download_file against a real local HTTP server: resuming, retries, digests, hosts, locks."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from gpt2load.downloads import ChecksumError, DownloadError, download_file, transfer
from gpt2load.downloads.hosts import effective_url, scheme_allowed
from tests.http_server import Fault, FileServer, isolate_downloads

ORIGIN = "https://origin.invalid"  # never resolvable: only the mirror can answer
DATA = os.urandom(200_000)  # several transfer chunks, so a cut lands mid-file
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_downloads(monkeypatch, tmp_path)


def fetch(server: FileServer, dest: Path, fault: Fault | None = None, **kwargs) -> Path:
    if "/data.bin" not in server.files:
        server.add("/data.bin", DATA, fault)
    kwargs.setdefault("progress", False)
    return download_file(f"{ORIGIN}/data.bin", dest, mirror=server.url, **kwargs)


def leftovers(folder: Path) -> list[str]:
    """What a download left in ``folder`` besides lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_fetches_and_checks_a_file(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    assert fetch(server, dest, size=len(DATA), sha256=SHA) == dest
    assert dest.read_bytes() == DATA
    assert leftovers(dest.parent) == ["data.bin"]
    assert server.count("/data.bin") == 1


def test_cut_connection_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, Fault(cut_after=150_000), sha256=SHA)
    assert dest.read_bytes() == DATA
    first, second = server.log("/data.bin")
    assert first.range is None
    start = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 150_000
    assert second.status == 206
    assert server.bytes_sent == 150_000 + len(DATA) - start


def test_part_left_by_an_earlier_run_is_resumed(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA[:100_000])
    fetch(server, dest, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert [r.range for r in server.log("/data.bin")] == ["bytes=100000-"]


def test_bad_bytes_left_by_an_earlier_run_are_fetched_again(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"\0" * 100_000)
    fetch(server, dest, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert [r.range for r in server.log("/data.bin")] == ["bytes=100000-", None]


def test_complete_part_of_unknown_size_is_finished_by_a_416(
    server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(DATA)
    fetch(server, dest, sha256=SHA)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.log("/data.bin")] == [416]


def test_server_ignoring_range_restarts_the_file(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, Fault(cut_after=120_000, ignore_range=True), sha256=SHA)
    assert dest.read_bytes() == DATA
    first, second = server.log("/data.bin")
    assert second.range is not None and second.status == 200


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_errors_are_retried(server: FileServer, tmp_path: Path, status: int) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, Fault(fail_times=2, fail_status=status, retry_after="0"), sha256=SHA)
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.log("/data.bin")] == [status, status, 200]


def test_retries_run_out(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="after 3 failed attempts") as info:
        fetch(server, tmp_path / "data.bin", Fault(status=503), retries=2)
    assert server.url in str(info.value)
    assert server.count("/data.bin") == 3
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [404, 403])
def test_permanent_errors_fail_at_once(server: FileServer, tmp_path: Path, status: int) -> None:
    with pytest.raises(DownloadError, match=f"HTTP {status}") as info:
        fetch(server, tmp_path / "data.bin", Fault(status=status))
    assert f"{server.url}/data.bin" in str(info.value)
    assert server.count("/data.bin") == 1
    assert leftovers(tmp_path) == []


def test_missing_file_is_a_404_with_its_url(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=f"HTTP 404 .* for {server.url}/nothing.bin"):
        download_file(f"{ORIGIN}/nothing.bin", tmp_path / "x", mirror=server.url, progress=False)


def test_corrupt_bytes_are_rejected_and_removed(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError) as info:
        fetch(server, tmp_path / "data.bin", Fault(corrupt_at=54_321), sha256=SHA)
    message = str(info.value)
    actual = bytearray(DATA)
    actual[54_321] ^= 0xFF
    assert "data.bin" in message
    assert SHA in message
    assert hashlib.sha256(actual).hexdigest() in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(corrupt_at=10, content_md5=True),
        Fault(corrupt_at=10, sha256_etag=True),
        Fault(corrupt_at=10, hub_redirect=True),
        Fault(corrupt_at=10, headers={"x-ms-blob-content-md5": "placeholder"}),
    ],
    ids=["content-md5", "etag", "x-linked-etag", "azure-md5"],
)
def test_server_digests_catch_corruption(server: FileServer, tmp_path: Path, fault: Fault) -> None:
    if "x-ms-blob-content-md5" in fault.headers:
        import base64

        fault.headers["x-ms-blob-content-md5"] = base64.b64encode(
            hashlib.md5(DATA).digest()
        ).decode()
    with pytest.raises(ChecksumError, match="mismatch: the server's"):
        fetch(server, tmp_path / "data.bin", fault)  # no sha256 of our own: the server's only
    assert leftovers(tmp_path) == []


def test_right_server_digests_pass(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, Fault(hub_redirect=True, content_md5=True, cut_after=70_000))
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.log()] == [302, 200, 302, 206]


def test_server_vouching_for_other_bytes_is_rejected(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="X-Linked-Etag says 0{64}"):
        fetch(server, tmp_path / "data.bin", Fault(hub_redirect=True, claimed_sha256="0" * 64))


def test_size_disagreement_is_caught_from_the_headers(server: FileServer, tmp_path: Path) -> None:
    message = f"the expected size is {len(DATA) + 1} bytes, .*Content-Length says {len(DATA)}"
    with pytest.raises(ChecksumError, match=message):
        fetch(server, tmp_path / "data.bin", size=len(DATA) + 1)
    assert leftovers(tmp_path) == []


def test_read_timeout_is_retried(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fault = Fault(stall_after=1_000, stall_seconds=3.0)
    fetch(server, dest, fault, sha256=SHA, timeout=(5.0, 0.5))
    assert dest.read_bytes() == DATA
    assert server.count("/data.bin") == 2


def test_a_file_in_place_costs_no_request(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=SHA)
    server.reset_log()
    for fast in (False, True):
        assert fetch(server, dest, sha256=SHA, size=len(DATA), fast=fast) == dest
    assert server.count() == 0


def test_a_wrong_file_in_place_is_replaced(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"x" * len(DATA))
    fetch(server, dest, sha256=SHA)
    assert dest.read_bytes() == DATA


def test_force_fetches_again(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=SHA)
    fetch(server, dest, sha256=SHA, force=True)
    assert server.count("/data.bin") == 2


def test_plain_http_needs_an_explicit_mirror(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT2LOAD_MIRROR")
    server.add("/data.bin", DATA)
    with pytest.raises(ValueError, match="refusing plain http"):
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", progress=False)
    assert server.count() == 0
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    download_file(f"{ORIGIN}/data.bin", tmp_path / "data.bin", sha256=SHA, progress=False)
    assert (tmp_path / "data.bin").read_bytes() == DATA


def test_mirror_may_carry_a_path_prefix(server: FileServer, tmp_path: Path) -> None:
    server.add("/mirror/root/data.bin", DATA)
    dest = tmp_path / "data.bin"
    download_file(f"{ORIGIN}/data.bin", dest, mirror=f"{server.url}/mirror/root/", progress=False)
    assert dest.read_bytes() == DATA


def test_host_rewriting_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPT2LOAD_MIRROR")
    hf = "https://huggingface.co/openai-community/gpt2/resolve/main/config.json"
    blob = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
    assert effective_url(hf) == (hf, False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert effective_url(hf)[0] == (
        "https://hf-mirror.example/openai-community/gpt2/resolve/main/config.json"
    )
    assert effective_url(blob) == (blob, False)  # HF_ENDPOINT is for Hugging Face only
    monkeypatch.setenv("GPT2LOAD_MIRROR", "http://lan:8080")
    assert effective_url(blob) == ("http://lan:8080/gpt-2/encodings/main/vocab.bpe", True)
    assert effective_url(hf)[0].startswith("http://lan:8080/openai-community/")
    assert effective_url(hf, "https://explicit.example")[0].startswith("https://explicit.example/")
    with pytest.raises(ValueError, match="--mirror"):
        effective_url(hf, "ftp://nope")
    assert scheme_allowed("https://x/y", allow_http=False)
    assert not scheme_allowed("http://x/y", allow_http=False)
    assert scheme_allowed("http://x/y", allow_http=True)


def test_offline_uses_files_in_place_only(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "data.bin"
    fetch(server, dest, sha256=SHA)
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    assert fetch(server, dest, sha256=SHA) == dest
    with pytest.raises(DownloadError, match="switched off"):
        fetch(server, tmp_path / "other.bin")
    assert server.count() == 1


def test_concurrent_downloads_of_one_file_take_turns(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    server.add("/data.bin", DATA, Fault(fail_times=1))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fetch(server, dest, sha256=SHA, backoff=0.2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert dest.read_bytes() == DATA
    assert [r.status for r in server.log("/data.bin")] == [503, 200]


def test_progress_bar_shows_bytes_and_rate(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fetch(server, tmp_path / "data.bin", progress=True)
    err = capsys.readouterr().err
    assert "data.bin" in err and "B/s" in err and "100%" in err


def test_retry_timing_helpers() -> None:
    assert [transfer.retry_delay(n, 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert transfer.retry_delay(20, 1.0) == transfer.MAX_BACKOFF
    assert transfer.retry_delay(1, 0.0, retry_after=3.0) == 3.0
    assert transfer._retry_after("7") == 7.0
    assert transfer._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert transfer._content_range("bytes 10-99/100") == (10, 100)
    assert transfer._content_range("bytes */100") == (None, 100)
