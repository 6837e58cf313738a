"""``gpt2load generate`` from a native checkpoint, in a real subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from gpt2load.generation import generate
from gpt2load.native import save_native
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model


def make_checkpoint(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny native checkpoint with the tokenizer files beside it, as a download would have."""
    model = random_model(TINY_CONFIGS["tiny"], seed=seed)
    save_native(model, folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt2load", *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_prints_the_greedy_continuation(tmp_path: Path, tokenizer_dir, tokenizer) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    result = run_cli(
        "generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "12",
        "--temperature", "0", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = random_model(TINY_CONFIGS["tiny"], seed=0)
    ids = tokenizer.encode("ROMEO:")
    expected = generate(model, torch.tensor([ids]), 12, temperature=0)[0].tolist()
    assert result.stdout == tokenizer.decode(expected) + "\n"


def test_num_samples_and_seed_are_reproducible(tmp_path: Path, tokenizer_dir) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    args = ("generate", str(folder), "--prompt", "Hi", "--max-new-tokens", "8", "--seed", "3",
            "--num-samples", "2", "--top-k", "20", "--device", "cpu")  # fmt: skip
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.count("--- sample") == 2


def test_missing_model_is_a_one_line_error() -> None:
    result = run_cli("generate", "no/such/folder", "--prompt", "x")
    assert result.returncode == 2
    assert "neither an existing file or folder nor a GPT-2 model name" in result.stderr
    assert "Traceback" not in result.stderr
