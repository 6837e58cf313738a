"""Issue 6's flow offline: train, fine-tune, train from scratch, then compare the three."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune import cli as finetune_cli
from gpt2load.cli import main as gpt2load_main
from gpt2load.console import Settings, settings_from_checkpoint
from gpt2load.evaluation import evaluate_tokens, read_eval_tokens
from gpt2load.formats import load_checkpoint
from tests.conftest import SHAKESPEARE_TXT

TINY = "--n-layer 2 --n-head 2 --n-embd 32"
STEPS = "--batch-size 4 --max-iters 4 --eval-interval 2 --eval-batches 2 --sample-interval 0"
COMMON = f"{STEPS} --force-cpu --no-progress"


def finetune(command: str) -> None:
    assert finetune_cli.main(command.split()) == 0, command


@pytest.mark.slow
def test_finetuned_and_scratch_best_checkpoints_compare_end_to_end(
    tmp_path: Path,
    tokenizer_dir: Path,
    tokenizer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not SHAKESPEARE_TXT.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE_TXT} (../shared/data absent)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer_dir))
    (tmp_path / "data" / "shakespeare").mkdir(parents=True)
    shutil.copy(SHAKESPEARE_TXT, tmp_path / "data" / "shakespeare" / "input.txt")  # no download

    # A small model stands in for the downloaded gpt2, which a real run starts from.
    finetune(f"shakespeare --init scratch {TINY} --block-size 32 {COMMON} --out runs/base")
    finetune(f"shakespeare --init runs/base/best --block-size 32 --top-k none {COMMON} "
             f"--out runs/finetuned")  # fmt: skip
    finetune(f"shakespeare --init scratch {TINY} --block-size 16 {COMMON} --out runs/scratch")
    bests = [Path("runs") / name / "best" for name in ("base", "finetuned", "scratch")]
    assert all((best / "model.safetensors").is_file() for best in bests)
    capsys.readouterr()

    # What `gpt2load compare gpt2 runs/shakespeare/best runs/scratch/best` does, offline.
    args = ["compare", *map(str, bests), "--prompt", "ROMEO:", "--max-new-tokens", "8",
            "--eval-tokens", "3000", "--out", "report.md"]  # fmt: skip
    assert gpt2load_main(args) == 0
    out = capsys.readouterr().out
    assert out.count("loss ") >= 3 and "data/shakespeare/val.bin" in out  # the default eval text
    md = Path("report.md").read_text()
    assert "every model scored in windows of 16 tokens" in md  # the scratch model's context

    val = read_eval_tokens(Path("data/shakespeare/val.bin"), tokenizer)
    loss_row = next(line for line in md.splitlines() if line.startswith("| loss on"))
    losses = [float(c) for c in loss_row.strip("|").split("|")[1:]]
    expected = [
        evaluate_tokens(load_checkpoint(best), val, max_tokens=3000, window=16).loss
        for best in bests
    ]
    assert losses == pytest.approx(expected, abs=1e-4)
    assert losses[0] != losses[1]  # fine-tuning changed the model
    assert next(line for line in md.splitlines() if line.startswith("| perplexity |"))
    samples = next(line for line in md.splitlines() if line.startswith("| prompt 1"))
    assert samples.count("ROMEO:") == 1 + 3

    # The console takes its defaults from the sampling settings the checkpoint carries.
    assert 'top_k = "none"' in Path("runs/finetuned/config.toml").read_text()
    assert settings_from_checkpoint(bests[1]) == Settings(
        temperature=0.8, top_k=None, max_new_tokens=100
    )
