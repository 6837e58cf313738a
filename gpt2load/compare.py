"""Several models, the same prompts and seed: their texts side by side, and their losses.

The usual question is "did fine-tuning help, and how much better is starting
from GPT-2 than from scratch?"; the samples answer it by eye, the loss and
perplexity on a held-out text answer it with a number.
"""

from __future__ import annotations

import gc
import html
import os
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EVAL_TEXT = Path("data") / "shakespeare" / "val.bin"


@dataclass
class ModelResult:
    name: str
    path: str
    parameters: int
    samples: list[str]
    loss: float | None = None
    perplexity: float | None = None


@dataclass
class Comparison:
    prompts: list[str]
    settings: dict[str, object]
    eval_text: str | None
    results: list[ModelResult] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


def compare_models(
    models: list[str],
    prompts: list[str],
    sampling: Sampling,
    eval_text: str | os.PathLike[str] | None = None,
    eval_tokens: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
    on_model_done=None,
) -> Comparison:
    """Generate and score with each model in turn (one in memory at a time)."""
    import torch

    from .commands._common import encode_prompt, load_model
    from .evaluation import evaluate_tokens, read_eval_tokens
    from .generation import generate

    if not models:
        raise ValueError("give at least one model to compare")
    if not prompts:
        raise ValueError("give at least one prompt (--prompt or --prompts-file)")
    comparison = Comparison(
        prompts=prompts,
        settings=dict(sampling.__dict__),
        eval_text=str(eval_text) if eval_text is not None else None,
    )
    for name in models:
        model, tokenizer, path = load_model(name, device, dtype, source)
        dev = model.tok_emb.weight.device
        samples = []
        for prompt in prompts:
            idx = encode_prompt(tokenizer, prompt, dev)
            out = generate(
                model,
                idx,
                sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                seed=sampling.seed,
            )
            samples.append(prompt + tokenizer.decode(out[0, idx.size(1) :].tolist()))
        result = ModelResult(
            name=name, path=str(path), parameters=model.num_parameters(), samples=samples
        )
        if eval_text is not None:
            scored = evaluate_tokens(model, read_eval_tokens(eval_text, tokenizer), eval_tokens)
            result.loss, result.perplexity = scored.loss, scored.perplexity
        comparison.results.append(result)
        if on_model_done is not None:
            on_model_done(result)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return comparison


def _score_line(result: ModelResult) -> str:
    if result.loss is None:
        return f"{result.parameters / 1e6:.1f}M params"
    return f"loss {result.loss:.3f}  ppl {result.perplexity:.2f}  ({result.parameters / 1e6:.1f}M)"


def render_columns(comparison: Comparison, width: int | None = None) -> str:
    """One column per model, each sample wrapped to fit the terminal."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    n = len(comparison.results)
    gap = " | "
    col = max(10, (width - len(gap) * (n - 1)) // n)

    def wrap(text: str) -> list[str]:
        lines: list[str] = []
        for paragraph in text.split("\n"):
            lines.extend(textwrap.wrap(paragraph, col, replace_whitespace=False) or [""])
        return lines

    def row(cells: list[list[str]]) -> list[str]:
        height = max(len(c) for c in cells)
        return [
            gap.join(c[i].ljust(col) if i < len(c) else " " * col for c in cells).rstrip()
            for i in range(height)
        ]

    def label(name: str) -> list[str]:
        # Long paths keep their informative end ("runs/shakespeare/best"), on one line.
        return [name if len(name) <= col else "…" + name[-(col - 1) :]]

    out = row([label(r.name) for r in comparison.results])
    out += row([wrap(_score_line(r)) for r in comparison.results])
    if comparison.eval_text:
        out.append(f"(loss and perplexity on {comparison.eval_text})")
    for p, prompt in enumerate(comparison.prompts):
        out.append("=" * min(width, col * n + len(gap) * (n - 1)))
        out.append(f"prompt {p + 1}: {prompt!r}")
        out.append("-" * min(width, col * n + len(gap) * (n - 1)))
        out += row([wrap(r.samples[p]) for r in comparison.results])
    return "\n".join(out)


def _settings_line(comparison: Comparison) -> str:
    return ", ".join(f"{k}={v}" for k, v in comparison.settings.items())


def render_markdown(comparison: Comparison) -> str:
    def cell(text: str) -> str:
        return html.escape(text).replace("|", "&#124;").replace("\n", "<br>")

    names = [cell(r.name) for r in comparison.results]
    lines = ["# Model comparison", "", f"Sampling: {_settings_line(comparison)}", ""]
    lines += ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines.append(
        "| parameters | " + " | ".join(f"{r.parameters:,}" for r in comparison.results) + " |"
    )
    if comparison.eval_text:
        lines.append(
            f"| loss on `{comparison.eval_text}` | "
            + " | ".join(f"{r.loss:.4f}" for r in comparison.results)
            + " |"
        )
        lines.append(
            "| perplexity | " + " | ".join(f"{r.perplexity:.2f}" for r in comparison.results) + " |"
        )
    for p, prompt in enumerate(comparison.prompts):
        samples = " | ".join(cell(r.samples[p]) for r in comparison.results)
        lines.append(f"| prompt {p + 1}: {cell(prompt)} | {samples} |")
    return "\n".join(lines) + "\n"


def render_html(comparison: Comparison) -> str:
    """A self-contained page: no scripts, no external styles or fonts."""
    e = html.escape
    n = len(comparison.results)
    head = "".join(
        f"<th>{e(r.name)}<div class=score>{e(_score_line(r))}</div></th>"
        for r in comparison.results
    )
    rows = "".join(
        f"<tr><td class=prompt colspan={n}>Prompt {p + 1}: {e(prompt)}</td></tr><tr>"
        + "".join(f"<td><pre>{e(r.samples[p])}</pre></td>" for r in comparison.results)
        + "</tr>"
        for p, prompt in enumerate(comparison.prompts)
    )
    eval_note = (
        f"<p>Loss and perplexity on <code>{e(comparison.eval_text)}</code>.</p>"
        if comparison.eval_text
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Model comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%;"
        "table-layout:fixed}th,td{border:1px solid #ccc;padding:.5em;vertical-align:top}"
        "pre{white-space:pre-wrap;margin:0;font-size:.9em}.score{font-weight:normal;"
        "color:#555;font-size:.85em}.prompt{background:#f3f3f3}</style></head><body>"
        f"<h1>Model comparison</h1><p>Sampling: {e(_settings_line(comparison))}</p>{eval_note}"
        f"<table><tr>{head}</tr>{rows}</table></body></html>\n"
    )
