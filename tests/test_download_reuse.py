"""download() run again: what it trusts, what it re-checks, what it writes, and what it refuses
before writing anything. Against the real local HTTP server, as everywhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

import gpt2load
from gpt2load import releases
from gpt2load.downloads import DownloadError, download, download_file
from gpt2load.downloads.lock import exclusive_lock
from gpt2load.downloads.manifest import LOCK_NAME, RECORD_NAME, read_record, safe_relative_path
from gpt2load.native import save_native
from tests.conftest import TINY_CONFIGS, random_model
from tests.http_server import (
    FAKE_TOKENIZER,
    Fault,
    FileServer,
    serve_release,
)

ORIGIN = "https://models.invalid"


pytestmark = pytest.mark.usefixtures("hermetic_releases")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` with its size and modification time, hidden files too."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def manifest_of(*entries: tuple[str, str, bytes | None]) -> dict:
    """A custom manifest: (url path, file path, bytes to publish the size and hash of, or None)."""
    files = []
    for url_path, path, published in entries:
        entry = {"url": f"{ORIGIN}{url_path}", "path": path}
        if published is not None:
            entry.update(size=len(published), sha256=hashlib.sha256(published).hexdigest())
        files.append(entry)
    return {"files": files}


# -- 5: reuse writes nothing -----------------------------------------------------------------
def test_fast_reuse_of_a_recorded_folder_writes_nothing(server: FileServer) -> None:
    serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    before = snapshot(folder)
    assert LOCK_NAME not in before  # the lock file goes when the download is done
    server.reset_log()
    time.sleep(0.01)  # a rewrite would show as a later mtime
    for fast in (True, False):
        assert download("gpt2-large", source="openai", progress=False, fast=fast) == folder
    assert gpt2load.resolve("gpt2-large", source="openai") == folder
    assert snapshot(folder) == before
    assert server.count() == 0 and server.count(method="HEAD") == 0


def test_reuse_works_in_a_folder_nobody_may_write(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2load.downloads import fetch as fetch_module

    serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only folder")

    # chmod does not stop root (tests may run as root): refuse every way of writing instead.
    monkeypatch.setattr(fetch_module, "exclusive_lock", refuse)
    monkeypatch.setattr(fetch_module, "write_record", refuse)
    monkeypatch.setattr(Path, "mkdir", refuse)
    folder.chmod(0o555)
    try:
        assert gpt2load.resolve("774M", source="openai") == folder
        assert download("gpt2-large", source="openai", progress=False) == folder
    finally:
        folder.chmod(0o755)


def test_load_by_name_downloads_on_first_use_then_needs_no_network(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpt2load.load("gpt2-medium"): fetched through $GPT2LOAD_MIRROR once, then reused offline."""
    from gpt2load.formats import convert

    model = random_model(TINY_CONFIGS["tiny"], seed=7)
    hf_files = tmp_path / "hf-layout"
    convert(save_native(model, tmp_path / "native"), hf_files, "hf")
    for spec in releases.release("gpt2-medium", "hf").files:
        data = FAKE_TOKENIZER.get(spec.path) or (hf_files / spec.path).read_bytes()
        server.add_url(spec.url, data)
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    first = gpt2load.load("gpt2-medium")
    folder = tmp_path / "weights" / "gpt2-medium" / "hf"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors", "encoder.json", "vocab.bpe", RECORD_NAME]
    )
    assert server.count() > 0
    before = snapshot(folder)
    server.stop()  # any request now fails: the second load must not make one
    second = gpt2load.load("gpt2-medium")
    assert snapshot(folder) == before
    idx = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(first(idx), second(idx))
        torch.testing.assert_close(first(idx), model(idx))


# -- --fast ----------------------------------------------------------------------------------
def test_fast_keeps_a_same_size_edit_and_a_normal_run_replaces_it(server: FileServer) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    edited = folder / "model.ckpt.meta"
    original = contents["model.ckpt.meta"]
    other = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, other bytes (always)
    edited.write_bytes(other)
    server.reset_log()
    download("gpt2-large", source="openai", mirror=server.url, progress=False, fast=True)
    assert server.count() == 0 and server.count(method="HEAD") == 0
    assert edited.read_bytes() == other  # --fast trusted the size
    download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert [r.path for r in server.log()] == ["/gpt-2/models/774M/model.ckpt.meta"]
    assert edited.read_bytes() == contents["model.ckpt.meta"]


