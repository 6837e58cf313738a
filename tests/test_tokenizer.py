"""The GPT-2 tokenizer: offline from local files, a clear error when unavailable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2load.tokenizer import StreamDecoder, get_tokenizer
from tests.conftest import REPO_ROOT


def test_local_files_give_the_known_ids(tokenizer) -> None:
    assert tokenizer.encode("Hello, I'm a language model,") == [
        15496,
        11,
        314,
        1101,
        257,
        3303,
        2746,
        11,
    ]
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
    with pytest.raises(ValueError, match=r"vocab.bpe.*not GPT-2's published files"):
        get_tokenizer(tmp_path)


def test_stream_decoder_holds_back_split_characters(tokenizer) -> None:
    text = "naïve café – 東京 🙂"
    ids = tokenizer.encode(text)
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_no_files_and_no_network_names_both_fixes(tmp_path: Path) -> None:
    # A proxy on a closed local port makes tiktoken's download fail at once, for real.
    env = dict(os.environ)
    env.update(
        TIKTOKEN_CACHE_DIR=str(tmp_path / "empty-cache"),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="",
    )
    env.pop("GPT2LOAD_TOKENIZER_DIR", None)
    code = f"from gpt2load.tokenizer import get_tokenizer\nget_tokenizer({str(tmp_path)!r})\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "TokenizerNotFoundError" in result.stderr
    assert "encoder.json and vocab.bpe in the model folder" in result.stderr
    assert "allow network access" in result.stderr
