"""Is this checkpoint what it claims to be? Hashes, tensors, and a known answer.

Three independent kinds of evidence, each reported on its own line so a user sees
every problem at once: the files hash to what was recorded at download time and
to what the publisher published; the checkpoint loads with every tensor present,
the right shape and finite; and OpenAI's 124M weights, when that is what we hold,
still continue "Every effort moves" exactly as PRODUCT.md says. The last is the
only check that catches weights that load fine but are mapped wrongly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from .config import PRESETS, canonical_name, preset
from .downloads.digests import sha256_file
from .downloads.manifest import RECORD_NAME, Record, RecordedFile, read_record
from .releases import OFFICIAL_124M_SHA256, SOURCES, Release, release

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import GPT

# Files worth hashing to recognise published weights in a folder nobody recorded.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


@dataclass(frozen=True)
class KnownAnswer:
    """A prompt and the exact text (prompt included) greedy decoding must produce from it."""

    prompt: str
    expected: str
    max_new_tokens: int


GPT2_124M_ANSWER = KnownAnswer(
    prompt="Every effort moves",
    expected=(
        "Every effort moves forward, but it's not enough.\n\n"
        "\"I'm not going to sit here and say, 'I'm not going to do this,'"
    ),
    max_new_tokens=30,
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "fail", "skip"]
    detail: str = ""

    def line(self) -> str:
        label = {"ok": "ok", "fail": "FAIL", "skip": "skip"}[self.status]
        return f"  {label:<5} {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class VerifyReport:
    target: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool | None, detail: str = "") -> Check:
        check = Check(name, "skip" if ok is None else "ok" if ok else "fail", detail)
        self.checks.append(check)
        return check

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        lines = [f"verify {self.target}", *(c.line() for c in self.checks)]
        if self.failures:
            lines.append(f"{len(self.failures)} check(s) failed:")
            lines += [f"  - {c.name}: {c.detail}" for c in self.failures]
        else:
            lines.append("all checks passed")
        return "\n".join(lines)


def locate(target: str | os.PathLike[str], source: str | None = None) -> Path:
    """The path for ``target``: an existing path, or a model's download folder (no download)."""
    from .loading import resolve

    return resolve(target, source, download=False).resolve()


# -- files -----------------------------------------------------------------------------------
def _published(record: Record) -> Release | None:
    if record.source not in SOURCES:
        return None
    try:
        return release(record.model, record.source)
    except (KeyError, ValueError):
        return None


def _check_recorded_file(
    report: VerifyReport, folder: Path, entry: RecordedFile, published: Release | None
) -> str | None:
    """One line per file: on-disk bytes against the record and the publisher. Its sha256."""
    file = folder / entry.path
    name = f"sha256 {entry.path}"
    if not file.is_file():
        report.add(name, False, f"missing (recorded in {RECORD_NAME})")
        return None
    size = file.stat().st_size
    actual = sha256_file(file)
    spec = published.file(entry.path) if published is not None else None
    expectations = [
        ("recorded", entry.size, entry.sha256),
        ("expected at download", entry.expected_size, entry.expected_sha256),
        ("published", spec.size if spec else None, spec.sha256 if spec else None),
    ]
    problems = []
    for label, want_size, want_sha in expectations:
        if want_size is not None and size != want_size:
            problems.append(f"size {size} bytes, expected {want_size} ({label})")
        elif want_sha is not None and actual != want_sha:
            problems.append(f"expected {want_sha} ({label}), got {actual}")
    matched = [label for label, _, sha in expectations if sha is not None]
    if problems:
        report.add(name, False, "; ".join(dict.fromkeys(problems)))
    else:
        report.add(name, True, "matches " + " and ".join(dict.fromkeys(matched)))
    return actual


