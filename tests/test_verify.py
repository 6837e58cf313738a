"""verify(): hashes against record and publisher, tensor checks, the known-answer machinery."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gpt2load import releases
from gpt2load.cli import main
from gpt2load.config import GPTConfig, preset
from gpt2load.downloads import download
from gpt2load.downloads.manifest import RECORD_NAME, Record, RecordedFile, write_record
from gpt2load.model import GPT
from gpt2load.native import save_native
from gpt2load.verify import (
    GPT2_124M_ANSWER,
    KnownAnswer,
    choose_answer,
    locate,
    run_known_answer,
    verify,
)
from tests.conftest import TINY_CONFIGS, random_model
from tests.http_server import FileServer, isolate_downloads


class CharTokenizer:
    """One token per character: enough to turn ids into text for a test's own answer."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)


TOKENIZER = CharTokenizer()
PROMPT = "Hi there"


def own_greedy_answer(model: GPT, prompt: str, n: int) -> KnownAnswer:
    """The test's independent answer: argmax of a full forward pass, one token at a time."""
    ids = torch.tensor([TOKENIZER.encode(prompt)])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return KnownAnswer(prompt, TOKENIZER.decode(ids[0].tolist()), n)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_downloads(monkeypatch, tmp_path)


@pytest.fixture
def model() -> GPT:
    return random_model(TINY_CONFIGS["tiny"], seed=3)


@pytest.fixture
def answer(model: GPT) -> KnownAnswer:
    return own_greedy_answer(model, PROMPT, 12)


@pytest.fixture
def downloaded(model: GPT, tmp_path: Path, server: FileServer) -> Path:
    """A native checkpoint fetched with gpt2load download from a custom manifest."""
    file = save_native(model, tmp_path / "src")
    data = file.read_bytes()
    manifest = {
        "files": [
            {
                "url": "https://models.invalid/tiny/model.safetensors",
                "path": "model.safetensors",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ]
    }
    server.add("/tiny/model.safetensors", data)
    return download("tiny", manifest=manifest, mirror=server.url, progress=False)


def names(checks) -> list[str]:
    return [c.name for c in checks]


# -- the known-answer machinery, on a small random model --------------------------------------
def test_known_answer_matches_the_tests_own_computation(model: GPT, answer: KnownAnswer) -> None:
    ok, text = run_known_answer(model, TOKENIZER, answer)
    assert ok and text == answer.expected
    assert len(text) == len(PROMPT) + 12


def test_in_memory_model_passes_with_its_answer(model: GPT, answer: KnownAnswer) -> None:
    report = verify(model, known_answer=answer, tokenizer=TOKENIZER)
    assert report.ok, report.format()
    assert names(report.checks) == [
        "tensors",
        "known answer ('Hi there', 12 tokens, greedy)",
    ]


def test_a_wrong_answer_is_a_failure(model: GPT, answer: KnownAnswer) -> None:
    wrong = KnownAnswer(answer.prompt, answer.expected[:-1] + "\0", answer.max_new_tokens)
    report = verify(model, known_answer=wrong, tokenizer=TOKENIZER)
    assert not report.ok
    assert "expected" in report.failures[0].detail and "got" in report.failures[0].detail
    assert "1 check(s) failed" in report.format()


def test_changed_weights_change_the_answer(model: GPT, answer: KnownAnswer) -> None:
    with torch.no_grad():
        model.trf_blocks[0].att.W_query.weight.mul_(-3.0)
    assert not verify(model, known_answer=answer, tokenizer=TOKENIZER).ok


def test_non_finite_weights_fail(model: GPT) -> None:
    with torch.no_grad():
        model.final_norm.shift[3] = float("nan")
    report = verify(model, known_answer=None)
    assert names(report.failures) == ["tensors"]
    assert "final_norm.shift" in report.failures[0].detail


def test_official_124m_is_recognised_only_with_evidence_and_config() -> None:
    with torch.device("meta"):
        gpt2 = GPT(preset("gpt2", dropout=0.1))
        tiny = GPT(TINY_CONFIGS["tiny"])
    assert choose_answer("the hf release of gpt2", gpt2) == (GPT2_124M_ANSWER, "")
    assert choose_answer(None, gpt2)[0] is None
    assert "not gpt2's" in choose_answer("a published hash", tiny)[1]
    assert GPT2_124M_ANSWER.max_new_tokens == 30
    assert GPT2_124M_ANSWER.expected.startswith("Every effort moves forward, but it's not enough.")


def test_real_tokenizer_round_trip_of_the_124m_answer(tokenizer) -> None:
    ids = tokenizer.encode(GPT2_124M_ANSWER.expected)
    assert len(ids) == len(tokenizer.encode(GPT2_124M_ANSWER.prompt)) + 30
    assert tokenizer.decode(ids) == GPT2_124M_ANSWER.expected


# -- files on disk ---------------------------------------------------------------------------
def test_downloaded_checkpoint_passes(downloaded: Path, answer: KnownAnswer) -> None:
    report = verify(downloaded, known_answer=answer, tokenizer=TOKENIZER)
    assert report.ok, report.format()
    assert names(report.checks)[:3] == ["sha256 model.safetensors", "load", "tensors"]
    assert "matches recorded and expected at download" in report.checks[0].detail


def test_file_changed_after_download_is_caught(downloaded: Path) -> None:
    file = downloaded / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-5] ^= 0x01  # a weight's low bits: still loads, still finite
    file.write_bytes(bytes(data))
    report = verify(downloaded)
    assert names(report.failures) == ["sha256 model.safetensors"]
    detail = report.failures[0].detail
    assert "(recorded)" in detail and hashlib.sha256(data).hexdigest() in detail


