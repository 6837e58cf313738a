"""``gpt2load compare`` through its command line: inputs, the shared eval window, reports, width."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from gpt2load.cli import main
from gpt2load.config import GPTConfig
from gpt2load.evaluation import evaluate_tokens, read_eval_tokens
from gpt2load.formats import load_checkpoint
from gpt2load.native import save_native
from tests.conftest import REPO_ROOT, SHAKESPEARE_TXT, TINY_CONFIGS, random_model
from tests.test_cli_generate import make_padded_checkpoint

SHORT = TINY_CONFIGS["odd"]  # context 40, where "tiny" has 64
EVAL_TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 12


def _checkpoint(folder: Path, tokenizer_dir: Path, config: GPTConfig, seed: int) -> Path:
    save_native(random_model(config, seed=seed), folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    text = root / "eval.txt"
    text.write_text(EVAL_TEXT)
    return {
        "a": _checkpoint(root / "a", tokenizer_dir, TINY_CONFIGS["tiny"], seed=1),
        "b": _checkpoint(root / "b", tokenizer_dir, TINY_CONFIGS["tiny"], seed=2),
        "short": _checkpoint(root / "short", tokenizer_dir, SHORT, seed=3),
        "eval": text,
    }


def cells(text: str) -> int:
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def md_row(md: str, start: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_out_suffix_is_case_insensitive(models: dict[str, Path], tmp_path: Path) -> None:
    args = ["compare", str(models["a"]), "--prompt", "Hi", "--max-new-tokens", "3", "--no-eval"]
    assert main([*args, "--out", str(tmp_path / "R.MD")]) == 0
    assert (tmp_path / "R.MD").read_text().startswith("# Model comparison")
    assert main([*args, "--out", str(tmp_path / "R.HTML")]) == 0
    assert (tmp_path / "R.HTML").read_text().startswith("<!doctype html>")
    assert main([*args, "--out", str(tmp_path / "R.txt")]) == 2
    assert not (tmp_path / "R.txt").exists()


def test_every_model_is_scored_with_the_same_window(
    models: dict[str, Path], tmp_path: Path, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.md"
    args = ["compare", str(models["a"]), str(models["short"]), "--prompt", "Hi",
            "--max-new-tokens", "3", "--eval-text", str(models["eval"]), "--device", "cpu"]  # fmt: skip
    assert main([*args, "--out", str(report)]) == 0
    tokens = read_eval_tokens(models["eval"], tokenizer)
    assert len(tokens) > 2 * 64  # several windows, so the window size matters
    md = report.read_text()
    losses = [float(x) for x in md_row(md, "| loss on")]
    for path, loss in zip((models["a"], models["short"]), losses, strict=True):
        model = load_checkpoint(path)
        assert loss == pytest.approx(evaluate_tokens(model, tokens, window=40).loss, abs=1e-4)
    own_window = evaluate_tokens(load_checkpoint(models["a"]), tokens).loss  # its context, 64
    assert abs(own_window - losses[0]) > 1e-3  # so scoring it on 64 would not have passed
    assert "every model scored in windows of 40 tokens" in md
    assert "windows of 40 tokens" in " ".join(capsys.readouterr().out.split())

    assert main([*args, "--eval-context", "16", "--out", str(report)]) == 0
    losses = [float(x) for x in md_row(report.read_text(), "| loss on")]
    expected = evaluate_tokens(load_checkpoint(models["short"]), tokens, window=16).loss
    assert losses[1] == pytest.approx(expected, abs=1e-4)
    assert "windows of 16 tokens" in report.read_text()

    capsys.readouterr()
    assert main([*args, "--eval-context", "50"]) == 2
    err = capsys.readouterr().err
    assert "--eval-context 50" in err and str(models["short"]) in err and "40 tokens" in err


def test_prompts_file_adds_to_the_prompts(models: dict[str, Path], tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO:\n\n   \nJULIET:\\nO Romeo\nFirst Citizen:\n", encoding="utf-8")
    report = tmp_path / "r.md"
    args = ["compare", str(models["a"]), "--prompt", "KING:", "--prompts-file", str(prompts),
            "--max-new-tokens", "2", "--no-eval", "--out", str(report)]  # fmt: skip
    assert main(args) == 0
    rows = [line for line in report.read_text().splitlines() if line.startswith("| prompt")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| prompt 1: KING:",
        "| prompt 2: ROMEO:",
        "| prompt 3: JULIET:<br>O Romeo",  # "\n" in the file is a newline in the prompt
        "| prompt 4: First Citizen:",
    ]
    assert main([*args[:-2], "--prompts-file", str(tmp_path / "missing.txt")]) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["compare", str(models["a"]), "--prompts-file", str(empty), "--no-eval"]) == 2


def test_default_eval_text_is_the_prepared_shakespeare_val_split(
    models: dict[str, Path],
    tmp_path: Path,
    tokenizer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["compare", str(models["a"]), "--prompt", "Hi", "--max-new-tokens", "2",
            "--out", "r.md"]  # fmt: skip
    assert main(args) == 0  # not prepared: a note, no scores
    assert "finetune prepare shakespeare" in capsys.readouterr().err
    assert "| loss on" not in Path("r.md").read_text()

    if SHAKESPEARE_TXT.is_file():
        text = SHAKESPEARE_TXT.read_text(encoding="utf-8")[-3000:]
    else:
        text = EVAL_TEXT
    val = tmp_path / "data" / "shakespeare" / "val.bin"
    val.parent.mkdir(parents=True)
    np.asarray(tokenizer.encode_ordinary(text), dtype=np.uint16).tofile(val)
    assert main(args) == 0
    md = Path("r.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| loss on"))
    assert "data/shakespeare/val.bin" in row
    expected = evaluate_tokens(load_checkpoint(models["a"]), np.fromfile(val, dtype=np.uint16))
    assert float(md_row(md, "| loss on")[0]) == pytest.approx(expected.loss, abs=1e-4)
    assert main([*args, "--no-eval"]) == 0
    assert "| loss on" not in Path("r.md").read_text()


def test_reports_carry_the_scores_and_nothing_external(
    models: dict[str, Path], tmp_path: Path, tokenizer
) -> None:
    args = ["compare", str(models["a"]), str(models["b"]), "--prompt", "Hi <b>&",
            "--max-new-tokens", "4", "--eval-text", str(models["eval"]), "--device", "cpu"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "r.md")]) == 0
    assert main([*args, "--out", str(tmp_path / "r.html")]) == 0
    md, page = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    tokens = read_eval_tokens(models["eval"], tokenizer)
    scores = [evaluate_tokens(load_checkpoint(models[k]), tokens) for k in ("a", "b")]
    assert md_row(md, "| loss on") == [f"{s.loss:.4f}" for s in scores]
    assert md_row(md, "| perplexity |") == [f"{s.perplexity:.2f}" for s in scores]
    for s in scores:
        assert f"loss {s.loss:.3f}" in page and f"ppl {s.perplexity:.2f}" in page
    assert "windows of 64 tokens" in page and "windows of 64 tokens" in md
    assert "Hi &lt;b&gt;&amp;" in page  # prompts are escaped, not markup
    for external in ("<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url("):
        assert external not in page.lower(), external
    assert not re.search(r"https?://", page)


def test_terminal_width_from_columns_and_the_script(
    models: dict[str, Path],
    tokenizer_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(models["a"]), str(models["b"]), str(models["short"]), "--prompt", "ROMEO:",
            "--max-new-tokens", "30", "--temperature", "0.9", "--eval-text", str(models["eval"]),
            "--device", "cpu"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer_dir))
    monkeypatch.delenv("LINES", raising=False)
    monkeypatch.setenv("COLUMNS", "150")
    capsys.readouterr()
    assert main(["compare", *args]) == 0, capsys.readouterr().err
    wide = capsys.readouterr().out
    lines = wide.splitlines()
    assert all(cells(line) <= 150 for line in lines)
    assert sum(line.count(" | ") == 2 for line in lines) >= 3  # three columns, several rows
    assert max(cells(line) for line in lines) > 100  # the width was used, not a default

    script = REPO_ROOT / "scripts" / "compare_generations.py"
    monkeypatch.setenv("COLUMNS", "50")
    # The script, in a process of its own from another folder: the same command.
    narrow = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180
    )
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(cells(line) <= 50 for line in lines), max(lines, key=cells)
    assert not any(" | " in line for line in lines)  # (50 - 6) // 3 = 14 cells: stacked
    # One header per model above its text ("--- [i] name", its start cut to "…" when long;
    # the score rows above may be cut too, depending on how long the temporary paths are).
    texts = lines[next(i for i, line in enumerate(lines) if line.startswith("prompt 1:")) :]
    assert sum(line.startswith(("--- [", "…")) for line in texts) == 3
    # The same models and text: the same scores whatever the layout.
    scores = re.compile(r"loss (\S+)  ppl (\S+)")
    assert len(scores.findall(wide)) == 3
    assert scores.findall(narrow.stdout) == scores.findall(wide)


def test_padded_vocabulary_compares(models: dict[str, Path], tmp_path: Path, tokenizer_dir) -> None:
    padded = make_padded_checkpoint(tmp_path / "padded", tokenizer_dir)
    report = tmp_path / "r.md"
    args = ["compare", str(padded), str(models["a"]), "--prompt", "ROMEO:", "--max-new-tokens",
            "6", "--temperature", "0", "--eval-text", str(models["eval"]), "--out", str(report)]  # fmt: skip
    assert main(args) == 0
    assert "ROMEO:" in md_row(report.read_text(), "| prompt 1")[0]
