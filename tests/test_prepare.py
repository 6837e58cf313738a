"""Data preparation: text -> uint16 train.bin / val.bin, the split, the cache, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from finetune import cli
from finetune.data import (
    DataError,
    chunk_text,
    encode_documents,
    encode_splits,
    open_prepared,
    split_documents,
)
from finetune.prepare import prepare_shakespeare, prepare_text, resolve_data

from .conftest import SHAKESPEARE_TXT, VERDICT_TXT


class CharEncoding:
    """A stand-in tokenizer (one token per character) so the core tests need no BPE files."""

    name = "chars"
    n_vocab = 50257
    eot_token = 50256

    def encode_ordinary(self, text: str) -> list[int]:
        return [ord(c) % 50000 for c in text]


def _quiet(_: str) -> None:
    pass


def test_split_is_by_characters_and_documents_join_with_eot() -> None:
    train, val = split_documents(["aaaa", "bbbbbb"], 0.2)  # 10 chars: cut at 8
    assert train == ["aaaa", "bbbb"] and val == ["bb"]
    train, val = split_documents(["x" * 9, "y"], 0.1)
    assert train == ["x" * 9] and val == ["y"]
    enc = CharEncoding()
    tokens = encode_documents(enc, ["ab", "c"], threads=2)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [ord("a"), ord("b"), 50256, ord("c")]


def test_long_documents_are_chunked_and_joined_once() -> None:
    enc = CharEncoding()
    one = ("word " * 9 + "\n") * 30_000  # 300,000 characters: several chunks each
    two = "other text here\n" * 20_000
    assert len(chunk_text(one)) > 1
    train, val = encode_splits(enc, [[one, two], ["tail"]], threads=2)
    assert train.tolist() == enc.encode_ordinary(one) + [50256] + enc.encode_ordinary(two)
    assert val.tolist() == enc.encode_ordinary("tail")


def test_prepare_writes_bins_and_reuses_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "a.txt").write_text("first document " * 50)
    (src / "b.md").write_text("second one " * 30)
    (src / "skip.bin").write_bytes(b"\x00\x01")
    (src / ".hidden.txt").write_text("not read")
    messages: list[str] = []
    out = prepare_text([src], tmp_path / "data", encoding=CharEncoding(), log=messages.append)
    assert out.folder.parent == tmp_path / "data" and out.folder.name.startswith("corpus-")
    total = len("first document " * 50) + len("second one " * 30)
    assert out.train_tokens + out.val_tokens == total + 1  # one <|endoftext|> between the two
    train = np.fromfile(out.train_path, dtype=np.uint16)
    assert len(train) == out.train_tokens and 50256 in train.tolist()
    assert out.meta["documents"] == 2 and out.meta["train_chars"] == int(total * 0.9)
    stamp = out.train_path.stat().st_mtime_ns

    again = prepare_text([src], tmp_path / "data", encoding=CharEncoding(), log=messages.append)
    assert "sources unchanged" in messages[-1]
    assert again.train_path.stat().st_mtime_ns == stamp

    (src / "a.txt").write_text("edited " * 80)
    edited = prepare_text([src], tmp_path / "data", encoding=CharEncoding(), log=_quiet)
    assert edited.meta["source_key"] != out.meta["source_key"]
    assert edited.train_tokens + edited.val_tokens == len("edited " * 80) + 330 + 1
    assert open_prepared(edited.folder).train_tokens == edited.train_tokens


def test_sources_with_the_same_name_get_folders_of_their_own(tmp_path: Path) -> None:
    """a/notes.txt and b/notes.txt once shared data/notes, each preparation overwriting the
    other's tokens under a run that trained on them."""
    enc = CharEncoding()
    for name, text in (("a", "alpha text " * 40), ("b", "beta words " * 60)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(text)
    a = prepare_text([tmp_path / "a" / "notes.txt"], tmp_path / "d", encoding=enc, log=_quiet)
    b = prepare_text([tmp_path / "b" / "notes.txt"], tmp_path / "d", encoding=enc, log=_quiet)
    assert a.folder != b.folder
    assert a.folder.name.startswith("notes-") and b.folder.name.startswith("notes-")
    assert open_prepared(a.folder).meta["source_key"] == a.meta["source_key"]  # not overwritten
    # The same source named another way (relative, or with ..) is the same folder.
    again = prepare_text(
        [tmp_path / "b" / ".." / "a" / "notes.txt"], tmp_path / "d", encoding=enc, log=_quiet
    )
    assert again.folder == a.folder
    # An empty --name is no name: the folder of its own, never --data-dir itself.
    unnamed = prepare_text(
        [tmp_path / "a" / "notes.txt"], tmp_path / "d", name="", encoding=enc, log=_quiet
    )
    assert unnamed.folder == a.folder and not (tmp_path / "d" / "train.bin").exists()


def test_a_wrong_shakespeare_file_is_kept_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edited data/shakespeare/input.txt is moved aside before the download, so being
    offline (or any failed download) never loses it."""
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    mine = tmp_path / "shakespeare" / "input.txt"
    mine.parent.mkdir()
    mine.write_text("my own edits\n")
    messages: list[str] = []
    with pytest.raises(DataError, match="could not download") as exc:
        prepare_shakespeare(tmp_path, encoding=CharEncoding(), log=messages.append)
    kept = mine.with_name("input.txt.bad")
    assert kept.read_text() == "my own edits\n"
    assert str(kept) in str(exc.value) and any(str(kept) in m for m in messages)
    mine.write_text("second edit\n")  # a second bad copy does not overwrite the first
    with pytest.raises(DataError):
        prepare_shakespeare(tmp_path, encoding=CharEncoding(), log=_quiet)
    assert kept.read_text() == "my own edits\n"
    assert mine.with_name("input.txt.bad.1").read_text() == "second edit\n"
    if SHAKESPEARE_TXT.exists():  # --input replaces a wrong copy the same way
        mine.write_text("third\n")
        prepare_shakespeare(
            tmp_path, input_path=SHAKESPEARE_TXT, encoding=CharEncoding(), log=_quiet
        )
        assert mine.with_name("input.txt.bad.2").read_text() == "third\n"
        assert mine.read_bytes() == SHAKESPEARE_TXT.read_bytes()


def test_bad_data_is_a_clear_error(tmp_path: Path) -> None:
    enc = CharEncoding()
    with pytest.raises(DataError, match="does not exist"):
        prepare_text([tmp_path / "missing.txt"], tmp_path, encoding=enc, log=_quiet)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="no text to train on"):
        prepare_text([empty], tmp_path, encoding=enc, log=_quiet)
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="holds no text files"):
        prepare_text([folder], tmp_path, encoding=enc, log=_quiet)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        prepare_text([binary], tmp_path, encoding=enc, log=_quiet)
    with pytest.raises(DataError, match="no data"):
        resolve_data([], tmp_path)
    with pytest.raises(DataError, match="has no val.bin"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "train.bin").write_bytes(b"\x00\x00")
        open_prepared(tmp_path / "half")


def test_a_link_out_of_a_data_folder_is_refused(tmp_path: Path) -> None:
    """A folder source is its own files: a link in it to a file elsewhere was read (and
    trained on) while links to folders were not followed; one inside the folder may be."""
    enc = CharEncoding()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("not part of the corpus")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the corpus itself " * 20)
    (corpus / "same.txt").symlink_to("a.txt")  # stays inside: read
    out = prepare_text([corpus], tmp_path / "data", encoding=enc, log=_quiet)
    assert out.meta["documents"] == 2
    (corpus / "b.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    with pytest.raises(DataError) as exc:
        prepare_text([corpus], tmp_path / "data", encoding=enc, log=_quiet)
    message = str(exc.value)
    assert f"{corpus / 'b.txt'} is a symbolic link to {tmp_path / 'outside' / 'secret.txt'}" in (
        message
    )
    assert "copy the file into" in message and "--data source of its own" in message
    (corpus / "b.txt").unlink()
    (corpus / "c.md").symlink_to(tmp_path / "outside" / "gone.txt")  # dangling, outside too
    with pytest.raises(DataError, match="c.md is a symbolic link to .*outside the folder"):
        prepare_text([corpus], tmp_path / "data", encoding=enc, log=_quiet)
    # The file given as a source of its own is read, link or not.
    (tmp_path / "given.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    alone = prepare_text([tmp_path / "given.txt"], tmp_path / "data", encoding=enc, log=_quiet)
    assert alone.meta["documents"] == 1


def test_a_fifo_or_a_device_is_not_data_and_is_never_read(tmp_path: Path) -> None:
    """Told for what it is, not as "does not exist", and never opened: a FIFO would hang."""
    enc = CharEncoding()
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/null"), "a character device")):
        with pytest.raises(DataError) as exc:
            prepare_text([path], tmp_path / "data", encoding=enc, log=_quiet)
        assert str(exc.value) == (
            f"data path {path} is not a regular file or folder ({kind}); give a text file or "
            f"a folder of them"
        )
        with pytest.raises(DataError, match=r"is not a regular file or folder \("):
            prepare_shakespeare(tmp_path / "data", input_path=path, encoding=enc, log=_quiet)
    folder = tmp_path / "corpus"  # one inside a folder is no text file of it
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")
    (folder / "a.txt").write_text("real text " * 30)
    assert (
        prepare_text([folder], tmp_path / "data", encoding=enc, log=_quiet).meta["documents"] == 1
    )


def test_prepare_name_is_one_folder_inside_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--name ../x`` or ``/x`` wrote (after unlinking a meta.json there) outside --data-dir;
    with shakespeare --name was silently ignored."""
    text = tmp_path / "notes.txt"
    text.write_text("Some notes about training.\n" * 40)
    data_dir = tmp_path / "inner" / "d"
    data_dir.mkdir(parents=True)
    victim = tmp_path / "inner" / "escaped"
    victim.mkdir()
    (victim / "meta.json").write_text("{}")
    for name in ("../escaped", str(victim), ".", "..", "a/b"):
        argv = ["prepare", str(text), "--data-dir", str(data_dir), "--name", name]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err == (
            f"finetune prepare: error: --name {name} is not a plain folder name; prepared data "
            f"goes into {data_dir}/NAME: give one folder name (no '/', not '.' or '..'), and "
            f"pick where it goes with --data-dir\n"
        )
    assert (victim / "meta.json").read_text() == "{}" and list(data_dir.iterdir()) == []
    argv = ["prepare", "shakespeare", "--data-dir", str(data_dir), "--name", "foo"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("finetune prepare: error: --name is for text files; ")
    assert err.count("\n") == 1 and "drop --name" in err
    assert list(data_dir.iterdir()) == []  # refused before any download


def test_prepare_refuses_a_tokenizer_dir_without_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --tokenizer-dir fell back to $GPT2LOAD_TOKENIZER_DIR without a word."""
    text = tmp_path / "notes.txt"
    text.write_text("Some notes about training.\n" * 40)
    (tmp_path / "empty").mkdir()
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "encoder.json").write_text("{}")
    (tmp_path / "wrong" / "vocab.bpe").write_text("#version: 0.2\n")
    expected = {
        tmp_path / "missing": "does not exist; give the folder that holds GPT-2's encoder.json",
        tmp_path / "empty": "holds no GPT-2 tokenizer files that match the published ones",
        tmp_path / "wrong": "holds no GPT-2 tokenizer files that match the published ones",
    }
    for folder, words in expected.items():
        for tokenizer in ("gpt2", "char"):  # a mistyped path is one whatever it is used for
            argv = ["prepare", str(text), "--data-dir", str(tmp_path / "d")]
            argv += ["--tokenizer", tokenizer, "--tokenizer-dir", str(folder)]
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"finetune prepare: error: --tokenizer-dir {folder} {words}")
            assert err.count("\n") == 1 and "or drop --tokenizer-dir" in err
    assert not (tmp_path / "d").exists()


def test_chunked_parallel_encoding_matches_one_pass(tokenizer) -> None:
    text = VERDICT_TXT.read_text() if VERDICT_TXT.exists() else "Hello there.\n" * 500
    text += "  trailing   spaces\n\n\nand 'quotes' he's   \t tabs\n" * 20
    for size in (40, 333, 4096):
        pieces = chunk_text(text, size)
        assert "".join(pieces) == text
        assert len(pieces) > 1
    expected = tokenizer.encode_ordinary(text)
    for threads in (1, 2, 4):
        got = encode_documents(tokenizer, [text], threads=threads)
        assert got.tolist() == expected
    # A literal <|endoftext|> in the data stays text; only document boundaries get the token.
    assert 50256 not in encode_documents(tokenizer, ["a <|endoftext|> b"]).tolist()


def test_shakespeare_split_token_counts(tmp_path: Path, tokenizer) -> None:
    if not SHAKESPEARE_TXT.exists():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE_TXT} (../shared/data absent)")
    out = prepare_shakespeare(tmp_path, input_path=SHAKESPEARE_TXT, encoding=tokenizer, log=_quiet)
    assert (out.train_tokens, out.val_tokens) == (301_966, 36_059)
    assert os.path.getsize(out.train_path) == 2 * 301_966
    assert os.path.getsize(out.val_path) == 2 * 36_059
    text = SHAKESPEARE_TXT.read_text()
    cut = int(len(text) * 0.9)
    assert np.fromfile(out.val_path, dtype=np.uint16).tolist() == tokenizer.encode_ordinary(
        text[cut:]
    )
    with pytest.raises(DataError, match="not Tiny Shakespeare"):
        other = tmp_path / "other.txt"
        other.write_text("not it")
        prepare_shakespeare(tmp_path, input_path=other, encoding=tokenizer, log=_quiet)


def test_prepare_command_uses_a_downloaded_copy(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not SHAKESPEARE_TXT.exists():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE_TXT} (../shared/data absent)")
    # A copy already in DATA_DIR/shakespeare/input.txt with the right sha256 is not downloaded.
    (tmp_path / "shakespeare").mkdir()
    shutil.copy(SHAKESPEARE_TXT, tmp_path / "shakespeare" / "input.txt")
    argv = ["prepare", "shakespeare", "--data-dir", str(tmp_path)]
    argv += ["--tokenizer-dir", str(tokenizer_dir)]
    assert cli.main(argv) == 0
    assert "301,966 train / 36,059 val" in capsys.readouterr().out
    meta = json.loads((tmp_path / "shakespeare" / "meta.json").read_text())
    assert meta["train_tokens"] == 301_966 and meta["tokenizer"] == "gpt2/50257"
    assert cli.main(argv) == 0
    assert "sources unchanged" in capsys.readouterr().out


def test_prepare_command_on_files(tmp_path: Path, tokenizer_dir: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("Some notes about training.\n" * 40)
    options = {
        "--data-dir": tmp_path / "d",
        "--name": "n",
        "--val-fraction": 0.25,
        "--tokenizer-dir": tokenizer_dir,
    }
    code = cli.main(["prepare", str(text), *(str(x) for kv in options.items() for x in kv)])
    assert code == 0
    meta = json.loads((tmp_path / "d" / "n" / "meta.json").read_text())
    assert meta["val_fraction"] == 0.25 and meta["train_tokens"] == 3 * meta["val_tokens"] > 0
    assert cli.main(["prepare", str(tmp_path / "absent.txt"), "--data-dir", str(tmp_path)]) == 2


def test_a_prepared_source_trains_without_any_tokenizer_at_hand(
    tmp_path: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once text is prepared, training needs no tokenizer (only samples do): with none found
    and no network, the run trains and says it skips samples."""
    from finetune.data import GPT2_TOKENIZER_ID, tokenizer_id
    from gpt2load.tokenizer import get_tokenizer

    # The cache key's tokenizer part, known without the files, is what the files give.
    assert tokenizer_id(get_tokenizer(tokenizer_dir)) == GPT2_TOKENIZER_ID
    text = tmp_path / "notes.txt"
    text.write_text("A line of plain words for a tiny model to learn. " * 300)
    common = ["--data", str(text), "--data-dir", str(tmp_path / "data")]
    assert cli.main(["prepare", *common[1:2], "--data-dir", common[3], "--tokenizer-dir",
                     str(tokenizer_dir)]) == 0  # fmt: skip
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    capsys.readouterr()
    flags = "--init scratch --n-layer 1 --n-head 2 --n-embd 16 --block-size 16 --batch-size 2 "
    flags += "--max-iters 2 --eval-interval 2 --sample-interval 1 --force-cpu --no-progress"
    assert cli.main(["pretrain", *common, "--out", str(tmp_path / "run"), *flags.split()]) == 0
    out = capsys.readouterr().out
    assert "using prepared" in out and "no tokenizer for samples" in out
    assert sorted(p.name for p in (tmp_path / "run" / "best").iterdir()) == [
        "info.json",
        "model.safetensors",
        "trainer.pt",
    ]
