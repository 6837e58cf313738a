"""Data-parallel training: two real processes under torchrun, gloo on the CPU.

Each launch trains the tiny model with a global batch of 4 micro-batches per
step, split 2 + 2 over the ranks (so each rank accumulates, and must sync only
on its last micro-batch); a single process with the same global batch is the
reference for every loss, and the ranks' weights must stay identical. The user's
own ``torchrun -m finetune pretrain ... --fsdp`` command line is a launch of its own.
The model is a character-level one (``--tokenizer char``, about 20 tokens): what
is tested here does not depend on the vocabulary, and GPT-2's 50,257 would make
every step cost twenty times more.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune.config import TrainConfig
from finetune.launch import resume, start
from gpt2load.loading import load

from .conftest import make_char_text

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed"
    ),
]


def _quiet(_: str) -> None:
    pass


def _config(root: Path, out: str, **overrides: object) -> TrainConfig:
    settings = {
        "init": "scratch",
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 32,
        "out": str(root / out),
        "data": [str(root / "text.txt")],
        "tokenizer": "char",
        "data_dir": str(root / "data"),
        "batch_size": 4,
        "grad_accum": 4,
        "max_iters": 6,
        "lr": 3e-3,
        "warmup_iters": 2,
        # Constant after warmup, so a 6-step run is the first 6 steps of a 9-step one.
        "lr_schedule": "constant",
        "eval_interval": 3,
        "save_interval": 3,
        "sample_interval": 0,
        "force_cpu": True,
        "progress": False,
        "seed": 0,
        **overrides,
    }
    return TrainConfig(**settings)


def _torchrun(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *args]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _losses(run: Path) -> list[tuple[int, float, float | None]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in rows]


def _assert_same_losses(got: list, want: list) -> None:
    assert [s for s, _, _ in got] == [s for s, _, _ in want]
    for (step, train, val), (_, train_ref, val_ref) in zip(got, want, strict=True):
        assert train == pytest.approx(train_ref, rel=1e-5, abs=1e-5), f"step {step} train loss"
        assert (val is None) == (val_ref is None), f"step {step}: eval on one side only"
        if val is not None:
            assert val == pytest.approx(val_ref, rel=1e-5, abs=1e-5), f"step {step} val loss"


FSDP_FLAGS = (
    "pretrain --data {data} --tokenizer char --data-dir {data_dir} --out {out} --init scratch "
    "--n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --max-iters 6 --lr 3e-3 "
    "--warmup-iters 2 --lr-schedule constant --eval-interval 3 --save-interval 3 "
    "--sample-interval 0 --force-cpu --no-progress --seed 0 --fsdp"
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two DDP ranks (through the worker, which dumps each rank's final weights)."""
    root = tmp_path_factory.mktemp("ddp")
    make_char_text(root / "text.txt")
    cfg = _config(root, "ddp")
    (root / "cfg.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    worker = str(REPO_ROOT / "tests" / "ddp_worker.py")
    stdout = _torchrun([worker, str(root / "cfg.json"), str(root)], cwd=root)
    assert "distributed: 2 processes" in stdout
    return root


@pytest.fixture(scope="module")
def single_run(ddp_run: Path) -> Path:
    """The same global batch in one process, 9 steps: the reference for both tests; its
    step-6 weights are kept as ``step6.pt``."""

    def keep_step_6(trainer, record: dict) -> None:  # noqa: ANN001 - a finetune Callback
        if record["step"] == 6:
            state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
            torch.save(state, ddp_run / "step6.pt")

    start(_config(ddp_run, "single", max_iters=9), log=_quiet, callbacks=[keep_step_6])
    return ddp_run / "single"


def test_ranks_hold_identical_weights(ddp_run: Path) -> None:
    rank0 = torch.load(ddp_run / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_run / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and len(rank0) > 10
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
    saved = load(ddp_run / "ddp" / "last").state_dict()
    for name, tensor in saved.items():
        assert torch.equal(tensor, rank0[name]), f"checkpoint {name} is not rank 0's"


def test_each_rank_syncs_gradients_once_per_optimizer_step(ddp_run: Path) -> None:
    """Two micro-batches per rank and step: DDP all-reduces every gradient bucket once per step
    (after the last micro-batch), never for the first."""
    for rank in (0, 1):
        syncs = json.loads((ddp_run / f"rank{rank}-syncs.json").read_text())
        by_step: dict[int, list[int]] = {}
        for step, bucket in syncs:
            by_step.setdefault(step, []).append(bucket)
        assert sorted(by_step) == list(range(1, 7)), f"rank {rank} synced outside steps 1-6"
        buckets = sorted(by_step[1])
        assert buckets and buckets == sorted(set(buckets)), f"rank {rank}: a bucket synced twice"
        assert all(sorted(b) == buckets for b in by_step.values()), by_step


def test_losses_match_a_single_process_with_the_same_global_batch(
    ddp_run: Path, single_run: Path
) -> None:
    single = _losses(single_run)[:6]
    _assert_same_losses(_losses(ddp_run / "ddp"), single)
    ddp_weights = load(ddp_run / "ddp" / "last").state_dict()
    reference = torch.load(ddp_run / "step6.pt", weights_only=True)
    assert reference.keys() == ddp_weights.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_ranks_checkpoint_resumes_in_one_process(ddp_run: Path, single_run: Path) -> None:
    result = resume(ddp_run / "ddp", {"max_iters": 9}, log=_quiet)
    assert result.status == "completed" and result.step == 9
    _assert_same_losses(_losses(ddp_run / "ddp"), _losses(single_run))


def test_fsdp_through_the_cli_matches_a_single_process(ddp_run: Path) -> None:
    """The user's own command: ``torchrun -m finetune pretrain ... --fsdp``, with no
    --grad-accum: one micro-batch per process, so 2 per step, like a single process given 2."""
    cfg = _config(ddp_run, "fsdp")
    out = Path(cfg.out)
    flags = FSDP_FLAGS.format(data=cfg.data[0], data_dir=cfg.data_dir, out=cfg.out).split()
    stdout = _torchrun(["-m", "finetune", *flags], cwd=ddp_run)
    assert "FSDP (sharded)" in stdout
    assert "--grad-accum 2 is split 1 per process" in stdout
    assert "grad_accum = 2" in (out / "config.toml").read_text()
    reference = start(_config(ddp_run, "single-accum2", grad_accum=2), log=_quiet)
    assert reference.status == "completed"
    _assert_same_losses(_losses(out), _losses(ddp_run / "single-accum2"))
    # The sharded run's checkpoint is whole: it loads like any other.
    assert load(out / "best").config.n_layer == 2
