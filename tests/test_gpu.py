"""CUDA paths: skipped cleanly (by conftest) on machines without a GPU, as in CI.

They hold the GPU to the same answers as the CPU: a checkpoint loaded onto the
GPU gives the CPU's logits, greedy generation gives the CPU's tokens, and a
short bf16 fine-tune runs through the real loop with its GPU-only settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gpt2load
from finetune.config import TrainConfig
from finetune.launch import start
from gpt2load.generation import generate
from tests.checkpoint_factory import random_hf_state_dict, sample_ids, write_every_layout
from tests.conftest import TINY_CONFIGS, make_dataset

pytestmark = pytest.mark.gpu


def test_a_checkpoint_on_the_gpu_gives_the_cpu_logits(tmp_path: Path) -> None:
    config = TINY_CONFIGS["odd"]
    paths = write_every_layout(tmp_path, config, random_hf_state_dict(config), only=["hf_hub"])
    cpu = gpt2load.load(paths["hf_hub"])
    gpu = gpt2load.load(paths["hf_hub"], device="cuda")
    assert gpu.tok_emb.weight.device.type == "cuda"
    idx = sample_ids(config)
    with torch.no_grad():
        expected = cpu(idx)
        got = gpu(idx.cuda()).cpu()
    # TF32 may be on for matmuls; fp32 logits of a tiny model still agree closely.
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    assert torch.equal(
        generate(cpu, idx, 10, temperature=0), generate(gpu, idx.cuda(), 10, temperature=0).cpu()
    )


def test_short_bf16_training_on_the_gpu(tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = TrainConfig(
        init="scratch",
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=32,
        out=str(tmp_path / "run"),
        data=[str(make_dataset(tmp_path / "ds"))],
        data_dir=str(tmp_path / "data"),
        batch_size=8,
        max_iters=20,
        lr=3e-3,
        warmup_iters=2,
        eval_interval=10,
        sample_interval=0,
        progress=False,
        dtype="bfloat16",
    )
    result = start(cfg, log=lambda _: None)
    assert result.status == "completed" and result.best_val_loss is not None
    model = gpt2load.load(tmp_path / "run" / "best")
    assert model.config.n_layer == 2
