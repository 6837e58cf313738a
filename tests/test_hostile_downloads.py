"""Downloads against hostile hosts, folders and disks (issue 13), through the real CLI against a
local HTTP server: a file that changed between attempts is never stitched, no file is written
through a symbolic link, credentials in URLs are never shown or stored, and a full disk, a
read-only folder or an impossible name ends in one line, with nothing half-written in place.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2load.cli import main
from gpt2load.downloads import download_file, transfer
from gpt2load.downloads.manifest import LOCK_NAME, RECORD_NAME
from tests.conftest import REPO_ROOT
from tests.http_server import EPOCH, Fault, FileServer, isolate_downloads

ORIGIN = "https://origin.invalid"  # never resolvable: only the mirror answers
OLD = os.urandom(200_000)
NEW = os.urandom(200_000)  # the same size: only the bytes differ
PATH = "/data.bin"


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_downloads(monkeypatch, tmp_path)


def write_manifest(tmp_path: Path, *entries: dict) -> Path:
    manifest = tmp_path / "files.json"
    manifest.write_text(json.dumps({"files": list(entries) or [{"url": f"{ORIGIN}{PATH}"}]}))
    return manifest


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["download", *args])
    out, err = capsys.readouterr()
    return code, out, err


def interrupted_run(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> int:
    """A first run that gives up at the first cut (as a Ctrl-C would): the bytes in the part."""
    with monkeypatch.context() as patch:
        patch.setattr(transfer, "DEFAULT_RETRIES", 0)
        code, _, err = cli(args, capsys)
    assert code == 2 and "bytes are kept in" in error_line(err)
    return code


def download_args(tmp_path: Path, server: FileServer, manifest: Path | None = None) -> list[str]:
    manifest = manifest or write_manifest(tmp_path)
    return ["x", "--manifest", str(manifest), "--dir", "w", "--mirror", server.url, "--quiet"]


def error_line(err: str) -> str:
    """The single ``gpt2load download: error:`` line, with no traceback before it."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpt2load download: error: "), err
    return lines[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recorded_sha(folder: Path, path: str = "data.bin") -> str:
    record = json.loads((folder / RECORD_NAME).read_text())
    return next(f["sha256"] for f in record["files"] if f["path"] == path)


# -- a file that changed between attempts ----------------------------------------------------
@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_file_changed_between_runs_is_fetched_whole_not_stitched(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    validator: str,
) -> None:
    no_etag = {"etag": None} if validator == "last-modified" else {}
    server.add(PATH, OLD, Fault(cut_after=120_000, **no_etag))
    args = download_args(tmp_path, server)
    interrupted_run(args, capsys, monkeypatch)
    part = tmp_path / "w" / "data.bin.part"
    have = part.stat().st_size
    assert have > 0 and part.read_bytes() == OLD[:have]

    server.add(PATH, NEW, Fault(**no_etag))  # the host now has another version
    server.reset_log()
    code, out, _ = cli(args, capsys)
    assert code == 0 and out.strip() == str(tmp_path / "w")
    assert (tmp_path / "w" / "data.bin").read_bytes() == NEW
    assert recorded_sha(tmp_path / "w") == sha256(NEW)
    (request,) = server.log(PATH)
    old_version = (
        f'"{hashlib.md5(OLD).hexdigest()}"'
        if validator == "etag"
        else email.utils.formatdate(EPOCH + 1, usegmt=True)
    )
    assert request.range == f"bytes={have}-" and request.headers["If-Range"] == old_version
    assert request.status == 200  # asked for the rest of the old version, got the new whole
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["data.bin", RECORD_NAME]


def test_same_file_resumes_with_if_range(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add(PATH, OLD, Fault(cut_after=120_000))
    args = download_args(tmp_path, server)
    interrupted_run(args, capsys, monkeypatch)
    have = (tmp_path / "w" / "data.bin.part").stat().st_size
    server.reset_log()
    assert cli(args, capsys)[0] == 0
    assert (tmp_path / "w" / "data.bin").read_bytes() == OLD
    first = server.log(PATH)[0]
    assert (first.range, first.status) == (f"bytes={have}-", 206)
    assert first.headers["If-Range"] == f'"{hashlib.md5(OLD).hexdigest()}"'


def test_server_ignoring_if_range_cannot_stitch_either(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add(PATH, OLD, Fault(cut_after=120_000))
    args = download_args(tmp_path, server)
    interrupted_run(args, capsys, monkeypatch)
    server.add(PATH, NEW, Fault(ignore_if_range=True))  # answers 206 with the new version
    server.reset_log()
    assert cli(args, capsys)[0] == 0
    assert (tmp_path / "w" / "data.bin").read_bytes() == NEW
    assert [r.status for r in server.log(PATH)] == [206, 200]  # the new ETag gave it away


def test_part_of_unknown_version_without_sha256_starts_over(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, NEW, Fault(etag=None, last_modified=None))  # no validator at all
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "data.bin.part").write_bytes(OLD[:100_000])  # no record of its version
    assert cli(download_args(tmp_path, server), capsys)[0] == 0
    assert (tmp_path / "w" / "data.bin").read_bytes() == NEW
    assert recorded_sha(tmp_path / "w") == sha256(NEW)
    assert [r.range for r in server.log(PATH)] == [None]


# -- symbolic links ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.bin.part", LOCK_NAME])
def test_link_where_the_downloader_writes_is_refused(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    server.add(PATH, NEW)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    missing = tmp_path / "created-outside"
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / name).symlink_to(outside)
    (folder / "dangling.lock").symlink_to(missing)  # harmless: not a name gpt2load uses
    code, _, err = cli(download_args(tmp_path, server), capsys)
    line = error_line(err)
    assert code == 2
    assert f"{folder / name}: is a symbolic link" in line and "remove the link" in line
    assert outside.read_bytes() == b"precious"
    assert not missing.exists()
    assert not (folder / "data.bin").exists() and (folder / name).is_symlink()
    assert server.count() == 0


def test_dangling_lock_link_creates_nothing_outside(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, NEW)
    target = tmp_path / "made-outside"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / LOCK_NAME).symlink_to(target)
    code, _, err = cli(download_args(tmp_path, server), capsys)
    assert code == 2 and "is a symbolic link" in error_line(err)
    assert not target.exists()


def test_links_at_side_file_and_final_name_are_replaced_not_followed(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, NEW)
    folder = tmp_path / "w"
    folder.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"precious")
    (folder / "data.bin.part.json").symlink_to(outside)
    (folder / RECORD_NAME).symlink_to(outside)
    (folder / "other.bin").write_bytes(b"kept as it is")
    (folder / "data.bin").symlink_to(folder / "other.bin")  # inside the folder: allowed, wrong
    assert cli(download_args(tmp_path, server), capsys)[0] == 0
    dest = folder / "data.bin"
    assert not dest.is_symlink() and dest.read_bytes() == NEW
    assert (folder / "other.bin").read_bytes() == b"kept as it is"
    assert outside.read_bytes() == b"precious"
    assert not os.path.lexists(folder / "data.bin.part.json")
    assert not (folder / RECORD_NAME).is_symlink() and recorded_sha(folder) == sha256(NEW)