def test_missing_file_is_caught(downloaded: Path) -> None:
    (downloaded / "model.safetensors").unlink()
    report = verify(downloaded)
    assert "sha256 model.safetensors" in names(report.failures)
    assert "load" in names(report.failures)


def test_published_values_are_checked_too(model: GPT, tmp_path: Path) -> None:
    """A record claiming the hf gpt2 release is held to the publisher's hashes."""
    folder = tmp_path / "weights" / "gpt2" / "hf"
    file = save_native(model, folder)
    data = file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    url = releases.release("gpt2", "hf").file("model.safetensors").url
    entry = RecordedFile("model.safetensors", url, len(data), sha)
    write_record(folder, Record("gpt2", "hf", (entry,)))
    report = verify(folder, known_answer="auto")
    failed = {c.name: c.detail for c in report.failures}
    assert "expected 548105171 (published)" in failed["sha256 model.safetensors"]
    for absent in ("config.json", "encoder.json", "vocab.bpe"):
        assert f"not in {RECORD_NAME}" in failed[f"sha256 {absent}"]
    skipped = [c for c in report.checks if c.status == "skip"]
    assert "config is not gpt2's" in skipped[-1].detail  # recorded as gpt2, but it is tiny


def test_a_release_file_neither_recorded_nor_on_disk_is_said_to_be_missing(
    model: GPT, tmp_path: Path
) -> None:
    """A release's file the record lacks: "missing" when it is not on disk either, so the line
    says what the folder lacks, not only what its record does."""
    folder = tmp_path / "weights" / "gpt2" / "hf"
    data = save_native(model, folder).read_bytes()
    url = releases.release("gpt2", "hf").file("model.safetensors").url
    entry = RecordedFile("model.safetensors", url, len(data), hashlib.sha256(data).hexdigest())
    write_record(folder, Record("gpt2", "hf", (entry,)))
    (folder / "config.json").write_text("{}")  # there, but not recorded
    failed = {c.name: c.detail for c in verify(folder, known_answer="auto").failures}
    assert failed["sha256 encoder.json"] == f"missing: part of the release, not in {RECORD_NAME}"
    assert failed["sha256 config.json"] == f"part of the release, not in {RECORD_NAME}"


def test_single_file_without_record(model: GPT, tmp_path: Path) -> None:
    file = save_native(model, tmp_path / "run" / "best")
    report = verify(file)
    assert report.ok, report.format()
    assert report.checks[0].status == "skip" and "no manifest.json" in report.checks[0].detail
    assert "not identified" in report.checks[-1].detail


def test_model_names_find_the_download_folder(model: GPT, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gpt2load download gpt2-medium"):
        locate("355M")
    folder = tmp_path / "weights" / "gpt2-medium" / "openai"
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="gpt2load download gpt2-medium"):
        locate("gpt2-medium")  # an empty folder is what a failed download leaves
    (folder / "checkpoint").write_text("x")
    assert locate("gpt2-medium") == folder
    assert locate("gpt2-medium", source="openai") == folder
    with pytest.raises(FileNotFoundError):
        locate("gpt2-medium", source="hf")