def check_files(report: VerifyReport, path: Path) -> str | None:
    """Hash checks for ``path`` (a folder, or one file in it); evidence that it is OpenAI's 124M."""
    folder = path if path.is_dir() else path.parent
    only = None if path.is_dir() else path.name
    try:
        record = read_record(folder)
    except ValueError as exc:
        report.add("record", False, str(exc))
        record = None
    evidence = None
    if record is None:
        report.add("checksums", None, f"no {RECORD_NAME} here (not downloaded by gpt2load)")
        candidates = [path] if only else sorted(folder.iterdir())
        for file in candidates:
            if file.is_file() and file.suffix in WEIGHT_SUFFIXES:
                known = OFFICIAL_124M_SHA256.get(sha256_file(file))
                if known:
                    report.add(f"sha256 {file.name}", True, f"matches published {known}")
                    evidence = known
        return evidence
    published = _published(record)
    entries = [e for e in record.files if only is None or e.path == only]
    if published is not None and only is None:
        recorded = {e.path for e in record.files}
        for spec in published.files:
            if spec.path not in recorded:
                report.add(
                    f"sha256 {spec.path}", False, f"part of the release, not in {RECORD_NAME}"
                )
    for entry in entries:
        digest = _check_recorded_file(report, folder, entry, published)
        if digest in OFFICIAL_124M_SHA256:
            evidence = OFFICIAL_124M_SHA256[digest]
    if published is not None and record.model == "gpt2":
        evidence = evidence or f"the {record.source} release of gpt2 ({RECORD_NAME})"
    return evidence


# -- tensors ---------------------------------------------------------------------------------
def check_tensors(report: VerifyReport, model: GPT) -> bool:
    """Every tensor the architecture needs is there, shaped as the config says, and finite."""
    import torch

    from .model import GPT

    with torch.device("meta"):
        reference = GPT(model.config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    state = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    bad_values = []
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != expected[key]:
            problems.append(f"{key} is {tuple(tensor.shape)}, expected {expected[key]}")
        elif tensor.is_meta:
            problems.append(f"{key} was never loaded")
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad_values.append(key)
    if bad_values:
        problems.append(f"non-finite values in {', '.join(bad_values[:5])}")
        problems[-1] += f" and {len(bad_values) - 5} more" if len(bad_values) > 5 else ""
    if problems:
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        report.add("tensors", False, "; ".join(problems[:10]) + more)
        return False
    count = model.num_parameters()
    report.add("tensors", True, f"{len(state)} tensors, {count:,} parameters, all finite")
    return True


# -- known answer ----------------------------------------------------------------------------
def run_known_answer(model: GPT, tokenizer: Tokenizer, answer: KnownAnswer) -> tuple[bool, str]:
    """Greedy-decode ``answer.prompt``; (matches, the text produced)."""
    import torch

    from .generation import generate

    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(answer.prompt)], dtype=torch.long, device=device)
    out = generate(model, idx, answer.max_new_tokens, temperature=0.0)
    text = tokenizer.decode(out[0].tolist())
    return text == answer.expected, text


def check_known_answer(
    report: VerifyReport, model: GPT, tokenizer: Tokenizer, answer: KnownAnswer
) -> bool:
    name = f"known answer ({answer.prompt!r}, {answer.max_new_tokens} tokens, greedy)"
    ok, text = run_known_answer(model, tokenizer, answer)
    report.add(name, ok, repr(text) if ok else f"expected {answer.expected!r}, got {text!r}")
    return ok


def choose_answer(evidence: str | None, model: GPT) -> tuple[KnownAnswer | None, str]:
    """The known answer these weights owe us, or None and why there is none.

    Only OpenAI's 124M weights have a published answer. ``evidence`` says how we know
    the files are those (a published hash, or a gpt2 release recorded at download);
    the config must also be gpt2's, or the evidence is about some other file.
    """
    if evidence is None:
        return None, "not identified as OpenAI's 124M weights"
    if model.config.replace(dropout=0.0) != PRESETS["gpt2"]:
        return None, f"{evidence}, but the config is not gpt2's"
    return GPT2_124M_ANSWER, ""


