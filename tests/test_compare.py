"""``gpt2load compare``: same prompts and seed for every model, side by side, with losses."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2load.cli import main
from gpt2load.compare import (
    Comparison,
    ModelResult,
    clean_text,
    render_columns,
    render_html,
    render_markdown,
)
from gpt2load.evaluation import evaluate_tokens, read_eval_tokens
from tests.conftest import TINY_CONFIGS, random_model
from tests.test_cli_generate import make_checkpoint


def test_evaluate_tokens_matches_a_direct_computation() -> None:
    model = random_model(TINY_CONFIGS["small_vocab"], seed=5)
    ctx = model.config.context_length
    tokens = np.random.default_rng(0).integers(0, 101, size=2 * ctx + 7 + 1)
    result = evaluate_tokens(model, tokens, batch_size=1)
    data = torch.from_numpy(tokens)
    losses = []
    for start in range(0, len(data) - 1, ctx):
        x = data[start : start + ctx][: len(data) - 1 - start]
        y = data[start + 1 : start + 1 + len(x)]
        logits = model(x[None])
        losses.append(torch.nn.functional.cross_entropy(logits[0], y, reduction="none"))
    expected = torch.cat(losses).mean().item()
    assert result.tokens == len(tokens) - 1
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)


def test_columns_fit_the_width() -> None:
    comparison = Comparison(
        prompts=["Once"],
        settings={"seed": 0},
        eval_text=None,
        results=[
            ModelResult("a", "a", 10, ["Once " + "word " * 60]),
            ModelResult("b", "b", 10, ["Once upon\na time"]),
        ],
    )
    text = render_columns(comparison, width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "upon" in text and "a time" in text


def cells(text: str) -> int:
    """Terminal cells of ``text``, measured independently of gpt2load.compare."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _comparison(samples: list[str], names: list[str] | None = None) -> Comparison:
    names = names or [f"model-{i}" for i in range(len(samples))]
    return Comparison(
        prompts=["Once"],
        settings={"seed": 0},
        eval_text="val.txt",
        eval_window=40,
        eval_tokens=1234,
        results=[
            ModelResult(n, n, 10, [s], loss=3.0 + i, perplexity=20.0 + i)
            for i, (n, s) in enumerate(zip(names, samples, strict=True))
        ],
    )


WIDE = "Once 日本語のテキストは二つのセルを使います。" * 4 + " café naïve e\u0301e"


def test_columns_measure_display_width_not_characters() -> None:
    text = render_columns(_comparison([WIDE, "Once upon a time " * 8]), width=80)
    lines = text.splitlines()
    assert all(cells(line) <= 80 for line in lines), max(lines, key=cells)
    # The gap between the columns sits at the same cell on every line of the sample rows.
    gaps = {cells(line.split(" | ")[0]) for line in lines if " | " in line}
    assert len(gaps) == 1, gaps
    assert "日本語" in text and "upon" in text


def test_narrow_terminals_stack_the_models() -> None:
    names = ["runs/shakespeare/best", "runs/scratch/best", "gpt2"]
    comparison = _comparison([WIDE, "Once upon a time " * 8, "Once more " * 20], names)
    for width in (30, 45, 59):  # (59 - 6) // 3 = 17 cells a column: too narrow
        text = render_columns(comparison, width=width)
        lines = text.splitlines()
        assert all(cells(line) <= width for line in lines), (width, max(lines, key=cells))
        assert not any(" | " in line for line in lines)  # no columns
        headings = [line for line in lines if line.startswith(("--- [", "…"))]
        assert len(headings) == 3, lines
        for i, (name, heading) in enumerate(zip(names, headings, strict=True)):
            full = f"--- [{i + 1}] {name}"  # a long one keeps its end
            assert heading == full or (heading[0] == "…" and full.endswith(heading[1:]))
        assert "windows of 40 tokens" in " ".join(lines)
    wide = render_columns(comparison, width=120).splitlines()
    assert any(line.count(" | ") == 2 for line in wide)  # side by side when there is room


def test_control_characters_never_reach_the_terminal_or_the_reports() -> None:
    sample = "Once\x1b[2J\x1b]0;pwned\x07 upon\r\na\u202etime\x00\x85 end\tTab"
    assert clean_text(sample) == "Once[2J]0;pwned upon\natime end\tTab"
    comparison = _comparison([sample, "Once"])
    for text, allowed in (
        (render_columns(comparison, width=100), "\n"),  # tabs become spaces on the terminal
        (render_columns(comparison, width=20), "\n"),
        (render_markdown(comparison), "\n\t"),
        (render_html(comparison), "\n\t"),
    ):
        bad = [c for c in text if unicodedata.category(c) == "Cc" and c not in allowed]
        assert not bad and "\u202e" not in text, bad


def test_compare_two_models_side_by_side(
    tmp_path: Path, tokenizer_dir: Path, tokenizer, capsys: pytest.CaptureFixture
) -> None:
    a = make_checkpoint(tmp_path / "a", tokenizer_dir, seed=1)
    b = make_checkpoint(tmp_path / "b", tokenizer_dir, seed=2)
    eval_text = tmp_path / "eval.txt"
    eval_text.write_text("To be, or not to be, that is the question. " * 20)
    report = tmp_path / "report.md"
    page = tmp_path / "report.html"
    common = ["--prompt", "ROMEO:", "--prompt", "JULIET:", "--max-new-tokens", "6",
              "--seed", "4", "--eval-text", str(eval_text), "--device", "cpu"]  # fmt: skip
    assert main(["compare", str(a), str(b), str(a), *common, "--out", str(report)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert [h.strip()[-10:] for h in header.split(" | ")] == [str(p)[-10:] for p in (a, b, a)]
    assert out.count("loss ") >= 3 and "ppl" in out
    md = report.read_text()
    assert f"| | {a} | {b} | {a} |" in md
    assert main(["compare", str(a), str(b), *common, "--out", str(page)]) == 0
    html = page.read_text()

    # Every model saw the same prompts and seed: the same model twice writes the same text.
    rows = [line for line in md.splitlines() if line.startswith("| prompt")]
    assert len(rows) == 2
    cells = [row[2:-2].split(" | ") for row in rows]
    assert all(c[1] == c[3] for c in cells)
    assert all(c[1] != c[2] for c in cells)

    # The reported loss is the model's loss on the text.
    model_a = random_model(TINY_CONFIGS["tiny"], seed=1)
    expected = evaluate_tokens(model_a, read_eval_tokens(eval_text, tokenizer)).loss
    loss_row = next(line for line in md.splitlines() if line.startswith("| loss on"))
    assert f"{expected:.4f}" in loss_row
    assert html.startswith("<!doctype html>") and "JULIET:" in html and "<script" not in html


def test_compare_needs_a_prompt(tmp_path: Path, tokenizer_dir: Path) -> None:
    a = make_checkpoint(tmp_path / "a", tokenizer_dir)
    assert main(["compare", str(a), "--no-eval"]) == 2
