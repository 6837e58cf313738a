"""download(): whole releases laid out as on the real hosts, custom manifests, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpt2load import releases
from gpt2load.cli import main
from gpt2load.downloads import ChecksumError, DownloadError, download
from gpt2load.downloads.manifest import RECORD_NAME, read_record
from tests import http_server
from tests.conftest import REPO_ROOT, TOKENIZER_DIR
from tests.http_server import (
    Fault,
    FileServer,
)

pytestmark = pytest.mark.usefixtures("hermetic_releases")


def serve_release(server: FileServer, model: str, source: str, hub: bool = True) -> dict:
    return http_server.serve_release(server, model, source, first=3_000, step=40_000, hub=hub)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name != RECORD_NAME
    }


def test_openai_release_lands_in_the_default_folder(server: FileServer, tmp_path: Path) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    folder = download("774M", source="openai", mirror=server.url, progress=False)
    assert folder == tmp_path / "weights" / "gpt2-large" / "openai"
    assert folder_files(folder) == contents
    assert len(contents) == 7
    record = read_record(folder)
    assert record is not None and (record.model, record.source) == ("gpt2-large", "openai")
    for entry in record.files:
        assert entry.sha256 == hashlib.sha256(contents[entry.path]).hexdigest()
        assert entry.size == len(contents[entry.path])
    assert (
        record.file("encoder.json").expected_sha256 == releases.TOKENIZER_FACTS["encoder.json"][1]
    )


def test_hf_release_gets_the_tokenizer_files_too(server: FileServer, tmp_path: Path) -> None:
    contents = serve_release(server, "gpt2-medium", "hf")
    folder = download("gpt2-medium", mirror=server.url, progress=False)
    assert sorted(folder_files(folder)) == [
        "config.json",
        "encoder.json",
        "model.safetensors",
        "vocab.bpe",
    ]
    assert folder_files(folder) == contents
    assert server.count("/gpt-2/encodings/main/encoder.json") == 1
    assert server.count("/openai-community/gpt2-medium/resolve/main/model.safetensors") == 1


def test_hub_digest_guards_files_without_a_published_hash(
    server: FileServer, tmp_path: Path
) -> None:
    serve_release(server, "gpt2-xl", "hf")
    path = "/openai-community/gpt2-xl/resolve/main/model.safetensors"
    server.faults[path].corrupt_at = 100
    with pytest.raises(ChecksumError, match="model.safetensors: sha256 mismatch"):
        download("gpt2-xl", mirror=server.url, progress=False)
    folder = tmp_path / "weights" / "gpt2-xl" / "hf"
    assert not (folder / "model.safetensors").exists()
    assert not (folder / "model.safetensors.part").exists()


def test_published_size_is_enforced(server: FileServer, tmp_path: Path) -> None:
    serve_release(server, "gpt2", "hf")  # random bytes where the real 548 MB file would be
    with pytest.raises(
        ChecksumError, match="the expected size is 548105171 bytes, but X-Linked-Size says 43000"
    ):
        download("gpt2", mirror=server.url, progress=False)
    assert not (tmp_path / "weights" / "gpt2" / "hf" / "model.safetensors").exists()


def test_rerun_fetches_nothing(server: FileServer) -> None:
    serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    server.reset_log()
    for fast in (False, True):
        again = download(
            "gpt2-large", source="openai", mirror=server.url, progress=False, fast=fast
        )
        assert again == folder
    assert server.count() == 0


def test_rerun_replaces_only_a_changed_file(server: FileServer) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    damaged = folder / "model.ckpt.index"
    data = damaged.read_bytes()
    damaged.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size: only the hash tells
    server.reset_log()
    download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert [r.path for r in server.log()] == ["/gpt-2/models/774M/model.ckpt.index"]
    assert damaged.read_bytes() == contents["model.ckpt.index"]


def test_interrupted_download_resumes_on_the_next_run(server: FileServer) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    path = "/gpt-2/models/774M/model.ckpt.meta"
    server.faults[path] = Fault(cut_after=len(contents["model.ckpt.meta"]) // 2)
    with pytest.raises(DownloadError, match="kept in"):
        download("gpt2-large", source="openai", mirror=server.url, progress=False, retries=0)
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert folder_files(folder) == contents
    assert server.log(path)[-1].range is not None


def test_unreadable_record_is_rebuilt(server: FileServer) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    (folder / RECORD_NAME).write_text("{not json")
    server.reset_log()
    download("gpt2-large", source="openai", mirror=server.url, progress=False)
    # The tokenizer files are proved by their published sha256; the five 774M files have
    # no published size or hash, and this server sends no digest, so they come again.
    unproved = sorted(set(contents) - set(releases.TOKENIZER_FACTS))
    assert sorted(r.path.rsplit("/", 1)[1] for r in server.log()) == unproved
    assert server.count(method="HEAD") == len(unproved)
    record = read_record(folder)
    assert record is not None and sorted(e.path for e in record.files) == sorted(contents)


@pytest.mark.parametrize("size", [None, "548105171", -1, True])
def test_a_record_whose_size_is_no_count_is_unreadable_and_listed_so(
    size: object, server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-edited record (a size of null, a string, a negative or a boolean) is an
    unreadable record: `list` says so on its row instead of failing to add it up, and the
    next download rebuilds it."""
    serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    data = json.loads((folder / RECORD_NAME).read_text())
    data["files"][0]["size"] = size
    (folder / RECORD_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a count"):
        read_record(folder)
    capsys.readouterr()
    assert main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "gpt2-large" in line)
    assert f"unreadable {RECORD_NAME}" in row, row
    download("gpt2-large", source="openai", mirror=server.url, progress=False)
    assert read_record(folder) is not None


