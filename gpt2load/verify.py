"""Is this checkpoint what it claims to be? Hashes, tensors, and a known answer, one line
per check so every problem shows at once. The known answer (OpenAI's 124M continues "Every
effort moves" as PRODUCT.md says) alone catches weights that load but are mapped wrongly."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from tqdm.auto import tqdm

from .config import PRESETS, canonical_name, is_model_name, preset
from .downloads.digests import sha256_file
from .downloads.manifest import RECORD_NAME, Record, RecordedFile, read_record
from .formats import detect, load_checkpoint, tf_bundle
from .formats.plan import parameter_shapes
from .generation import generate
from .loading import resolve
from .model import GPT
from .releases import OFFICIAL_124M_SHA256, SOURCES, Release, release
from .tokenizer import get_tokenizer

# Files worth hashing to recognise published weights in a folder nobody recorded.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class Tokenizer(Protocol):  # any encoder: the known answer needs no more
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


@dataclass
class VerifyReport:
    target: str
    checks: list[Check] = field(default_factory=list)
    repair: str | None = None  # the download that fetches a recorded folder's files again

    def add(self, name: str, ok: bool | None, detail: str = "") -> None:
        self.checks.append(Check(name, "skip" if ok is None else "ok" if ok else "fail", detail))

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def format(self) -> str:
        lines = [f"verify {self.target}"]
        for c in self.checks:
            label = "FAIL" if c.status == "fail" else c.status
            lines.append(f"  {label:<5} {c.name}" + (f": {c.detail}" if c.detail else ""))
        if not self.failures:
            return "\n".join([*lines, "all checks passed"])
        lines.append(f"{len(self.failures)} check(s) failed:")
        lines += [f"  - {c.name}: {c.detail}" for c in self.failures]
        # What a download can mend: files that differ from their sha256 (a re-run fetches those
        # alone), or bytes that were already bad when downloaded (--force).
        failed = [c.name for c in self.failures]
        files = [name.removeprefix("sha256 ") for name in failed if name.startswith("sha256 ")]
        if self.repair is not None and (files or "crc32c" in failed):
            what = ", ".join(files) if files else "every file (damaged before they were recorded)"
            command = self.repair + ("" if files else " --force")
            lines.append(f"to repair, download {what} again: {command}")
        return "\n".join(lines)


def locate(target: str | os.PathLike[str], source: str | None = None) -> Path:
    """The path for ``target``: an existing path, or a model's download folder (no download)."""
    return resolve(target, source, download=False).resolve()


# -- files -----------------------------------------------------------------------------------
def sha256_with_bar(file: Path) -> str:
    """The file's sha256, with a bar of bytes on stderr: hashing gpt2-xl's 6 GB takes a minute."""
    options = dict(unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)
    with tqdm(total=file.stat().st_size, desc=f"hashing {file.name}", **options) as bar:
        return sha256_file(file, bar.update)


def repair_command(folder: Path, record: Record) -> str:
    """The download that made ``folder``: run again, it re-hashes every file and fetches those
    that are missing or differ from the record and the publisher."""
    model, where = shlex.quote(record.model), shlex.quote(str(folder))
    if record.source in SOURCES:
        return f"gpt2load download {model} --source {record.source} --dir {where}"
    return f"gpt2load download {model} --manifest THE_MANIFEST_YOU_USED.json --dir {where}"


def _check_recorded_file(
    report: VerifyReport, folder: Path, entry: RecordedFile, published: Release | None
) -> str | None:
    """The file's bytes against the record and the publisher, in one line; its sha256."""
    file, name = folder / entry.path, f"sha256 {entry.path}"
    if not file.is_file():
        what = "not a regular file" if os.path.lexists(file) else "missing"
        report.add(name, False, f"{what} (recorded in {RECORD_NAME})")
        return None
    size, actual = file.stat().st_size, sha256_with_bar(file)
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
    matched = " and ".join(label for label, _, sha in expectations if sha is not None)
    report.add(name, not problems, "; ".join(dict.fromkeys(problems)) or f"matches {matched}")
    return actual


