"""Several models, the same prompts and seed: their texts side by side, and their losses.

The usual question is "did fine-tuning help, and how much better is starting
from GPT-2 than from scratch?"; the samples answer it by eye, the loss and
perplexity on a held-out text answer it with a number. That number depends on
how much history each prediction sees, so every model is scored with the same
window: the smallest context among them, unless ``eval_context`` says otherwise.

Loss per token compares only models with the same tokenizer (a character model makes
~4 predictions where GPT-2's BPE makes one). Every model is therefore also scored in
bits per byte of the text, the scale all tokenizers share, and the reports say which
rows compare on which figure.
"""

from __future__ import annotations

import gc
import html
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EVAL_TEXT = Path("data") / "shakespeare" / "val.bin"
# Narrower than this, side-by-side columns are unreadable: models are stacked instead.
MIN_COLUMN = 20
GAP = " | "


@dataclass
class ModelResult:
    name: str
    path: str
    parameters: int
    samples: list[str]
    loss: float | None = None
    perplexity: float | None = None
    context_length: int | None = None
    tokenizer: str | None = None  # in words, e.g. "GPT-2 BPE (50,257)", "65 characters"
    tokenizer_key: str | None = None  # equal for models whose tokens are the same
    eval_tokens: int | None = None  # targets this model scored
    eval_bytes: int | None = None  # UTF-8 bytes of those targets
    bits_per_byte: float | None = None


@dataclass
class Comparison:
    prompts: list[str]
    settings: dict[str, object]
    eval_text: str | None
    results: list[ModelResult] = field(default_factory=list)
    eval_window: int | None = None  # tokens per scoring window, the same for every model
    eval_tokens: int | None = None  # targets scored per model (None when models differ)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