def test_a_wrong_file_in_place_is_kept_until_its_replacement_is_checked(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file in place that fails its check stays until a checked download is renamed over
    it: offline, or with the host gone, the folder is left no worse than it was."""
    contents = serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    edited, mine = folder / "hparams.json", b'{"n_layer": 1}'
    edited.write_bytes(mine)
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    kept = r"hparams.json in .* has 14 bytes, expected \d+ \(kept as it is\) and downloads are"
    with pytest.raises(DownloadError, match=kept):
        download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert edited.read_bytes() == mine
    monkeypatch.delenv("GPT2LOAD_OFFLINE")
    with pytest.raises(DownloadError, match="giving up"):
        download("gpt2-large", source="openai", mirror="http://127.0.0.1:9", progress=False)
    assert edited.read_bytes() == mine
    download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert edited.read_bytes() == contents["hparams.json"]


def test_a_single_file_download_that_fails_leaves_no_folder(tmp_path: Path) -> None:
    """``download_file`` into folders that do not exist yet: when it fails, they are gone
    again (the lock file it made in them included), as after a failed ``download``."""
    dest = tmp_path / "a" / "b" / "f.bin"
    with pytest.raises(DownloadError, match="giving up"):
        download_file(f"{ORIGIN}/f.bin", dest, mirror="http://127.0.0.1:9", progress=False)
    assert not (tmp_path / "a").exists()


# -- 3: the record, file by file -------------------------------------------------------------
def test_a_release_failing_midway_records_what_it_verified(
    server: FileServer, tmp_path: Path
) -> None:
    a, b = os.urandom(5_000), os.urandom(6_000)
    server.add("/r/a.bin", a)
    server.add("/r/b.bin", b)  # c.bin is missing: 404
    manifest = manifest_of(
        ("/r/a.bin", "a.bin", a), ("/r/b.bin", "b.bin", None), ("/r/c", "c", None)
    )
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("m", manifest=manifest, mirror=server.url, progress=False)
    record = read_record(tmp_path / "weights" / "m" / "custom")
    assert record is not None
    assert [(e.path, e.sha256) for e in record.files] == [
        ("a.bin", hashlib.sha256(a).hexdigest()),
        ("b.bin", hashlib.sha256(b).hexdigest()),
    ]
    server.add("/r/c", b"now here")
    server.reset_log()
    download("m", manifest=manifest, mirror=server.url, progress=False)
    assert [r.path for r in server.log()] == ["/r/c"]  # b.bin is trusted through the record
    assert server.count(method="HEAD") == 0


def test_unrecorded_file_without_published_facts_is_fetched_again(
    server: FileServer, tmp_path: Path
) -> None:
    good = os.urandom(4_000)
    server.add("/r/x.bin", good)
    folder = tmp_path / "weights" / "m" / "custom"
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(os.urandom(4_000))  # same size, wrong bytes, no record
    download(
        "m", manifest=manifest_of(("/r/x.bin", "x.bin", None)), mirror=server.url, progress=False
    )
    assert (folder / "x.bin").read_bytes() == good
    assert server.count() == 1


def test_unrecorded_file_with_a_size_but_no_hash_is_not_proved_by_its_size(
    server: FileServer, tmp_path: Path
) -> None:
    good = os.urandom(4_000)
    server.add("/r/x.bin", good)  # no digest headers
    folder = tmp_path / "weights" / "m" / "custom"
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(os.urandom(4_000))  # the published size, other bytes
    manifest = {"files": [{"url": f"{ORIGIN}/r/x.bin", "size": 4_000}]}
    download("m", manifest=manifest, mirror=server.url, progress=False, fast=True)
    assert server.count() == 0 and server.count(method="HEAD") == 0  # --fast: size is enough
    (folder / RECORD_NAME).unlink()
    download("m", manifest=manifest, mirror=server.url, progress=False)
    assert server.count(method="HEAD") == 1 and server.count() == 1
    assert (folder / "x.bin").read_bytes() == good


def test_unrecorded_file_is_proved_by_the_servers_digest_without_a_download(
    server: FileServer, tmp_path: Path
) -> None:
    good = os.urandom(4_000)
    server.add("/r/x.bin", good, Fault(hub_redirect=True))  # HEAD answers with its sha256
    folder = tmp_path / "weights" / "m" / "custom"
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(good)
    manifest = manifest_of(("/r/x.bin", "x.bin", None))
    download("m", manifest=manifest, mirror=server.url, progress=False)
    assert server.count() == 0
    assert [r.status for r in server.log(method="HEAD")] == [302, 200]  # to the CDN and back
    assert read_record(folder).file("x.bin").sha256 == hashlib.sha256(good).hexdigest()
    (folder / RECORD_NAME).unlink()
    (folder / "x.bin").write_bytes(b"\0" * len(good))  # the digest disagrees: fetch again
    download("m", manifest=manifest, mirror=server.url, progress=False)
    assert (folder / "x.bin").read_bytes() == good
    assert server.count() == 2  # the 302 to the CDN path and the file itself


def test_a_record_from_another_url_is_not_reused(server: FileServer, tmp_path: Path) -> None:
    old, new = os.urandom(3_000), os.urandom(3_000)
    server.add("/v1/w.bin", old)
    server.add("/v2/w.bin", new)
    folder = download(
        "m", manifest=manifest_of(("/v1/w.bin", "w.bin", None)), mirror=server.url, progress=False
    )
    server.reset_log()
    download(
        "m", manifest=manifest_of(("/v2/w.bin", "w.bin", None)), mirror=server.url, progress=False
    )
    assert (folder / "w.bin").read_bytes() == new
    assert [r.path for r in server.log()] == ["/v2/w.bin"]
    assert read_record(folder).file("w.bin").url == f"{ORIGIN}/v2/w.bin"


# -- 4 and 7: everything is checked before anything is written -------------------------------
def test_a_bad_url_anywhere_leaves_nothing_behind(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first file would download fine (HF_ENDPOINT may be plain http); the second names
    # plain http with no mirror at all, which is refused: before anything is written.
    monkeypatch.delenv("GPT2LOAD_MIRROR")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    server.add("/org/m/resolve/main/a.bin", b"a")
    manifest = {
        "files": [
            {"url": "https://huggingface.co/org/m/resolve/main/a.bin"},
            {"url": "http://plain.example/b.bin"},
        ]
    }
    with pytest.raises(ValueError, match="refusing plain http for http://plain.example/b.bin"):
        download("m", manifest=manifest, progress=False)
    assert not (tmp_path / "weights").exists()
    assert server.count() == 0


def test_a_bad_mirror_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--mirror"):
        download("gpt2-large", source="openai", mirror="ftp://mirror.example", progress=False)
    assert not (tmp_path / "weights").exists()


def test_a_linked_sub_folder_cannot_lead_outside(server: FileServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "target"
    folder.mkdir()
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    server.add("/x.bin", b"payload")
    manifest = {"files": [{"url": f"{ORIGIN}/x.bin", "path": "sub/x.bin"}]}
    with pytest.raises(ValueError, match="leads outside"):
        download("m", manifest=manifest, dir=folder, mirror=server.url, progress=False)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in folder.iterdir()) == ["sub"]  # no lock, no record
    assert server.count() == 0


def test_a_linked_file_cannot_lead_outside(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("keep")
    folder = tmp_path / "target"
    folder.mkdir()
    (folder / "x.bin").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="leads outside"):
        safe_relative_path("x.bin", folder=folder)
    assert safe_relative_path("y/z.bin", folder=folder) == "y/z.bin"  # nothing there yet: fine
    (folder / "inner").symlink_to(folder / "y", target_is_directory=True)
    assert safe_relative_path("inner/z.bin", folder=folder) == "inner/z.bin"  # stays inside


# -- lock files ------------------------------------------------------------------------------
def test_lock_files_do_not_pile_up(server: FileServer, tmp_path: Path) -> None:
    server.add("/one.bin", b"1" * 1000)
    dest = tmp_path / "files" / "one.bin"
    download_file(f"{ORIGIN}/one.bin", dest, mirror=server.url, progress=False)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["one.bin"]


def test_a_waiter_takes_over_a_removed_lock_file(tmp_path: Path) -> None:
    """The holder removes the lock file; a waiter must not then share a lock with a newcomer."""
    path = tmp_path / "x.lock"
    inside = threading.Lock()  # held by whoever is inside the file lock
    overlaps: list[str] = []
    waited: list[str] = []

    def worker(name: str) -> None:
        with exclusive_lock(path, on_wait=waited.append, poll_seconds=0.01):
            if not inside.acquire(blocking=False):
                overlaps.append(name)
                return
            time.sleep(0.05)
            inside.release()

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert overlaps == []
    assert waited  # some really waited
    assert not path.exists()


def test_a_waiter_survives_the_holder_removing_the_folder(tmp_path: Path) -> None:
    """A download that fails removes the empty folder it made, lock file and all; one waiting
    on that lock then takes it over in a folder of its own instead of failing."""
    folder = tmp_path / "weights" / "m" / "hf"
    path = folder / "x.lock"
    waiting = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            with exclusive_lock(path, on_wait=lambda _: waiting.set(), poll_seconds=0.01):
                assert path.exists()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    with exclusive_lock(path):
        thread = threading.Thread(target=waiter)
        thread.start()
        assert waiting.wait(timeout=30)
    folder.rmdir()  # what a failed download does after releasing its lock
    thread.join(timeout=30)
    assert errors == [] and not thread.is_alive()


def test_lock_wait_is_reported_without_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: FileServer
) -> None:
    server.add("/w.bin", b"w" * 100)
    folder = tmp_path / "weights" / "m" / "custom"
    manifest = {"files": [{"url": f"{ORIGIN}/w.bin"}]}
    done: list[Path] = []
    with exclusive_lock(folder / LOCK_NAME):
        worker = threading.Thread(
            target=lambda: done.append(
                download("m", manifest=manifest, mirror=server.url, progress=False)
            )
        )
        worker.start()
        deadline = time.monotonic() + 10
        while "waiting for another download" not in capsys.readouterr().err:
            assert time.monotonic() < deadline, "no waiting message on stderr"
            time.sleep(0.05)
        assert not done
    worker.join(timeout=30)
    assert done == [folder]


def test_record_format_is_stable(server: FileServer, tmp_path: Path) -> None:
    data = b"abc"
    server.add("/f/a.txt", data)
    folder = download(
        "m", manifest={"files": [{"url": f"{ORIGIN}/f/a.txt"}]}, mirror=server.url, progress=False
    )
    raw = json.loads((folder / RECORD_NAME).read_text())
    assert raw["format"] == "gpt2load-download/1"
    assert raw["files"] == [
        {
            "path": "a.txt",
            "url": f"{ORIGIN}/f/a.txt",
            "size": 3,
            "sha256": hashlib.sha256(data).hexdigest(),
            "expected_size": None,
            "expected_sha256": None,
        }
    ]


def test_the_lock_refuses_a_hard_link_and_its_refusal_travels_between_processes(
    tmp_path: Path,
) -> None:
    """A lock file sharing its bytes with another file is never written (the holder writes
    its details there); LockHeld pickles as it was made (multiprocessing hands errors over)."""
    import errno
    import pickle

    from gpt2load import LockHeld
    from gpt2load.fileio import UnsafePathError

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    os.link(outside, tmp_path / "x.lock")
    with pytest.raises(UnsafePathError) as refused, exclusive_lock(tmp_path / "x.lock"):
        pass
    assert refused.value.errno == errno.EMLINK and "hard links" in str(refused.value)
    assert outside.read_text() == "keep me\n"

    path = tmp_path / "y.lock"
    with exclusive_lock(path) as fd:
        os.write(fd, b"holder details")
        with pytest.raises(LockHeld) as held, exclusive_lock(path, wait=False):
            pass
    assert held.value.details == "holder details"
    again = pickle.loads(pickle.dumps(held.value))
    assert (again.path, again.details, str(again)) == (path, "holder details", str(held.value))