# -- the whole check -------------------------------------------------------------------------
def verify(
    target: str | os.PathLike[str] | GPT,
    *,
    source: str | None = None,
    known_answer: KnownAnswer | Literal["auto"] | None = "auto",
    tokenizer: Tokenizer | None = None,
    device: str | torch.device = "cpu",
    n_head: int | None = None,
) -> VerifyReport:
    """Check a checkpoint file or folder, a downloaded model (by name), or a model in memory.

    ``known_answer="auto"`` runs the PRODUCT.md check when the weights are identified as
    OpenAI's 124M (a published hash, or a gpt2 release recorded by ``gpt2load download``)
    and the config is the gpt2 preset; pass a ``KnownAnswer`` to run another one (tests use
    a small random model and its own answer), or None to skip it. ``tokenizer`` defaults
    to the GPT-2 files in the checkpoint's folder. ``n_head`` is for a checkpoint that
    records no head count (a book ``.pth`` of a width GPT-2 never had), as in ``load``.
    """
    import torch

    if isinstance(target, torch.nn.Module):
        report = VerifyReport(f"<{type(target).__name__} in memory>")
        path, evidence, model = None, None, target
    else:
        path = locate(target, source)
        report = VerifyReport(str(path))
        evidence = check_files(report, path)
        crc_checked = check_crcs(report, path)
        model = _load(report, path, device, check_crc=not crc_checked, n_head=n_head)
        if model is not None and not Path(target).expanduser().exists():
            _check_named_size(report, str(target), model)
    if model is None:
        return report
    if not check_tensors(report, model):
        return report
    answer = known_answer
    if answer == "auto":
        answer, why_not = choose_answer(evidence, model)
        if answer is None:
            report.add("known answer", None, why_not)
    if isinstance(answer, KnownAnswer):
        if tokenizer is None:
            tokenizer = _tokenizer(report, path)
        if tokenizer is not None:
            check_known_answer(report, model, tokenizer, answer)
    return report


def check_crcs(report: VerifyReport, path: Path) -> bool:
    """Every tensor of a TensorFlow checkpoint against the CRC-32C its index records.

    OpenAI publishes no hash for its TF files, so this is the only check of their content
    besides the known answer (and the only one for the other sizes). Returns whether the
    check ran; a checkpoint that cannot be opened is left for the load to report.
    """
    from .formats.detect import TF
    from .formats.detect import locate as locate_checkpoint
    from .formats.tf_bundle import TFBundleSource

    try:
        located = locate_checkpoint(path)
        if located.container != TF:
            return False
        source = TFBundleSource(located.files[0], check_crc=False)
        count, problems = source.check_crcs()
    except (OSError, ValueError):
        return False
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        report.add("crc32c", False, "; ".join(problems[:3]) + more)
    else:
        report.add("crc32c", True, f"{count} tensors match the CRC-32C in {source.files[0].name}")
    return True


def _load(
    report: VerifyReport,
    path: Path,
    device: str | torch.device,
    *,
    check_crc: bool = True,
    n_head: int | None = None,
) -> GPT | None:
    from .formats import load_checkpoint
    from .formats.tf_bundle import crc_checks

    try:
        with crc_checks(check_crc):
            model = load_checkpoint(path, device=device, dtype=None, n_head=n_head)
    except Exception as exc:  # any failure to load is the finding itself
        report.add("load", False, f"{type(exc).__name__}: {exc}")
        return None
    config = model.config
    shape = f"n_layer={config.n_layer}, n_head={config.n_head}, n_embd={config.n_embd}"
    report.add("load", True, f"{shape}, vocab {config.vocab_size}, context {config.context_length}")
    return model


def _check_named_size(report: VerifyReport, name: str, model: GPT) -> None:
    """A folder found by a model's name must hold that model: hashes are not published for
    every file of every host, and a mirror or a copied folder can hold anything."""
    wrong = model.config.shape_differences(preset(name))
    report.add(f"size of {canonical_name(name)}", not wrong, ", ".join(wrong) or "as published")


def _tokenizer(report: VerifyReport, path: Path | None) -> Tokenizer | None:
    from .tokenizer import get_tokenizer

    try:
        return get_tokenizer(path)
    except (OSError, ValueError) as exc:
        report.add("known answer", False, f"no tokenizer: {exc}")
        return None
