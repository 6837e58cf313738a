"""Character-level training (issue 12): a model of the text's own characters from scratch, a
nanoGPT ``shakespeare_char`` checkpoint fine-tuned with its vocabulary, and the way back.

Every run goes through the real command line on a 2-layer model of width 32 and a few
steps; what is asserted is the vocabulary each step used (the prepared ids decode to the
text, the checkpoint carries the ``meta.pkl`` nanoGPT reads) and the one-line refusals.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune import cli
from gpt2load.char_tokenizer import CharTokenizer
from gpt2load.cli import main as gpt2load_main
from gpt2load.formats import convert, load_checkpoint
from tests.checkpoint_factory import random_hf_state_dict, write_nanogpt_ckpt
from tests.conftest import SHAKESPEARE_TXT, make_dataset
from tests.nanogpt_reference import load_ckpt
from tests.test_char_vocab import CHAR_CONFIG, SHAKESPEARE_CHARS, write_meta

TINY = [
    *("--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32"),
    *("--batch-size", "2", "--lr", "3e-3", "--warmup-iters", "1", "--eval-interval", "2"),
    *("--eval-batches", "1", "--sample-interval", "2", "--sample-tokens", "8", "--force-cpu"),
    *("--no-progress", "--seed", "0", "--max-iters", "2"),
]
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _prepared(run: Path) -> Path:
    """The prepared folder the run trained on, as its checkpoint records it."""
    import json

    return Path(json.loads((run / "last" / "info.json").read_text())["dataset"])


def test_scratch_char_model_trains_on_the_texts_characters_and_generates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "play.txt"
    text.write_text(TEXT)
    run = tmp_path / "run"
    argv = ["pretrain", "--init", "scratch", "--tokenizer", "char", "--data", str(text)]
    argv += ["--out", str(run), "--data-dir", str(tmp_path / "data"), "--sample-prompt", "First"]
    assert cli.main([*argv, *TINY]) == 0
    out = capsys.readouterr().out
    chars = sorted(set(TEXT))
    model = load_checkpoint(run / "best")
    assert model.config.vocab_size == len(chars)  # not GPT-2's 50257
    # The prepared ids are the characters' positions in the sorted list, as nanoGPT's prepare.py
    data = _prepared(run)
    assert data.name.startswith("play_char-")
    vocab = CharTokenizer.from_meta_pkl(data / "meta.pkl")
    assert vocab.itos == chars
    ids = np.fromfile(data / "train.bin", dtype=np.uint16)
    assert vocab.decode(ids.tolist()) == TEXT[: int(len(TEXT) * 0.9)]
    # `finetune prepare --tokenizer char` makes the same folder (found in its cache)
    prepare = ["prepare", str(text), "--tokenizer", "char", "--data-dir", str(tmp_path / "data")]
    assert cli.main(prepare) == 0
    assert "sources unchanged" in capsys.readouterr().out
    # The checkpoints carry the vocabulary, so the run generates alone
    for name in ("best", "last"):
        assert CharTokenizer.from_meta_pkl(run / name / "meta.pkl").itos == chars
    assert "sample" in out
    assert gpt2load_main(["generate", str(run / "best"), "--prompt", "First", "--max-new-tokens",
                          "12", "--temperature", "0"]) == 0  # fmt: skip
    generated = capsys.readouterr().out[:-1]
    assert generated.startswith("First") and len(generated) == len("First") + 12
    assert set(generated) <= set(chars)
    # ... and exports to nanoGPT with its meta.pkl, which nanoGPT's own code reads back
    with pytest.warns(UserWarning, match="exact GELU"):  # nanoGPT's, not this model's tanh
        convert(run / "best", tmp_path / "nano", "nanogpt")
    with open(tmp_path / "nano" / "meta.pkl", "rb") as handle:
        assert pickle.load(handle)["itos"] == dict(enumerate(chars))
    theirs = load_ckpt(tmp_path / "nano" / "ckpt.pt")
    idx = torch.tensor([vocab.encode("First Citizen")])
    with torch.no_grad():
        ours = load_checkpoint(tmp_path / "nano")(idx)
        assert (ours - theirs(idx)).abs().max().item() <= 1e-5

    # A resume samples and saves with the run's vocabulary
    assert cli.main(["resume", str(run), "--max-iters", "4"]) == 0
    assert CharTokenizer.from_meta_pkl(run / "last" / "meta.pkl").itos == chars
    assert load_checkpoint(run / "last").config.vocab_size == len(chars)


@pytest.mark.skipif(not SHAKESPEARE_TXT.is_file(), reason=f"{SHAKESPEARE_TXT} absent")
def test_finetune_shakespeare_char_from_scratch_splits_as_nanogpt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The classic baseline: 65 characters, 1,003,854 train / 111,540 val ids (nanoGPT's)."""
    data_dir = tmp_path / "data"
    (data_dir / "shakespeare").mkdir(parents=True)
    shutil.copyfile(SHAKESPEARE_TXT, data_dir / "shakespeare" / "input.txt")  # no download
    run = tmp_path / "run"
    argv = ["shakespeare", "--init", "scratch", "--tokenizer", "char", "--out", str(run)]
    argv += ["--data-dir", str(data_dir), *TINY]
    assert cli.main(argv) == 0
    prepared = data_dir / "shakespeare_char"
    assert CharTokenizer.from_meta_pkl(prepared / "meta.pkl").itos == SHAKESPEARE_CHARS
    assert (prepared / "train.bin").stat().st_size == 2 * 1_003_854
    assert (prepared / "val.bin").stat().st_size == 2 * 111_540
    assert load_checkpoint(run / "last").config.vocab_size == 65
    assert "ROMEO:" in capsys.readouterr().out  # the sample starts from the prompt