def test_a_folder_found_by_name_must_hold_that_size(model: GPT, tmp_path: Path) -> None:
    folder = tmp_path / "weights" / "gpt2-medium" / "hf"
    save_native(model, folder)
    report = verify("gpt2-medium", known_answer=None)
    assert not report.ok
    failed = report.failures
    assert [c.name for c in failed] == ["size of gpt2-medium"]
    assert "n_layer 2 (expected 24)" in failed[0].detail
    assert verify(folder, known_answer=None).ok  # by its path it is just a checkpoint


def test_cli_exit_codes(downloaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(downloaded)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("all checks passed")
    file = downloaded / "model.safetensors"
    file.write_bytes(file.read_bytes() + b" ")
    assert main(["verify", str(downloaded), "--no-known-answer"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  sha256 model.safetensors" in out and "check(s) failed" in out
    assert main(["verify", "no/such/thing"]) == 2


def test_custom_config_roundtrip_through_a_folder(tmp_path: Path) -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, context_length=16, vocab_size=300)
    model = random_model(config, seed=1)
    answer = own_greedy_answer(model, "ab", 5)
    save_native(model, tmp_path / "m")
    report = verify(tmp_path / "m", known_answer=answer, tokenizer=TOKENIZER)
    assert report.ok, report.format()


# -- real-looking releases in every layout: served, downloaded, verified ---------------------
RELEASE_FOR = {"hf": "gpt2-medium", "openai": "gpt2-large", "rasbt": "gpt2-xl"}
FAKE_TOKENIZER = {"encoder.json": b'{"!": 0}', "vocab.bpe": b"#version: 0.2\n"}


@pytest.fixture(scope="module")
def layout_model() -> GPT:
    # A width GPT-2 never had: the rasbt file stores no head count, so verify is told it.
    config = GPTConfig(n_layer=2, n_head=2, n_embd=128, context_length=32, vocab_size=50257)
    return random_model(config, seed=5)


@pytest.fixture(scope="module")
def layouts(layout_model: GPT, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny model's files as each source publishes them: name -> bytes, per source."""
    from safetensors.torch import save_file

    from gpt2load.formats import convert

    root = tmp_path_factory.mktemp("layouts")
    native = save_native(layout_model, root / "native")
    files = {}
    for source in ("hf", "openai"):
        convert(native, root / source, source)
        files[source] = {p.name: p.read_bytes() for p in (root / source).iterdir() if p.is_file()}
    # rasbt: the book's names, a separate out_head, and causal-mask buffers
    config = layout_model.config
    state = {k: v.clone() for k, v in layout_model.state_dict().items()}
    mask = torch.triu(torch.ones(config.context_length, config.context_length), diagonal=1)
    for i in range(config.n_layer):
        state[f"trf_blocks.{i}.att.mask"] = mask.clone()
    name = releases.RASBT_STEMS[RELEASE_FOR["rasbt"]] + releases.RASBT_SUFFIX
    save_file(state, str(root / name))
    files["rasbt"] = {name: (root / name).read_bytes()}
    return files


@pytest.mark.parametrize("source", sorted(RELEASE_FOR))
def test_release_in_its_layout_downloads_and_verifies(
    source: str,
    layouts: dict,
    layout_model: GPT,
    server: FileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, data in FAKE_TOKENIZER.items():
        monkeypatch.setitem(
            releases.TOKENIZER_FACTS, name, (len(data), hashlib.sha256(data).hexdigest())
        )
    files = {**layouts[source], **FAKE_TOKENIZER}
    built_in = releases.release(RELEASE_FOR[source], source)
    for spec in built_in.files:
        server.add_url(spec.url, files[spec.path])
    folder = download(built_in.model, source=source, mirror=server.url, progress=False)
    answer = own_greedy_answer(layout_model, PROMPT, 8)
    # Only the book's file records no head count (issue 12: never guessed).
    n_head = layout_model.config.n_head if source == "rasbt" else None
    report = verify(folder, known_answer=answer, tokenizer=TOKENIZER, n_head=n_head)
    assert report.ok, report.format()
    assert {c.name for c in report.checks} >= {f"sha256 {f.path}" for f in built_in.files}
