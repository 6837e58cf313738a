"""The GPT-2 tokenizer: offline from local files (OpenAI or Hugging Face names), else fetched
once through the project's downloader (mirror, hash check) into a cache, a clear error otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpt2load import tokenizer as tokenizer_module
from gpt2load.tokenizer import StreamDecoder, TokenizerNotFoundError, get_tokenizer
from tests.http_server import Fault, FileServer, isolate_downloads

KNOWN_IDS = [15496, 11, 314, 1101, 257, 3303, 2746, 11]  # "Hello, I'm a language model,"
ENCODINGS = "/gpt-2/encodings/main"  # where OpenAI publishes the two files


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_downloads(monkeypatch, tmp_path)  # the default mirror is a closed local port
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)


def serve_tokenizer(server: FileServer, tokenizer_dir: Path, **faults: Fault) -> None:
    for name in ("encoder.json", "vocab.bpe"):
        server.add(f"{ENCODINGS}/{name}", (tokenizer_dir / name).read_bytes(), faults.get(name))


def test_local_files_give_the_known_ids(tokenizer) -> None:
    assert tokenizer.encode("Hello, I'm a language model,") == KNOWN_IDS
    assert tokenizer.n_vocab == 50257
    assert tokenizer.eot_token == 50256
    assert tokenizer.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_model_file_path_finds_tokenizer_beside_it(tokenizer_dir: Path, tmp_path: Path) -> None:
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"")
    enc = get_tokenizer(tmp_path / "model.safetensors")
    assert enc.decode(enc.encode("Every effort moves you")) == "Every effort moves you"


def test_corrupted_tokenizer_file_is_refused(tokenizer_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tokenizer_dir / "encoder.json", tmp_path / "encoder.json")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nh e\n")
    with pytest.raises(ValueError, match=r"vocab.bpe is not GPT-2's published file: sha256"):
        get_tokenizer(tmp_path)


def test_stream_decoder_holds_back_split_characters(tokenizer) -> None:
    text = "naïve café – 東京 🙂"
    ids = tokenizer.encode(text)
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_hugging_face_names_tokenize_offline(tokenizer_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hf-export"
    folder.mkdir()
    shutil.copy(tokenizer_dir / "encoder.json", folder / "vocab.json")
    shutil.copy(tokenizer_dir / "vocab.bpe", folder / "merges.txt")
    (folder / "model.safetensors").write_bytes(b"")
    assert tokenizer_module.tokenizer_folder(folder / "model.safetensors") == folder
    enc = get_tokenizer(folder / "model.safetensors")  # the mirror is a closed port: no network
    assert enc.encode("Hello, I'm a language model,") == KNOWN_IDS
    assert not (tmp_path / "weights").exists()


def test_hugging_face_names_are_hash_checked(tokenizer_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tokenizer_dir / "encoder.json", tmp_path / "vocab.json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\n")
    with pytest.raises(ValueError, match=r"merges.txt \(OpenAI's vocab.bpe\) is not GPT-2's"):
        get_tokenizer(tmp_path)


def test_missing_files_are_fetched_through_the_mirror_into_the_cache(
    server: FileServer, tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_tokenizer(server, tokenizer_dir)
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "store"))
    model_folder = tmp_path / "model"  # a checkpoint folder without tokenizer files
    model_folder.mkdir()
    enc = get_tokenizer(model_folder, progress=False)
    assert enc.encode("Hello, I'm a language model,") == KNOWN_IDS
    cache = tmp_path / "store" / "tokenizer"
    assert sorted(p.name for p in cache.iterdir()) == ["encoder.json", "vocab.bpe"]  # no locks
    for name in ("encoder.json", "vocab.bpe"):
        assert (cache / name).read_bytes() == (tokenizer_dir / name).read_bytes()
    assert sorted(r.path for r in server.log()) == [
        f"{ENCODINGS}/encoder.json",
        f"{ENCODINGS}/vocab.bpe",
    ]
    server.stop()  # from now on the cache is all there is
    tokenizer_module._encoding_from_files.cache_clear()
    again = get_tokenizer(tmp_path / "elsewhere" / "model.pt", progress=False)
    assert again.encode("Hello, I'm a language model,") == KNOWN_IDS


def test_cache_folder_defaults_to_weights_in_the_working_directory(tmp_path: Path) -> None:
    assert tokenizer_module.cache_dir() == Path("weights") / "tokenizer"


def test_a_mirror_serving_other_bytes_is_refused(
    server: FileServer, tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_tokenizer(server, tokenizer_dir, **{"vocab.bpe": Fault(corrupt_at=1000)})
    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)
    with pytest.raises(TokenizerNotFoundError, match="vocab.bpe: sha256 mismatch"):
        get_tokenizer(tmp_path / "model", progress=False)
    cache = tmp_path / "weights" / "tokenizer"
    assert sorted(p.name for p in cache.iterdir()) == ["encoder.json"]  # the good one stays


def test_no_files_and_no_network_names_both_fixes(tmp_path: Path) -> None:
    # $GPT2LOAD_MIRROR points at a closed local port, so the download fails at once, for real.
    with pytest.raises(TokenizerNotFoundError) as info:
        get_tokenizer(tmp_path / "model", progress=False)
    message = str(info.value)
    assert f"are not in {tmp_path / 'model'} nor $GPT2LOAD_TOKENIZER_DIR (not set)" in message
    assert (
        "a model folder, `finetune --tokenizer-dir DIR`, or GPT2LOAD_TOKENIZER_DIR=DIR" in message
    )
    assert "allow the download" in message and "GPT2LOAD_MIRROR" in message
    assert "127.0.0.1:9/gpt-2/encodings/main/encoder.json" in message  # what was tried
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").rglob("*"))


def test_downloads_switched_off_name_both_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    with pytest.raises(TokenizerNotFoundError, match="switched off.*a model folder"):
        get_tokenizer(tmp_path, progress=False)
