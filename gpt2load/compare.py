"""Several models' texts and scores on the same prompts and seed, side by side on a terminal,
as Markdown or as HTML, saying which rows compare on which figure (see gpt2load.evaluation)."""

from __future__ import annotations

import html
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from itertools import zip_longest

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


# ------------------------------------------------------------------ text for display
# Bidirectional overrides and isolates reorder what a terminal shows after them.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(text: str) -> str:
    """``text`` safe to display (a model can emit any byte, escape sequences included): CR and
    line/paragraph separators become newlines; bidi overrides and other controls (tabs and
    newlines stay) are dropped."""
    text = re.sub("\r\n?|[\u2028\u2029]", "\n", text)
    return "".join(
        ch for ch in text if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI)
    )


def char_width(ch: str) -> int:
    """Terminal cells ``ch`` takes: 2 for wide East Asian characters, 0 for combining marks."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    return sum(char_width(ch) for ch in text)


def wrap(text: str, width: int) -> list[str]:
    """``textwrap.wrap`` in terminal cells (a CJK character takes two, a combining accent none),
    newlines kept, words broken only when longer than a line."""
    width = max(1, width)
    lines: list[str] = []
    for paragraph in clean_text(text).split("\n"):
        out: list[str] = []
        current, used = "", 0
        for token in re.findall(r"\S+|\s+", paragraph.expandtabs(4)):
            w = display_width(token)
            # A word that fits; a space between words, or as the first line's indent.
            if used + w <= width and (current or not out or not token.isspace()):
                current, used = current + token, used + w
                continue
            if current.strip():
                out.append(current.rstrip())
            current, used = "", 0
            if token.isspace():
                continue
            for ch in token:  # the word starts a new line, cut every ``width`` cells if longer
                if current and used + char_width(ch) > width:
                    out.append(current)
                    current, used = "", 0
                current, used = current + ch, used + char_width(ch)
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


# ------------------------------------------------------------------ rendering
def _score_line(r: ModelResult) -> str:
    size = f"{r.parameters / 1e6:.1f}M" if r.parameters >= 50_000 else f"{r.parameters:,}"
    if r.loss is None:
        return f"{size} params"
    bpb = "" if r.bits_per_byte is None else f"  bpb {r.bits_per_byte:.3f}"
    return f"loss {r.loss:.3f}  ppl {r.perplexity:.2f}{bpb}  ({size})"


def _mixed_tokenizers(comparison: Comparison) -> bool:
    return len({r.tokenizer_key for r in comparison.results}) > 1


def _notes(comparison: Comparison) -> list[tuple[str, str]]:
    """For every report: which text and window the scores are on ("Scores"), and which rows
    compare on which figure ("Comparable": loss only within one tokenizer, bits per byte all)."""
    results, mixed = comparison.results, _mixed_tokenizers(comparison)
    if not comparison.eval_text:
        return []
    scores = f"loss and perplexity on {comparison.eval_text}"
    counts = [r.eval_tokens for r in results]
    if comparison.eval_tokens is not None:
        scores += f", {comparison.eval_tokens:,} tokens"
    elif any(c is not None for c in counts):  # each tokenizer cuts the text its own way
        scores += f", {' / '.join(_or_na(c, '{:,}') for c in counts)} tokens (model by model)"
    if comparison.eval_window is not None:
        scores += f", every model scored in windows of {comparison.eval_window} tokens"
        scores += " of its own tokenizer" if mixed else ""
    if any(r.bits_per_byte is not None for r in results):
        scores += "; bpb = bits per byte of the text (summed loss / ln 2 / UTF-8 bytes scored)"
    if not results or results[0].tokenizer_key is None:  # made without tokenizer details
        return [("Scores", scores)]
    comparable = (
        f"every model uses one tokenizer ({results[0].tokenizer}): "
        "loss, perplexity and bits per byte all compare across the models"
    )
    if mixed:
        groups: dict[str | None, list[str]] = {}  # tokenizer key -> the numbers of its models
        for i, r in enumerate(results, 1):
            groups.setdefault(r.tokenizer_key, []).append(str(i))
        words = {r.tokenizer_key: r.tokenizer for r in results}
        parts = "; ".join(
            f"{words[key]}: model{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
            for key, ids in groups.items()
        )
        comparable = (
            "the models use different tokenizers, so loss and perplexity (per token) compare "
            f"only between models with the same one ({parts}); bits per byte compares across "
            "all of them"
        )
    return [("Scores", scores), ("Comparable", comparable)]


def render_columns(comparison: Comparison, width: int | None = None) -> str:
    """One column per model, each sample wrapped to fit the terminal; when the columns would
    be narrower than ``MIN_COLUMN`` cells, the models are stacked one below the other."""
    width = max(width or shutil.get_terminal_size((120, 24)).columns, 1)
    results, mixed = comparison.results, _mixed_tokenizers(comparison)
    n = len(results)
    col = (width - len(GAP) * (n - 1)) // n

    def row(cells: list[list[str]]) -> list[str]:  # the lines of each model, side by side
        return [
            GAP.join(c + " " * max(0, col - display_width(c)) for c in line).rstrip()
            for line in zip_longest(*cells, fillvalue="")
        ]

    stacked, tags = n > 1 and col < MIN_COLUMN, [f"[{i + 1}]" for i in range(n)]
    if stacked:
        rule, out = width, []
        for tag, r in zip(tags, results, strict=True):
            out.append(shorten(f"{tag} {r.name}", width))
            out += wrap(f"    {_score_line(r)}", width)
            out += wrap(f"    tokenizer: {r.tokenizer}", width) if mixed else []
    else:
        rule = min(width, col * n + len(GAP) * (n - 1))
        # Long paths keep their informative end ("runs/shakespeare/best"), on one line.
        out = row([[shorten(r.name, col)] for r in results])
        out += row([wrap(_score_line(r), col) for r in results])
        out += row([wrap(f"tokenizer: {r.tokenizer}", col) for r in results]) if mixed else []
    for _, note in _notes(comparison):
        out += wrap(f"({note})", width)
    for p, prompt in enumerate(comparison.prompts):
        out.append("=" * rule)
        out += wrap(f"prompt {p + 1}: {prompt!r}", width)
        if stacked:
            for tag, r in zip(tags, results, strict=True):
                out.append(shorten(f"--- {tag} {r.name}", width))
                out += wrap(r.samples[p], width)
        else:
            out.append("-" * rule)
            out += row([wrap(r.samples[p], col) for r in results])
    return "\n".join(out)


def _settings_line(comparison: Comparison) -> str:
    return ", ".join(f"{k}={v}" for k, v in comparison.settings.items())


def _or_na(value: float | int | None, spec: str) -> str:
    return "n/a" if value is None else spec.format(value)


def _table(comparison: Comparison) -> list[tuple[str, list[str], list[bool]]]:
    """Both reports' rows of figures: (label, cells, which cells are the row's best); the lowest
    loss and perplexity are best only when the models share a tokenizer, bits per byte always."""
    results, n = comparison.results, len(comparison.results)
    table = [("parameters", [f"{r.parameters:,}" for r in results], [False] * n)]
    if comparison.eval_text:
        per_token = not _mixed_tokenizers(comparison)
        for label, name, spec in (
            (f"loss on {comparison.eval_text}", "loss", "{:.4f}"),
            ("perplexity", "perplexity", "{:.2f}"),
            ("bits per byte", "bits_per_byte", "{:.4f}"),
        ):
            values = [getattr(r, name) for r in results]
            known = [v for v in values if v is not None]  # the best: the lowest, all of a tie
            compares = len(known) > 1 and (per_token or name == "bits_per_byte")
            best = [compares and v == min(known) for v in values]
            if known:
                table.append((label, [_or_na(v, spec) for v in values], best))
        if any(r.eval_tokens is not None for r in results):
            sizes = [(_or_na(r.eval_tokens, "{:,}"), _or_na(r.eval_bytes, "{:,}")) for r in results]
            table.append(("scored", [f"{t} tokens, {b} bytes" for t, b in sizes], [False] * n))
    if any(r.tokenizer is not None for r in results):
        table.append(("tokenizer", [r.tokenizer or "" for r in results], [False] * n))
    return table


def render_markdown(comparison: Comparison) -> str:
    def cell(text: str) -> str:
        return html.escape(clean_text(text)).replace("|", "&#124;").replace("\n", "<br>")

    results = comparison.results
    lines = ["# Model comparison", "", f"Sampling: {_settings_line(comparison)}", ""]
    for label, note in _notes(comparison):
        lines += [f"{label}: {cell(note)}.", ""]
    lines.append("| | " + " | ".join(cell(r.name) for r in results) + " |")
    lines.append("| --- |" + " --- |" * len(results))
    rows = [(label, cells) for label, cells, _ in _table(comparison)]
    rows += [
        (f"prompt {p + 1}: {prompt}", [r.samples[p] for r in results])
        for p, prompt in enumerate(comparison.prompts)
    ]
    lines += [f"| {cell(label)} | " + " | ".join(map(cell, cells)) + " |" for label, cells in rows]
    return "\n".join(lines) + "\n"


def _sample_html(prompt: str, sample: str) -> str:
    """The prompt in bold, the model's continuation plain after it."""
    shown, sample = clean_text(prompt), clean_text(sample)
    if not sample.startswith(shown):
        return html.escape(sample)
    return f"<b>{html.escape(shown)}</b>{html.escape(sample[len(shown) :])}"