def check_files(report: VerifyReport, path: Path) -> str | None:
    """Hash checks for ``path`` (a folder, or one file in it); evidence that it is OpenAI's 124M."""
    folder, only = (path, None) if path.is_dir() else (path.parent, path.name)
    try:
        record: Record | None = read_record(folder)
    except ValueError as exc:
        report.add("record", False, str(exc))
        record = None
    evidence = None
    if record is None:
        files = [path] if only else sorted(folder.iterdir())
        weights = [f for f in files if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
            return _check_hub_blobs(report, folder, weights)
        report.add("checksums", None, f"no {RECORD_NAME} here (not downloaded by gpt2load)")
        for file in weights:
            if known := OFFICIAL_124M_SHA256.get(sha256_with_bar(file)):
                report.add(f"sha256 {file.name}", True, f"matches published {known}")
                evidence = known
        return evidence
    report.repair = repair_command(folder, record)
    published = None
    if record.source in SOURCES:
        with contextlib.suppress(KeyError, ValueError):
            published = release(record.model, record.source)
    if published is not None and only is None:
        recorded = {e.path for e in record.files}
        for missing in [spec.path for spec in published.files if spec.path not in recorded]:
            absent = "missing: " if not os.path.lexists(folder / missing) else ""
            report.add(
                f"sha256 {missing}", False, f"{absent}part of the release, not in {RECORD_NAME}"
            )
    for entry in record.files:
        if only is None or entry.path == only:
            digest = _check_recorded_file(report, folder, entry, published)
            evidence = OFFICIAL_124M_SHA256.get(digest, evidence)
    if published is not None and record.model == "gpt2":
        evidence = evidence or f"the {record.source} release of gpt2 ({RECORD_NAME})"
    return evidence


def _check_hub_blobs(report: VerifyReport, folder: Path, weights: list[Path]) -> None:
    """A Hugging Face cache names a weight file's blob by the sha256 the hub announced for it:
    the bytes are hashed against that name (loading trusts the name, this does not)."""
    repo_id = folder.parent.parent.name.removeprefix("models--").replace("--", "/", 1)
    report.repair = f"gpt2load download {repo_id} --force"
    blobs = [file for file in weights if len(file.resolve().name) == 64]
    for file in blobs:
        digest, blob = sha256_with_bar(file), file.resolve().name
        said = "the hub's, as its blob is named" if digest == blob else f"{digest}, not {blob}"
        report.add(f"sha256 {file.name}", digest == blob, said)
    if not blobs:
        report.add("checksums", None, "a Hugging Face cache snapshot without LFS weight blobs")


def check_crcs(report: VerifyReport, path: Path) -> bool:
    """Every tensor of a TF checkpoint against its index's CRC-32C: OpenAI publishes no hash
    for these files. Whether it ran; a checkpoint that cannot be opened is the load's to report."""
    try:
        located = detect.locate(path)
        if located.container != detect.TF:
            return False
        source = tf_bundle.TFBundleSource(located.files[0], check_crc=False)
        count, problems = source.check_crcs()
    except (OSError, ValueError):
        return False
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        report.add("crc32c", False, "; ".join(problems[:3]) + more)
    else:
        report.add("crc32c", True, f"{count} tensors match the CRC-32C in {source.files[0].name}")
    return True


# -- tensors ---------------------------------------------------------------------------------
def check_tensors(report: VerifyReport, model: GPT) -> bool:
    """Every tensor the architecture needs is there, shaped as the config says, and finite."""
    expected = parameter_shapes(model.config)
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
        more = f" and {len(bad_values) - 5} more" if len(bad_values) > 5 else ""
        problems.append(f"non-finite values in {', '.join(bad_values[:5])}{more}")
    if problems:
        more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        report.add("tensors", False, "; ".join(problems[:10]) + more)
        return False
    # As ``gpt2load info`` counts "in the model": split query/key/value and the tied head.
    detail = f"{len(state)} tensors in the model, {model.num_parameters():,} parameters, all finite"
    report.add("tensors", True, detail)
    return True


# -- known answer ----------------------------------------------------------------------------
def run_known_answer(model: GPT, tokenizer: Tokenizer, answer: KnownAnswer) -> tuple[bool, str]:
    """Greedy-decode ``answer.prompt``; (matches, the text produced)."""
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(answer.prompt)], dtype=torch.long, device=device)
    out = generate(model, idx, answer.max_new_tokens, temperature=0.0)
    text = tokenizer.decode(out[0].tolist())
    return text == answer.expected, text


def choose_answer(evidence: str | None, model: GPT) -> tuple[KnownAnswer | None, str]:
    """The known answer these weights owe, or None and why: only OpenAI's 124M has one, and
    ``evidence`` (a published hash, a recorded gpt2 release) must be backed by gpt2's config."""
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
    ``known_answer="auto"`` runs the PRODUCT.md check for weights identified as OpenAI's 124M
    (see ``choose_answer``); a ``KnownAnswer`` runs another, None none."""
    if isinstance(target, torch.nn.Module):
        report = VerifyReport(f"<{type(target).__name__} in memory>")
        path, evidence, model = None, None, target
    else:
        path = locate(target, source)
        report = VerifyReport(str(path))
        evidence = check_files(report, path)
        crc_checked = check_crcs(report, path)
        try:
            model = load_checkpoint(path, device, None, n_head=n_head, check_crc=not crc_checked)
        except Exception as exc:  # any failure to load is the finding itself
            report.add("load", False, f"{type(exc).__name__}: {exc}")
            return report
        c = model.config
        shape = f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}"
        report.add("load", True, f"{shape}, vocab {c.vocab_size}, context {c.context_length}")
        if not Path(target).expanduser().exists() and is_model_name(str(target)):
            # A folder found by a model's name must hold that model: hashes are not published
            # for every file of every host, and a mirror or a copied folder can hold anything.
            wrong = c.shape_differences(preset(str(target)))
            name = f"size of {canonical_name(str(target))}"
            report.add(name, not wrong, ", ".join(wrong) or "as published")
    if not check_tensors(report, model):
        return report
    answer = known_answer
    if answer == "auto":
        answer, why_not = choose_answer(evidence, model)
        if answer is None:
            report.add("known answer", None, why_not)
    if isinstance(answer, KnownAnswer) and tokenizer is None:
        try:
            tokenizer = get_tokenizer(path)
        except (OSError, ValueError) as exc:
            report.add("known answer", False, f"no tokenizer: {exc}")
    if isinstance(answer, KnownAnswer) and tokenizer is not None:
        ok, text = run_known_answer(model, tokenizer, answer)
        name = f"known answer ({answer.prompt!r}, {answer.max_new_tokens} tokens, greedy)"
        report.add(name, ok, repr(text) if ok else f"expected {answer.expected!r}, got {text!r}")
    return report