# ------------------------------------------------------------------ text for display
# Bidirectional overrides and isolates reorder what a terminal shows after them.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def clean_text(text: str) -> str:
    """Generated text made safe to display: no control characters but newlines and tabs.

    A model can emit any byte, escape sequences (``\\x1b[2J``) included, which a
    terminal would obey; carriage returns and line/paragraph separators become
    newlines, other control characters and bidi overrides are dropped.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    return "".join(
        ch
        for ch in text
        if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS)
    )


def char_width(ch: str) -> int:
    """Terminal cells ``ch`` takes: 2 for wide East Asian characters, 0 for combining marks."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    return sum(char_width(ch) for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def _split_to_width(word: str, width: int) -> list[str]:
    """A word longer than the line, cut into pieces of at most ``width`` cells."""
    pieces, current, used = [], "", 0
    for ch in word:
        w = char_width(ch)
        if current and used + w > width:
            pieces.append(current)
            current, used = "", 0
        current += ch
        used += w
    pieces.append(current)
    return pieces


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` display cells; newlines kept, words broken only when too long.

    Like ``textwrap.wrap`` but measuring what a terminal shows, not ``len``: a CJK
    character takes two cells and a combining accent none.
    """
    width = max(1, width)
    lines: list[str] = []
    for paragraph in clean_text(text).split("\n"):
        paragraph = paragraph.expandtabs(4)
        out: list[str] = []
        current, used = "", 0
        for token in re.findall(r"\S+|\s+", paragraph):
            w = display_width(token)
            if token.isspace():
                if used + w <= width and (current or not out):
                    current, used = current + token, used + w  # kept: between words, or indent
                elif current.strip():
                    out.append(current.rstrip())
                    current, used = "", 0
                continue
            if used + w <= width:
                current, used = current + token, used + w
                continue
            if current.strip():
                out.append(current.rstrip())
            current, used = "", 0
            pieces = _split_to_width(token, width)
            out.extend(pieces[:-1])
            current, used = pieces[-1], display_width(pieces[-1])
        if current.strip() or not out:
            out.append(current.rstrip())
        lines.extend(out)
    return lines


def shorten(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` cells, keeping its informative end."""
    text = " ".join(clean_text(text).split())
    if display_width(text) <= width:
        return text
    kept, used = "", 1  # 1: the ellipsis
    for ch in reversed(text):
        if used + char_width(ch) > width:
            break
        kept, used = ch + kept, used + char_width(ch)
    return "…" + kept


# ------------------------------------------------------------------ running the models
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
    eval_context: int | None = None,
) -> Comparison:
    """Generate and score with each model in turn (one in memory at a time).

    Losses are computed over windows of ``eval_context`` tokens, by default the
    smallest context among the models, so each model sees the same history. Every model
    scores the same text: with ``eval_tokens`` and models of different tokenizers, the
    text of the first model's ``eval_tokens`` tokens.
    """
    import torch

    from .commands._common import load_resolved
    from .evaluation import evaluate_tokens, read_eval_text, with_bits_per_byte
    from .formats import inspect_checkpoint
    from .generation import check_sampling_args, generate
    from .loading import resolve
    from .tokenizer import (
        check_tokenizer_fits,
        describe_tokenizer,
        get_tokenizer,
        prompt_tensor,
        tokenizer_key,
    )

    if not models:
        raise ValueError("give at least one model to compare")
    if not prompts:
        raise ValueError("give at least one prompt (--prompt or --prompts-file)")
    check_sampling_args(
        sampling.max_new_tokens, sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed
    )
    if eval_context is not None and eval_context < 1:
        raise ValueError(f"--eval-context must be >= 1, got {eval_context}")
    paths = [resolve(name, source=source) for name in models]
    window = None
    if eval_text is not None:
        # From the headers alone, so the window is known before any model is scored.
        contexts = [inspect_checkpoint(p).config.context_length for p in paths]
        smallest = min(contexts)
        if eval_context is not None and eval_context > smallest:
            name = models[contexts.index(smallest)]
            raise ValueError(
                f"--eval-context {eval_context} is longer than the context of {name} "
                f"({smallest} tokens); every model must see the same window"
            )
        window = eval_context or smallest
    source, cap = None, eval_tokens
    if eval_text is not None:
        source = read_eval_text(eval_text)
        if eval_tokens is not None:
            # Read before any model loads: a meta.pkl that is refused fails in seconds.
            tokenizers = [get_tokenizer(p) for p in paths]
            if len({tokenizer_key(t) for t in tokenizers}) > 1:
                # N tokens are N characters to one model and ~4N to another: cut the text
                # once, where the first model's N + 1 tokens end, and score it all everywhere.
                source, cap = source.prefix(tokenizers[0], eval_tokens + 1), None
    comparison = Comparison(
        prompts=prompts,
        settings=dict(sampling.__dict__),
        eval_text=str(eval_text) if eval_text is not None else None,
        eval_window=window,
    )
    for name, path in zip(models, paths, strict=True):
        model, tokenizer = load_resolved(path, device, dtype)
        check_tokenizer_fits(tokenizer, model.config.vocab_size, name)
        dev = model.tok_emb.weight.device
        samples = []
        for prompt in prompts:
            idx = prompt_tensor(tokenizer, prompt, dev)
            out = generate(
                model,
                idx,
                sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                seed=sampling.seed,
                vocab_limit=tokenizer.n_vocab,
            )
            samples.append(clean_text(prompt + tokenizer.decode(out[0, idx.size(1) :].tolist())))
        result = ModelResult(
            name=name,
            path=str(path),
            parameters=model.num_parameters(),
            samples=samples,
            context_length=model.config.context_length,
            tokenizer=describe_tokenizer(tokenizer),
            tokenizer_key=tokenizer_key(tokenizer),
        )
        if source is not None:
            tokens = source.tokens_for(tokenizer)
            if tokens.size < 2:
                raise ValueError(
                    f"{source.path} holds {tokens.size} token(s) for {name}; at least 2 are "
                    f"needed to score"
                )
            scored = evaluate_tokens(model, tokens, cap, window=window)
            scored = with_bits_per_byte(scored, tokens, tokenizer)
            result.loss, result.perplexity = scored.loss, scored.perplexity
            result.eval_tokens, result.eval_bytes = scored.tokens, scored.bytes
            result.bits_per_byte = scored.bits_per_byte
        comparison.results.append(result)
        if on_model_done is not None:
            on_model_done(result)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    counts = {r.eval_tokens for r in comparison.results}
    if source is not None and len(counts) == 1:
        comparison.eval_tokens = counts.pop()
    return comparison


# ------------------------------------------------------------------ rendering
def _score_line(result: ModelResult) -> str:
    if result.loss is None:
        return f"{result.parameters / 1e6:.1f}M params"
    bpb = f"  bpb {result.bits_per_byte:.3f}" if result.bits_per_byte is not None else ""
    return (
        f"loss {result.loss:.3f}  ppl {result.perplexity:.2f}{bpb}  "
        f"({result.parameters / 1e6:.1f}M)"
    )


def _mixed_tokenizers(comparison: Comparison) -> bool:
    return len({r.tokenizer_key for r in comparison.results}) > 1


def _eval_note(comparison: Comparison) -> str | None:
    """Which text the losses are on and with which window, in words."""
    if not comparison.eval_text:
        return None
    note = f"loss and perplexity on {comparison.eval_text}"
    if comparison.eval_tokens is not None:
        note += f", {comparison.eval_tokens:,} tokens"
    if comparison.eval_window is not None:
        note += f", every model scored in windows of {comparison.eval_window} tokens"
        if _mixed_tokenizers(comparison):
            note += " of its own tokenizer"
    if any(r.bits_per_byte is not None for r in comparison.results):
        note += "; bpb = bits per byte of the text (summed loss / ln 2 / UTF-8 bytes scored)"
    return note


def _comparable_note(comparison: Comparison) -> str | None:
    """Which rows compare on which figure: per-token loss within a tokenizer, bpb across all."""
    if not comparison.eval_text or not comparison.results:
        return None
    if comparison.results[0].tokenizer_key is None:
        return None  # results made without tokenizer details (older callers)
    if not _mixed_tokenizers(comparison):
        return (
            f"every model uses one tokenizer ({comparison.results[0].tokenizer}): "
            f"loss, perplexity and bits per byte all compare across the models"
        )
    groups: dict[str, list[int]] = {}
    words: dict[str, str] = {}
    for i, r in enumerate(comparison.results):
        groups.setdefault(str(r.tokenizer_key), []).append(i + 1)
        words[str(r.tokenizer_key)] = str(r.tokenizer)
    parts = [
        f"{words[key]}: model{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
        for key, ids in groups.items()
    ]
    return (
        "the models use different tokenizers, so loss and perplexity (per token) compare "
        f"only between models with the same one ({'; '.join(parts)}); bits per byte "
        "compares across all of them"
    )


def render_columns(comparison: Comparison, width: int | None = None) -> str:
    """One column per model, each sample wrapped to fit the terminal.

    When the columns would be narrower than ``MIN_COLUMN`` cells, the models are
    stacked one below the other instead, each text using the whole width.
    """
    width = width or shutil.get_terminal_size((120, 24)).columns
    width = max(width, 1)
    n = len(comparison.results)
    col = (width - len(GAP) * (n - 1)) // n
    if n > 1 and col < MIN_COLUMN:
        return _render_stacked(comparison, width)

    def row(cells: list[list[str]]) -> list[str]:
        height = max(len(c) for c in cells)
        return [
            GAP.join(pad(c[i] if i < len(c) else "", col) for c in cells).rstrip()
            for i in range(height)
        ]

    rule = min(width, col * n + len(GAP) * (n - 1))
    # Long paths keep their informative end ("runs/shakespeare/best"), on one line.
    out = row([[shorten(r.name, col)] for r in comparison.results])
    out += row([wrap(_score_line(r), col) for r in comparison.results])
    if _mixed_tokenizers(comparison):
        out += row([wrap(f"tokenizer: {r.tokenizer}", col) for r in comparison.results])
    for note in (_eval_note(comparison), _comparable_note(comparison)):
        if note:
            out += wrap(f"({note})", width)
    for p, prompt in enumerate(comparison.prompts):
        out.append("=" * rule)
        out += wrap(f"prompt {p + 1}: {prompt!r}", width)
        out.append("-" * rule)
        out += row([wrap(r.samples[p], col) for r in comparison.results])
    return "\n".join(out)


def _render_stacked(comparison: Comparison, width: int) -> str:
    """Models one below the other: for terminals too narrow for a column each."""
    out: list[str] = []
    tags = [f"[{i + 1}]" for i in range(len(comparison.results))]
    for tag, r in zip(tags, comparison.results, strict=True):
        out.append(shorten(f"{tag} {r.name}", width))
        out += wrap(f"    {_score_line(r)}", width)
        if _mixed_tokenizers(comparison):
            out += wrap(f"    tokenizer: {r.tokenizer}", width)
    for note in (_eval_note(comparison), _comparable_note(comparison)):
        if note:
            out += wrap(f"({note})", width)
    for p, prompt in enumerate(comparison.prompts):
        out.append("=" * width)
        out += wrap(f"prompt {p + 1}: {prompt!r}", width)
        for tag, r in zip(tags, comparison.results, strict=True):
            out.append(shorten(f"--- {tag} {r.name}", width))
            out += wrap(r.samples[p], width)
    return "\n".join(out)


def _settings_line(comparison: Comparison) -> str:
    return ", ".join(f"{k}={v}" for k, v in comparison.settings.items())


def render_markdown(comparison: Comparison) -> str:
    def cell(text: str) -> str:
        return html.escape(clean_text(text)).replace("|", "&#124;").replace("\n", "<br>")

    names = [cell(r.name) for r in comparison.results]
    lines = ["# Model comparison", "", f"Sampling: {_settings_line(comparison)}", ""]
    note = _eval_note(comparison)
    if note:
        lines += [f"Scores: {cell(note)}.", ""]
    comparable = _comparable_note(comparison)
    if comparable:
        lines += [f"Comparable: {cell(comparable)}.", ""]
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
        if any(r.bits_per_byte is not None for r in comparison.results):
            lines.append(
                "| bits per byte | "
                + " | ".join(_or_na(r.bits_per_byte, "{:.4f}") for r in comparison.results)
                + " |"
            )
        if any(r.eval_tokens is not None for r in comparison.results):
            lines.append(
                "| scored | "
                + " | ".join(
                    f"{_or_na(r.eval_tokens, '{:,}')} tokens, {_or_na(r.eval_bytes, '{:,}')} bytes"
                    for r in comparison.results
                )
                + " |"
            )
    if any(r.tokenizer is not None for r in comparison.results):
        lines.append(
            "| tokenizer | "
            + " | ".join(cell(r.tokenizer or "") for r in comparison.results)
            + " |"
        )
    for p, prompt in enumerate(comparison.prompts):
        samples = " | ".join(cell(r.samples[p]) for r in comparison.results)
        lines.append(f"| prompt {p + 1}: {cell(prompt)} | {samples} |")
    return "\n".join(lines) + "\n"


def _or_na(value: float | int | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def render_html(comparison: Comparison) -> str:
    """A self-contained page: no scripts, no external styles or fonts."""

    def e(text: str) -> str:
        return html.escape(clean_text(text))

    n = len(comparison.results)
    head = "".join(
        f"<th>{e(r.name)}<div class=score>{e(_score_line(r))}</div>"
        + (f"<div class=score>tokenizer: {e(r.tokenizer)}</div>" if r.tokenizer else "")
        + "</th>"
        for r in comparison.results
    )
    rows = "".join(
        f"<tr><td class=prompt colspan={n}>Prompt {p + 1}: {e(prompt)}</td></tr><tr>"
        + "".join(f"<td><pre>{e(r.samples[p])}</pre></td>" for r in comparison.results)
        + "</tr>"
        for p, prompt in enumerate(comparison.prompts)
    )
    note = _eval_note(comparison)
    eval_note = f"<p>Scores: {e(note)}.</p>" if note else ""
    comparable = _comparable_note(comparison)
    if comparable:
        eval_note += f"<p>Comparable: {e(comparable)}.</p>"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Model comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%;"
        "table-layout:fixed}th,td{border:1px solid #ccc;padding:.5em;vertical-align:top}"
        "pre{white-space:pre-wrap;margin:0;font-size:.9em}.score{font-weight:normal;"
        "color:#555;font-size:.85em}.prompt{background:#f3f3f3}</style></head><body>"
        f"<h1>Model comparison</h1><p>Sampling: {e(_settings_line(comparison))}</p>{eval_note}"
        f"<table><tr>{head}</tr>{rows}</table></body></html>\n"
    )