def render_html(comparison: Comparison) -> str:
    """A self-contained page: no scripts, no external styles or fonts; each row's best marked."""

    def e(text: str) -> str:
        return html.escape(clean_text(text))

    results = comparison.results
    head = "".join(
        f"<th>{e(r.name)}<div class=score>{e(_score_line(r))}</div></th>" for r in results
    )
    scores = "".join(
        f"<tr><th class=row>{e(label)}</th>"
        + "".join(
            f"<td class=best>{e(c)} (best)</td>" if b else f"<td>{e(c)}</td>"
            for c, b in zip(cells, best, strict=True)
        )
        + "</tr>"
        for label, cells, best in _table(comparison)
    )
    rows = "".join(
        f"<tr><th class=row>prompt {p + 1}</th>"
        + "".join(f"<td><pre>{_sample_html(prompt, r.samples[p])}</pre></td>" for r in results)
        + "</tr>"
        for p, prompt in enumerate(comparison.prompts)
    )
    notes = "".join(f"<p>{label}: {e(note)}.</p>" for label, note in _notes(comparison))
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Model comparison</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%;"
        "table-layout:fixed}th,td{border:1px solid #ccc;padding:.5em;vertical-align:top}"
        "pre{white-space:pre-wrap;margin:0;font-size:.9em}pre b{color:#1a5fb4}"
        ".score{font-weight:normal;color:#555;font-size:.85em}"
        ".row{text-align:left;width:10em}.best{font-weight:bold;background:#e6f4e6}</style>"
        f"</head><body><h1>Model comparison</h1><p>Sampling: {e(_settings_line(comparison))}</p>"
        f"{notes}<p>Each text starts with its prompt, in bold.</p><table><tr><th></th>{head}</tr>"
        f"{scores}{rows}</table></body></html>\n"
    )