def _nanogpt_char_run(folder: Path) -> Path:
    write_nanogpt_ckpt(folder / "ckpt.pt", random_hf_state_dict(CHAR_CONFIG, 3), CHAR_CONFIG)
    write_meta(folder, SHAKESPEARE_CHARS)
    return folder / "ckpt.pt"


def test_a_nanogpt_char_checkpoint_finetunes_with_its_own_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _nanogpt_char_run(tmp_path / "out-shakespeare-char")
    text = tmp_path / "lines.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 30)
    run = tmp_path / "run"
    argv = ["pretrain", "--init", str(ckpt), "--data", str(text), "--out", str(run)]
    argv += ["--data-dir", str(tmp_path / "data"), *TINY]
    assert cli.main(argv) == 0
    data = _prepared(run)
    vocab = CharTokenizer.from_meta_pkl(data / "meta.pkl")
    assert vocab.itos == SHAKESPEARE_CHARS  # the checkpoint's 65, not the text's own
    ids = np.fromfile(data / "train.bin", dtype=np.uint16)
    assert vocab.decode(ids.tolist()) == text.read_text()[: int(len(text.read_text()) * 0.9)]
    trained = load_checkpoint(run / "best")
    source = load_checkpoint(ckpt)
    assert trained.config == source.config.replace(dropout=trained.config.dropout)  # kept as is
    assert CharTokenizer.from_meta_pkl(run / "best" / "meta.pkl").itos == SHAKESPEARE_CHARS

    # Text the vocabulary cannot spell is one line naming the file and the characters
    bad = tmp_path / "café.txt"
    bad.write_text("ROMEO: café, señor\n" * 30)
    line = _error_line(
        capsys, ["pretrain", "--init", str(ckpt), "--data", str(bad), "--out",
                 str(tmp_path / "r2"), "--data-dir", str(tmp_path / "data"), *TINY],
    )  # fmt: skip
    assert str(bad) in line and "'é', 'ñ'" in line and "65-character vocabulary" in line
    # GPT-2's BPE cannot be forced onto it
    line = _error_line(
        capsys, ["pretrain", "--init", str(ckpt), "--tokenizer", "gpt2", "--data", str(text),
                 "--out", str(tmp_path / "r3"), *TINY],
    )  # fmt: skip
    assert "character-level model" in line and "--tokenizer gpt2" in line


def test_char_needs_a_new_model_or_a_character_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpt2load.native import save_native
    from tests.conftest import random_model

    bpe = save_native(random_model(CHAR_CONFIG.replace(vocab_size=50257)), tmp_path / "bpe")
    line = _error_line(
        capsys, ["pretrain", "--init", str(bpe), "--tokenizer", "char", "--data",
                 str(make_dataset(tmp_path / "ds")), "--out", str(tmp_path / "run"), *TINY],
    )  # fmt: skip
    assert "--tokenizer char needs --init scratch or a character-level checkpoint" in line


def test_nanogpts_prepared_char_folder_trains_a_char_model_by_itself(tmp_path: Path) -> None:
    """``data/shakespeare_char`` as nanoGPT's prepare.py leaves it: train.bin, val.bin, meta.pkl."""
    folder = tmp_path / "shakespeare_char"
    write_meta(folder, SHAKESPEARE_CHARS)
    rng = np.random.default_rng(0)
    for name, count in (("train.bin", 4000), ("val.bin", 600)):
        rng.integers(0, 65, count, dtype=np.uint16).tofile(folder / name)
    run = tmp_path / "run"
    argv = ["pretrain", "--init", "scratch", "--data", str(folder), "--out", str(run), *TINY]
    assert cli.main(argv) == 0
    assert load_checkpoint(run / "last").config.vocab_size == 65
    assert CharTokenizer.from_meta_pkl(run / "last" / "meta.pkl").itos == SHAKESPEARE_CHARS
