"""finetune keeps a family member's architecture (issue 12, item 7): a nanoGPT bias-free model and
a book-trained model train as they are, and ``RUN/best`` exports back with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune.config import TrainConfig
from finetune.launch import start
from gpt2load.formats import convert, load_checkpoint
from tests.conftest import make_dataset
from tests.nanogpt_reference import NanoConfig, NanoGPT, load_ckpt, save_ckpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB = 320  # the prepared test data uses ids below 300


def _train(tmp_path: Path, init: Path) -> Path:
    cfg = TrainConfig(
        init=str(init),
        out=str(tmp_path / "run"),
        data=[str(make_dataset(tmp_path / "ds"))],
        data_dir=str(tmp_path / "data"),
        batch_size=4,
        block_size=16,
        max_iters=4,
        lr=3e-3,
        warmup_iters=1,
        eval_interval=2,
        eval_batches=1,
        save_interval=100,
        sample_interval=0,
        force_cpu=True,
        progress=False,
        seed=0,
    )
    assert start(cfg, log=lambda _: None).status == "completed"
    return tmp_path / "run" / "best"


def test_nanogpt_bias_free_model_trains_bias_free_and_exports_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    nano = NanoGPT(NanoConfig(block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32))
    before = load_checkpoint(save_ckpt(nano, tmp_path / "nano" / "ckpt.pt"))
    best = _train(tmp_path, tmp_path / "nano" / "ckpt.pt")
    trained = load_checkpoint(best)
    assert trained.config == before.config  # bias=False, exact GELU, tied: all kept
    assert not any(n.endswith((".bias", ".shift")) for n, _ in trained.named_parameters())
    moved = trained.state_dict()["tok_emb.weight"] - before.state_dict()["tok_emb.weight"]
    assert moved.abs().max() > 0  # it did train
    convert(best, tmp_path / "back", "nanogpt")
    theirs = load_ckpt(tmp_path / "back" / "ckpt.pt")
    assert theirs.config.bias is False
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert (theirs(idx) - trained(idx)).abs().max().item() <= 1e-5


def test_book_trained_model_stays_untied_and_exports_to_the_book(tmp_path: Path) -> None:
    book = pytest.importorskip("llms_from_scratch.ch04", reason="pip install llms-from-scratch")
    cfg = {
        "vocab_size": VOCAB,
        "context_length": 16,
        "emb_dim": 32,
        "n_heads": 2,
        "n_layers": 2,
        "drop_rate": 0.0,
        "qkv_bias": False,
    }
    torch.manual_seed(0)
    model = book.GPTModel(cfg)
    (tmp_path / "book").mkdir()
    torch.save(model.state_dict(), tmp_path / "book" / "model.pth")
    (tmp_path / "book" / "config.json").write_text(json.dumps(cfg))
    best = _train(tmp_path, tmp_path / "book" / "model.pth")
    trained = load_checkpoint(best)
    assert trained.config.tie_head is False and trained.config.qkv_bias is False
    assert trained.out_head.weight is not trained.tok_emb.weight
    convert(best, tmp_path / "back", "rasbt")
    again = book.GPTModel(json.loads((tmp_path / "back" / "config.json").read_text()))
    again.load_state_dict(torch.load(tmp_path / "back" / "model.pth"), strict=True)
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert (again.eval()(idx) - trained(idx)).abs().max().item() <= 1e-5


def test_a_tf_checkpoint_given_by_its_prefix_trains_as_its_folder_would(tmp_path: Path) -> None:
    """`--init .../model.ckpt` names OpenAI's TF checkpoint as gpt2load takes it: no file has
    that name (its files are model.ckpt.index, .data-...), yet it is the checkpoint."""
    from finetune.modelinit import init_folder
    from gpt2load.config import GPTConfig
    from tests.checkpoint_factory import random_hf_state_dict, write_openai_tf

    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=16, vocab_size=VOCAB)
    folder = write_openai_tf(tmp_path / "openai", random_hf_state_dict(config), config)
    before = load_checkpoint(folder / "model.ckpt")
    assert init_folder(str(folder / "model.ckpt")) == folder  # where its tokenizer would lie
    trained = load_checkpoint(_train(tmp_path, folder / "model.ckpt"))
    assert trained.config.n_embd == before.config.n_embd == 32
    moved = trained.state_dict()["tok_emb.weight"] - before.state_dict()["tok_emb.weight"]
    assert moved.abs().max() > 0  # it trained from those weights
