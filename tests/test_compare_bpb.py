"""``gpt2load compare`` across tokenizers: bits per byte for a character model beside GPT-2's BPE."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from gpt2load.cli import main
from gpt2load.config import GPTConfig
from gpt2load.formats import load_checkpoint
from gpt2load.native import save_native
from tests.checkpoint_factory import random_hf_state_dict, write_nanogpt_ckpt
from tests.conftest import TINY_CONFIGS, random_model
from tests.test_char_vocab import write_meta

# Accented letters: UTF-8 bytes are not characters, which the byte count must see.
EVAL = "ROMEO: Is the day so young? Café, naïve señor. But soft, what light! " * 5
CHARS = sorted(set(EVAL + "JULIET:\n"))


def hand_bits_per_byte(model, ids: list[int], n_bytes: int, window: int) -> float:
    """Summed next-token loss in bits over non-overlapping windows, per byte, computed here."""
    data = torch.tensor(ids)
    nats = 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window):
            x = data[start : start + window][: len(ids) - 1 - start]
            y = data[start + 1 : start + 1 + len(x)]
            logits = model(x[None])[0]
            nats += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
    return nats / math.log(2) / n_bytes


@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path):
    root = tmp_path_factory.mktemp("bpb")
    char = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=64, vocab_size=len(CHARS))
    write_nanogpt_ckpt(root / "char" / "ckpt.pt", random_hf_state_dict(char, seed=4), char)
    write_meta(root / "char", CHARS)
    save_native(random_model(TINY_CONFIGS["tiny"], seed=1), root / "bpe")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, root / "bpe" / name)
    (root / "eval.txt").write_text(EVAL, encoding="utf-8")
    return root / "char" / "ckpt.pt", root / "bpe", root / "eval.txt"


def md_row(md: str, start: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_bits_per_byte_side_by_side_equal_a_hand_computation(
    two_tokenizers, tmp_path: Path, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    char_ckpt, bpe, eval_text = two_tokenizers
    report = tmp_path / "r.md"
    args = ["compare", str(char_ckpt), str(bpe), "--prompt", "JULIET:", "--max-new-tokens", "8",
            "--eval-text", str(eval_text), "--device", "cpu", "--out", str(report)]  # fmt: skip
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    md = report.read_text()

    stoi = {c: i for i, c in enumerate(CHARS)}
    char_ids = [stoi[c] for c in EVAL]
    bpe_ids = tokenizer.encode_ordinary(EVAL)
    first_bpe_bytes = len(tokenizer.decode_single_token_bytes(bpe_ids[0]))
    expected = [
        hand_bits_per_byte(load_checkpoint(char_ckpt), char_ids, len(EVAL[1:].encode()), 64),
        hand_bits_per_byte(load_checkpoint(bpe), bpe_ids, len(EVAL.encode()) - first_bpe_bytes, 64),
    ]
    assert [float(x) for x in md_row(md, "| bits per byte |")] == pytest.approx(expected, abs=1e-4)
    for bpb in expected:
        assert f"bpb {bpb:.3f}" in out
    assert md_row(md, "| scored |") == [
        f"{len(char_ids) - 1} tokens, {len(EVAL[1:].encode()):,} bytes",
        f"{len(bpe_ids) - 1} tokens, {len(EVAL.encode()) - first_bpe_bytes:,} bytes",
    ]
    assert md_row(md, "| tokenizer |") == [
        f"{len(CHARS)} characters (meta.pkl)",
        "GPT-2 BPE (50,257)",
    ]
    # Which rows compare on which figure, on the terminal and in the report.
    for text in (out, " ".join(md.split())):
        assert "loss and perplexity (per token) compare only between models with the same" in text
        assert "bits per byte compares across all of them" in text
    # The character model's sample is made of its vocabulary.
    sample = md_row(md, "| prompt 1:")[0].replace("<br>", "\n")
    assert sample.startswith("JULIET:")


def test_eval_tokens_cut_one_text_for_every_tokenizer(
    two_tokenizers, tmp_path: Path, tokenizer
) -> None:
    char_ckpt, bpe, eval_text = two_tokenizers
    report = tmp_path / "r.md"
    args = ["compare", str(char_ckpt), str(bpe), "--prompt", "JULIET:", "--max-new-tokens", "2",
            "--eval-text", str(eval_text), "--eval-tokens", "40", "--device", "cpu",
            "--out", str(report)]  # fmt: skip
    assert main(args) == 0
    text = EVAL[:41]  # the first model's 40 targets and the token before them
    bpe_ids = tokenizer.encode_ordinary(text)
    first = len(tokenizer.decode_single_token_bytes(bpe_ids[0]))
    assert md_row(report.read_text(), "| scored |") == [
        f"40 tokens, {len(text[1:].encode())} bytes",
        f"{len(bpe_ids) - 1} tokens, {len(text.encode()) - first} bytes",
    ]


def test_the_terminal_states_each_models_scored_tokens_when_tokenizers_differ(
    two_tokenizers, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    """With one tokenizer the count is one figure; with several each model scores its own
    number of tokens, and the terminal states them, as the reports' "scored" row does."""
    char_ckpt, bpe, eval_text = two_tokenizers
    args = ["compare", str(char_ckpt), str(bpe), "--prompt", "JULIET:", "--max-new-tokens", "2",
            "--eval-text", str(eval_text), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    counts = f"{len(EVAL) - 1:,} / {len(tokenizer.encode_ordinary(EVAL)) - 1:,} tokens"
    assert f"{counts} (model by model)" in out, out