def test_offline_rerun_needs_no_network(
    server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_release(server, "gpt2-large", "openai")
    folder = download("gpt2-large", source="openai", mirror=server.url, progress=False)
    server.stop()
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    assert download("gpt2-large", source="openai", progress=False) == folder


def test_concurrent_downloads_into_one_folder(server: FileServer) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    server.faults["/gpt-2/models/774M/checkpoint"] = Fault(fail_times=1)
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(
                download(
                    "gpt2-large", source="openai", mirror=server.url, progress=False, backoff=0.2
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    assert folder_files(results[0]) == contents
    assert server.count() == len(contents) + 1  # every file once, plus the one 503


def test_custom_manifest(server: FileServer, tmp_path: Path) -> None:
    weights, extra = os.urandom(50_000), b'{"n_layer": 2}'
    server.add("/private/ckpt/model.safetensors", weights)
    server.add("/private/ckpt/config.json", extra)
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps(
            {
                "files": [
                    {
                        "url": "https://models.invalid/private/ckpt/model.safetensors",
                        "path": "model.safetensors",
                        "size": len(weights),
                        "sha256": hashlib.sha256(weights).hexdigest(),
                    },
                    {
                        "url": "https://models.invalid/private/ckpt/config.json",
                        "path": "sub/c.json",
                    },
                ]
            }
        )
    )
    folder = download("my-model", manifest=manifest, mirror=server.url, progress=False)
    assert folder == tmp_path / "weights" / "my-model" / "custom"
    assert (folder / "model.safetensors").read_bytes() == weights
    assert (folder / "sub" / "c.json").read_bytes() == extra
    record = read_record(folder)
    assert record is not None and record.source == "custom"
    assert record.file("sub/c.json").sha256 == hashlib.sha256(extra).hexdigest()
    # A model's alias names the same folder as the model itself, as for built-in releases.
    again = download("124M", manifest=manifest, mirror=server.url, progress=False)
    assert again == tmp_path / "weights" / "gpt2" / "custom"


@pytest.mark.parametrize(
    "path",
    ["../evil", "/etc/passwd", "a/../../b", "a//b", "C:/x", "a\\b", RECORD_NAME, "x.bin.part"],
)
def test_manifest_names_cannot_escape_the_folder(
    server: FileServer, tmp_path: Path, path: str
) -> None:
    manifest = {"files": [{"url": "https://models.invalid/x.bin", "path": path}]}
    with pytest.raises(ValueError, match="not allowed|reserved"):
        download("m", manifest=manifest, mirror=server.url, progress=False)
    assert server.count() == 0


@pytest.mark.parametrize(
    "manifest, message",
    [
        ({}, "expected an object"),
        ({"files": []}, "empty"),
        ({"files": [{"path": "x"}]}, "url must be an http"),
        ({"files": [{"url": "https://h/x", "sha265": "ab"}]}, "unknown keys"),
        ({"files": [{"url": "https://h/x", "sha256": "ab"}]}, "64 hexadecimal"),
        ({"files": [{"url": "https://h/x", "size": -1}]}, "non-negative"),
        ({"files": [{"url": "https://h/x"}, {"url": "https://h/y/x"}]}, "more than once"),
    ],
)
def test_manifest_is_validated(manifest: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        download("m", manifest=manifest, progress=False)


def test_cli_prints_the_folder_last(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contents = serve_release(server, "gpt2-large", "openai")
    target = tmp_path / "elsewhere"
    argv = ["download", "gpt2-large", "--source", "openai", "--dir", str(target)]
    assert main([*argv, "--mirror", server.url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == str(target)
    assert folder_files(target) == contents


def test_cli_failures(server: FileServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "gpt2-large", "--mirror", server.url, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2load download: error: ") and err.count("\n") == 1
    assert "HTTP 404" in err and server.url in err
    assert main(["download", "gpt5", "--quiet"]) == 2
    assert "unknown GPT-2 model name" in capsys.readouterr().err


def test_script_entry_point(server: FileServer, tmp_path: Path) -> None:
    server.add("/f/a.txt", b"hello")
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"files": [{"url": "https://h.invalid/f/a.txt"}]}))
    env = {**os.environ, "GPT2LOAD_MIRROR": server.url}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "download_weights.py"), "thing"]
        + ["--manifest", str(manifest), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.splitlines()[-1])
    assert (folder / "a.txt").read_bytes() == b"hello"


def test_package_download_and_resolve(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpt2load.downloads  # importing the implementation must not shadow the function
    import gpt2load.loading  # noqa: F401

    serve_release(server, "gpt2-large", "openai")
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    assert gpt2load.download is gpt2load.downloads.download
    folder = gpt2load.download("gpt2-large", source="openai", progress=False)
    server.reset_log()
    assert gpt2load.resolve("774M", source="openai") == folder
    assert server.count() == 0


# -- the built-in release table --------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(releases.RASBT_STEMS))
@pytest.mark.parametrize("source", releases.SOURCES)
def test_every_release_is_https_and_tokenizes_offline(model: str, source: str) -> None:
    files = releases.release(model, source).files
    paths = [f.path for f in files]
    assert {"encoder.json", "vocab.bpe"} <= set(paths)
    assert len(paths) == len(set(paths))
    for spec in files:
        assert spec.url.startswith("https://")
        assert spec.url.rsplit("/", 1)[1] == spec.path


def test_release_urls_match_the_published_layout() -> None:
    openai = releases.release("124M", "openai")
    assert [f.path for f in openai.files] == list(releases.OPENAI_FILES)
    assert openai.file("model.ckpt.data-00000-of-00001").url == (
        "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/"
        "model.ckpt.data-00000-of-00001"
    )
    assert openai.file("model.ckpt.data-00000-of-00001").size == 497_759_232
    assert releases.release("355M", "openai").file("model.ckpt.meta").size == 926_519
    hf = releases.release("gpt2", "hf").file("model.safetensors")
    assert hf.url == "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"
    assert (hf.size, hf.sha256[:8]) == (548_105_171, "248dfc39")
    rasbt = releases.release("gpt2-small", "rasbt").files[0]
    assert rasbt.url == (
        "https://huggingface.co/rasbt/gpt2-from-scratch-pytorch/resolve/main/"
        "gpt2-small-124M.safetensors"
    )
    assert rasbt.sha256.startswith("8bb78718")
    assert releases.release("gpt2-xl", "hf").file("encoder.json").url == (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
    )
    with pytest.raises(ValueError, match="unknown source"):
        releases.release("gpt2", "s3")


def test_published_tokenizer_facts_match_the_real_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real table, not this module's stand-ins
    if not (TOKENIZER_DIR / "encoder.json").exists():
        pytest.skip(f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR}")
    for name, (size, sha) in releases.TOKENIZER_FACTS.items():
        data = (TOKENIZER_DIR / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), name