def test_fifo_at_the_part_is_refused_without_waiting(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, NEW)
    (tmp_path / "w").mkdir()
    os.mkfifo(tmp_path / "w" / "data.bin.part")
    started = time.monotonic()
    code, _, err = cli(download_args(tmp_path, server), capsys)
    assert code == 2 and "is not a regular file" in error_line(err)
    assert time.monotonic() - started < 5


def test_a_fifo_where_the_file_should_be_is_replaced_unread(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What stands where a downloaded file goes is hashed only if it is a regular file: a
    FIFO would wait for a writer for ever. It is replaced, not read, and ``verify`` says what
    it is rather than "missing". (A link to a device is refused as a link out of the folder.)"""
    server.add(PATH, NEW)
    assert cli(download_args(tmp_path, server), capsys)[0] == 0
    dest = tmp_path / "w" / "data.bin"
    dest.unlink()
    os.mkfifo(dest)
    main(["verify", str(dest.parent), "--no-known-answer"])
    out = capsys.readouterr().out
    assert "data.bin: not a regular file" in out, out
    started = time.monotonic()
    assert cli(download_args(tmp_path, server), capsys)[0] == 0
    assert time.monotonic() - started < 5
    assert dest.read_bytes() == NEW


def test_download_file_onto_a_link_to_a_device_replaces_the_link_unread(
    server: FileServer, tmp_path: Path
) -> None:
    """``download_file`` has no folder to keep links inside: a link to /dev/zero at ``dest`` is
    never hashed (it never ends), it is replaced by the file."""
    server.add(PATH, NEW)
    dest = tmp_path / "data.bin"
    dest.symlink_to("/dev/zero")
    started = time.monotonic()
    download_file(f"{ORIGIN}{PATH}", dest, sha256=sha256(NEW), mirror=server.url, progress=False)
    assert time.monotonic() - started < 5
    assert not dest.is_symlink() and dest.read_bytes() == NEW


# -- credentials in URLs -----------------------------------------------------------------------
def test_credentials_are_used_but_never_shown_or_stored(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, NEW, Fault(fail_times=1, retry_after="0"))  # a retry note is shown
    host = server.url.removeprefix("http://")
    manifest = write_manifest(tmp_path, {"url": f"https://alice:manifest-pw@origin.invalid{PATH}"})
    mirror = f"http://bob:mirror-pw@{host}"
    code = main(["download", "x", "--manifest", str(manifest), "--dir", "w", "--mirror", mirror])
    out, err = capsys.readouterr()
    assert code == 0
    record = (tmp_path / "w" / RECORD_NAME).read_text()
    for shown in (out, err, record):
        assert "mirror-pw" not in shown and "manifest-pw" not in shown
    assert "retry 1 of 5" in err  # the note was shown, redacted
    assert json.loads(record)["files"][0]["url"] == f"https://***@origin.invalid{PATH}"
    auth = base64.b64encode(b"bob:mirror-pw").decode()
    assert server.log(PATH)[-1].headers["Authorization"] == f"Basic {auth}"  # still sent


@pytest.mark.parametrize("how", ["--mirror", "GPT2LOAD_MIRROR", "404"])
def test_credentials_are_redacted_in_errors(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    manifest = write_manifest(tmp_path)
    args = ["x", "--manifest", str(manifest), "--dir", "w", "--quiet"]
    if how == "404":  # the file is not there: the error names the URL it asked
        args += ["--mirror", server.url.replace("http://", "http://u:sekrit@")]
    elif how == "--mirror":  # unreachable: the retries' message names the URL
        args += ["--mirror", "http://u:sekrit@127.0.0.1:9"]
    else:
        monkeypatch.setenv("GPT2LOAD_MIRROR", "http://u:sekrit@127.0.0.1:9")
    code, _, err = cli(args, capsys)
    line = error_line(err)
    assert code == 2 and "sekrit" not in err
    assert "http://***@127.0.0.1:" in line


def test_bad_mirror_with_credentials_is_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["x", "--manifest", str(write_manifest(tmp_path)), "--mirror", "ftp://u:sekrit@h"]
    code, _, err = cli([*args, "--quiet"], capsys)
    assert code == 2 and "sekrit" not in err and "ftp://***@h" in error_line(err)


# -- messages that must not mislead ------------------------------------------------------------
def test_gzip_encoded_body_is_named_not_a_closed_connection(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add(PATH, gzip.compress(NEW), Fault(headers={"Content-Encoding": "gzip"}))
    code, _, err = cli(download_args(tmp_path, server), capsys)
    line = error_line(err)
    assert code == 2
    assert "Content-Encoding: gzip" in line and "connection closed" not in line
    assert server.count(PATH) == 1  # not retried: it would come the same way again
    assert not (tmp_path / "w").exists()  # nothing written: no folder left


def test_stalled_download_that_wrote_nothing_leaves_no_folder(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setattr(transfer, "DEFAULT_TIMEOUT", (2.0, 0.3))
    server.add(PATH, NEW, Fault(stall_after=0, stall_seconds=2.0, stall_times=100))
    started = time.monotonic()
    args = download_args(tmp_path, server)
    args[args.index("w")] = "deep/er/w"
    code, _, err = cli(args, capsys)
    assert code == 2 and "timed out" in error_line(err)
    assert time.monotonic() - started < 10
    assert server.count(PATH) == 6  # the first try and 5 retries, each silent
    assert list(tmp_path.iterdir()) == [tmp_path / "files.json"]  # not even deep/


# -- the disk and the folder -------------------------------------------------------------------
def run_cli_process(args: list[str], cwd: Path, *, fsize: int | None = None, as_user=False):
    """``python -m gpt2load download ARGS`` in a process of its own: with ``fsize``, files it
    writes may not grow past that many bytes (the kernel's EFBIG: a disk that fills up);
    ``as_user``: without root's power to write anywhere (a read-only folder stays so)."""

    def limits() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    command = [sys.executable, "-m", "gpt2load", "download", *args, "--quiet"]
    if as_user and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv is not there to drop root's file access")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, preexec_fn=limits
    )


def test_disk_full_is_one_line_and_leaves_no_file_in_place(
    server: FileServer, tmp_path: Path
) -> None:
    server.add(PATH, NEW)
    result = run_cli_process(download_args(tmp_path, server), tmp_path, fsize=64_000)
    line = error_line(result.stderr)
    assert result.returncode == 2 and result.stdout == ""
    assert f"{tmp_path / 'w' / 'data.bin.part'}: File too large" in line
    assert "(a partial download resumes)" in line
    assert not (tmp_path / "w" / "data.bin").exists()
    assert (tmp_path / "w" / "data.bin.part").stat().st_size <= 64_000
    assert not (tmp_path / "w" / RECORD_NAME).exists()


def test_read_only_destination_is_one_line(server: FileServer, tmp_path: Path) -> None:
    server.add(PATH, NEW)
    folder = tmp_path / "w"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = run_cli_process(download_args(tmp_path, server), tmp_path, as_user=True)
    finally:
        folder.chmod(0o755)
    line = error_line(result.stderr)
    assert result.returncode == 2
    assert f"{folder / LOCK_NAME}: Permission denied (no permission" in line
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("where", ["dir", "parent"])
def test_dir_that_is_a_file(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "w").write_bytes(b"a file")
    args = download_args(tmp_path, server)
    if where == "parent":
        args[args.index("w")] = "w/sub"
    code, _, err = cli(args, capsys)
    assert code == 2 and "not a folder" in error_line(err)
    assert (tmp_path / "w").read_bytes() == b"a file"
    assert server.count() == 0


@pytest.mark.parametrize("length", [300, 250])
def test_name_longer_than_the_file_system_allows(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], length: int
) -> None:
    name = "n" * length  # 250 fits, but not with the .part.json beside it
    manifest = write_manifest(tmp_path, {"url": f"{ORIGIN}{PATH}", "path": f"sub/{name}"})
    code, _, err = cli(download_args(tmp_path, server, manifest), capsys)
    line = error_line(err)
    assert code == 2 and f"is {length} bytes" in line and "at most 255 bytes" in line
    assert not (tmp_path / "w").exists() and server.count() == 0


def test_paths_a_and_a_slash_b_together(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(
        tmp_path, {"url": f"{ORIGIN}/1", "path": "a"}, {"url": f"{ORIGIN}/2", "path": "a/b"}
    )
    code, _, err = cli(download_args(tmp_path, server, manifest), capsys)
    assert code == 2
    assert "path 'a' is a file, but 'a/b' needs a folder of that name" in error_line(err)
    assert not (tmp_path / "w").exists() and server.count() == 0
