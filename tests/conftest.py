"""Shared fixtures: tiny configs, random-weight models, the real tokenizer when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Imported before any test makes the fake tokenizer's hashes the published ones
# (fake_tokenizer_facts), so the real files are always checked against the real hashes.
import gpt2load.tokenizer  # noqa: F401
from gpt2load.config import GPTConfig
from gpt2load.model import GPT
from tests.http_server import fake_tokenizer_facts, isolate_downloads, serve_file_server

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GPT2LOAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TOKENIZER_DIR = SHARED_DATA / "gpt2-tokenizer"
SHAKESPEARE_TXT = SHARED_DATA / "tinyshakespeare" / "input.txt"
VERDICT_TXT = SHARED_DATA / "the-verdict" / "the-verdict.txt"

# Odd sizes on purpose: n_head != n_layer and a head size that is not a power of two,
# so a swapped axis or a wrong split cannot pass by accident.
TINY_CONFIGS = {
    "tiny": GPTConfig(n_layer=2, n_head=4, n_embd=32, context_length=64, vocab_size=50257),
    "odd": GPTConfig(n_layer=5, n_head=3, n_embd=96, context_length=40, vocab_size=50257),
    "small_vocab": GPTConfig(n_layer=3, n_head=2, n_embd=20, context_length=24, vocab_size=101),
}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (README's command runs one worker per core) each worker's torch gets
    its share of the cores: two workers of two threads each on two cores would spin on each
    other's threads. Subprocesses the tests start inherit the share through OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores we may use
        cores = len(affinity(0)) if affinity else os.cpu_count() or 1
        share = max(1, cores // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def any_tiny_config(request: pytest.FixtureRequest) -> GPTConfig:
    return TINY_CONFIGS[request.param]


@pytest.fixture
def tiny_config() -> GPTConfig:
    return TINY_CONFIGS["tiny"]


def random_model(config: GPTConfig, seed: int = 0) -> GPT:
    """A model with random weights, biases and LayerNorm parameters included.

    GPT-2's own initialisation zeroes biases and sets LayerNorm to identity, which
    would hide a bias or a LayerNorm mapped to the wrong place; here every tensor
    is random.
    """
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("scale"):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.05 if not name.endswith("weight") else 0.1)
    return model.eval()


@pytest.fixture
def tiny_model(tiny_config: GPTConfig) -> GPT:
    return random_model(tiny_config)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    if not (TOKENIZER_DIR / "encoder.json").exists() or not (TOKENIZER_DIR / "vocab.bpe").exists():
        pytest.skip(
            f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR} (../shared/data absent)"
        )
    return TOKENIZER_DIR


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):
    from gpt2load.tokenizer import get_tokenizer

    return get_tokenizer(tokenizer_dir)


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def make_dataset(folder: Path, train_tokens: int = 6000, val_tokens: int = 1000) -> Path:
    """A prepared folder of a repeating token pattern: learnable, and no tokenizer needed."""
    rng = np.random.default_rng(0)
    motif = rng.integers(0, 300, size=37)
    stream = np.tile(motif, (train_tokens + val_tokens) // len(motif) + 1).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    stream[:train_tokens].tofile(folder / "train.bin")
    stream[train_tokens : train_tokens + val_tokens].tofile(folder / "val.bin")
    meta = {"train_tokens": train_tokens, "val_tokens": val_tokens, "max_token_id": 299}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def make_char_text(path: Path, chars: int = 7400) -> Path:
    """A text file of a repeating motif, to train with ``--tokenizer char``: a vocabulary of
    about 20 characters, so a step costs a fraction of one over GPT-2's 50,257 tokens, for
    the tests whose point is not the vocabulary (distribution, signals, exact resumes)."""
    rng = np.random.default_rng(0)
    motif = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz ,.!"), size=37))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((motif * (chars // len(motif) + 1))[:chars])
    return path


@pytest.fixture
def hermetic_releases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Downloads that reach no real host (see ``isolate_downloads``), with the tokenizer's
    published facts made those of ``FAKE_TOKENIZER``, so whole releases can be served."""
    isolate_downloads(monkeypatch, tmp_path)
    fake_tokenizer_facts(monkeypatch)


@pytest.fixture
def server():
    """A local HTTP server with Range support and fault switches (``tests.http_server``)."""
    yield from serve_file_server()
