"""What one optimizer step does: decay groups, clipping, accumulation, compile, MFU, the bar."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from finetune.data import open_prepared
from finetune.device import DeviceInfo, flops_per_token, select_device
from finetune.launch import start
from finetune.modelinit import scratch_config
from finetune.plan import single_process_plan
from finetune.trainer import Trainer
from gpt2load.model import GPT

from .test_train import _quiet, read_metrics, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(tmp_path: Path, device: DeviceInfo | None = None, **overrides) -> Trainer:
    cfg = tiny_config(tmp_path, **overrides).resolved()
    torch.manual_seed(0)
    model = GPT(scratch_config(cfg))
    device = device or select_device("cpu")
    return Trainer(single_process_plan(cfg, device), model, open_prepared(cfg.data[0]), log=_quiet)


def _grads_at_step(trainer: Trainer) -> tuple[dict[str, torch.Tensor], float]:
    """Run one train_step; the gradients the optimizer was handed (after clipping)."""
    seen: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in trainer.raw_model.named_parameters()}

    def capture(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                seen[names[id(p)]] = p.grad.detach().clone()

    handle = trainer.optimizer.register_step_pre_hook(capture)
    try:
        _, grad_norm, ok = trainer.train_step()
    finally:
        handle.remove()
    assert ok
    return seen, grad_norm


def test_weight_decay_applies_to_matrices_only(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, weight_decay=0.1)
    names = {id(p): n for n, p in trainer.raw_model.named_parameters()}
    decayed = {
        names[id(p)]
        for g in trainer.optimizer.param_groups
        if g["weight_decay"]
        for p in g["params"]
    }
    exempt = {
        names[id(p)]
        for g in trainer.optimizer.param_groups
        if not g["weight_decay"]
        for p in g["params"]
    }
    assert all(g["weight_decay"] in (0.0, 0.1) for g in trainer.optimizer.param_groups)
    params = dict(trainer.raw_model.named_parameters())
    assert decayed == {n for n, p in params.items() if p.dim() >= 2}
    assert exempt == {n for n, p in params.items() if p.dim() < 2}
    assert "tok_emb.weight" in decayed and "trf_blocks.0.att.W_query.weight" in decayed
    assert "trf_blocks.0.att.W_query.bias" in exempt and "final_norm.scale" in exempt
    # The tied head is the embedding: one tensor, in one group, updated once.
    assert "out_head.weight" not in decayed | exempt


def test_gradients_are_clipped_to_grad_clip(tmp_path: Path) -> None:
    clip = 1e-3
    trainer = _trainer(tmp_path, grad_clip=clip)
    grads, grad_norm = _grads_at_step(trainer)
    handed = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()])).item()
    assert grad_norm > 100 * clip  # the reported norm is the one before clipping
    assert handed == pytest.approx(clip, rel=1e-3)

    unclipped = _trainer(tmp_path, grad_clip=0.0)
    grads, grad_norm = _grads_at_step(unclipped)
    handed = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()])).item()
    assert handed == pytest.approx(grad_norm, rel=1e-4)


def test_accumulated_micro_batches_give_the_gradient_of_one_large_batch(tmp_path: Path) -> None:
    """grad_accum 2 x batch 4 is the gradient of the 8 sequences taken as one batch."""
    trainer = _trainer(tmp_path, grad_accum=2, grad_clip=0.0, dropout=0.0)
    reference = copy.deepcopy(trainer.raw_model)
    x0, y0 = trainer.train_batches.get(0)
    x1, y1 = trainer.train_batches.get(1)
    assert x0.shape == (4, 32) and not torch.equal(x0, x1)
    accumulated, _ = _grads_at_step(trainer)

    _, loss = reference(torch.cat([x0, x1]), torch.cat([y0, y1]))
    loss.backward()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(accumulated[name], param.grad, rtol=1e-4, atol=1e-6)
    assert trainer.data_position == 2  # the next step starts after both micro-batches


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tmp_path: Path) -> None:
    """--compile changes the speed, not the numbers."""
    eager = start(tiny_config(tmp_path / "eager", max_iters=3, eval_interval=3), log=_quiet)
    compiled = start(
        tiny_config(tmp_path / "compiled", max_iters=3, eval_interval=3, compile=True), log=_quiet
    )
    assert eager.status == compiled.status == "completed"
    ours = read_metrics(tmp_path / "compiled" / "run")
    theirs = read_metrics(tmp_path / "eager" / "run")
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)
    assert ours[-1]["val_loss"] == pytest.approx(theirs[-1]["val_loss"], rel=1e-4)


def test_mfu_is_model_flops_over_the_device_peak(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """With a known peak and a half-precision step, every record and the bar carry MFU; the CPU
    stands in for a GPU whose peak is given."""
    cpu = select_device("cpu")
    device = dataclasses.replace(cpu, name="test accelerator", peak_flops=1e9)
    cfg = tiny_config(tmp_path, dtype="bf16", max_iters=3, eval_interval=3, progress=True)
    cfg = cfg.resolved()
    torch.manual_seed(0)
    model = GPT(scratch_config(cfg))
    trainer = Trainer(
        single_process_plan(cfg, device), model, open_prepared(cfg.data[0]), log=_quiet
    )
    result = trainer.fit()
    assert result.status == "completed"
    records = read_metrics(Path(cfg.out))
    per_token = flops_per_token(model.config, cfg.block_size)
    for record in records:
        assert record["mfu"] == pytest.approx(per_token * record["tokens_per_s"] / 1e9, rel=1e-6)
    bar = capfd.readouterr().err
    assert "loss " in bar and "lr " in bar and "tok/s" in bar and "MFU " in bar


def test_no_mfu_without_a_known_peak_or_in_float32(tmp_path: Path) -> None:
    result = start(tiny_config(tmp_path, max_iters=2, eval_interval=2), log=_quiet)
    assert result.status == "completed"
    assert all("mfu" not in r for r in read_metrics(tmp_path / "run"))


def test_checkpoints_carry_the_tokenizer_so_they_work_alone(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2load.tokenizer import get_tokenizer

    cfg = tiny_config(tmp_path, max_iters=2, eval_interval=2, tokenizer_dir=str(tokenizer_dir))
    assert start(cfg, log=_quiet).status == "completed"
    for name in ("best", "last"):
        folder = Path(cfg.out) / name
        for filename in ("encoder.json", "vocab.bpe"):
            assert (folder / filename).read_bytes() == (tokenizer_dir / filename).read_bytes()
    expected = get_tokenizer(tokenizer_dir).encode("ROMEO: Thou art")
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("GPT2LOAD_OFFLINE", "1")
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    assert get_tokenizer(Path(cfg.out) / "best").encode("ROMEO: Thou art") == expected
