"""What `finetune resume` refuses or repairs: other data, other settings, nothing left to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from finetune import cli
from finetune.checkpoint import read_trainer_state
from finetune.data import open_prepared

from .conftest import make_dataset

TINY_FLAGS = (
    "--init scratch --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 2 "
    "--lr 3e-3 --warmup-iters 1 --eval-interval 100 --sample-interval 0 --force-cpu "
    "--no-progress --seed 0"
)
TINY = TINY_FLAGS.split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _two_step_run(tmp_path: Path, *flags: str) -> Path:
    """A finished 2-step run of the tiny model on a made-up dataset."""
    data = make_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    train = ["pretrain", *TINY, "--data", str(data), "--out", str(run), "--max-iters", "2"]
    assert cli.main([*train, *flags]) == 0
    return run


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``_two_step_run`` once for the tests that start from it unchanged (each copies it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _two_step_run(tmp_path_factory.mktemp("two-step"))
    finally:
        torch.set_num_threads(before)


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_trains_on_the_runs_own_tokens_or_refuses(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sources called notes.txt, prepared into one data folder: run A's resume must not
    train on B's tokens. Its checkpoint records the data's key; a folder that no longer holds
    those tokens is prepared again from A's sources, and if even they have changed, resume
    refuses instead of continuing on other text."""
    for name, word in (("a", "apples and pears. "), ("b", "Bright blue boats! ")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(word * 400)
    data_dir, run = tmp_path / "data", tmp_path / "run"
    common = ["--data-dir", str(data_dir), "--tokenizer-dir", str(tokenizer_dir)]
    text_a = str(tmp_path / "a" / "notes.txt")
    train = ["pretrain", *TINY, *common, "--data", text_a, "--out", str(run), "--max-iters", "2"]
    assert cli.main(train) == 0
    state = read_trainer_state(run / "last")
    folder_a = Path(state["dataset"])
    key_a = state["data"]["source_key"]
    assert key_a == open_prepared(folder_a).meta["source_key"]

    # Another source with the same file name gets its own folder.
    assert cli.main(["prepare", str(tmp_path / "b" / "notes.txt"), *common]) == 0
    assert len(list(data_dir.iterdir())) == 2
    assert open_prepared(folder_a).meta["source_key"] == key_a

    # Forced into A's folder anyway (--name): resume notices and prepares A's sources again.
    forced = ["prepare", str(tmp_path / "b" / "notes.txt"), *common, "--name", folder_a.name]
    assert cli.main(forced) == 0
    assert open_prepared(folder_a).meta["source_key"] != key_a
    capsys.readouterr()
    assert cli.main(["resume", str(run), "--max-iters", "3"]) == 0
    assert "no longer holds this run's tokens" in capsys.readouterr().out
    assert open_prepared(folder_a).meta["source_key"] == key_a
    assert read_trainer_state(run / "last")["data"]["source_key"] == key_a

    # A's source edited and prepared: the run's tokens exist nowhere any more.
    (tmp_path / "a" / "notes.txt").write_text("something else entirely. " * 400)
    assert cli.main(["prepare", text_a, *common]) == 0
    assert cli.main(["resume", str(run), "--max-iters", "4"]) == 2
    err = capsys.readouterr().err
    assert "the data of this run has changed" in err and f"--init {run}/last" in err
    assert _steps(run) == [1, 2, 3]  # nothing was trained on the other text


def test_resume_refusals_through_the_command_line(
    two_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(two_step_run, tmp_path)
    capsys.readouterr()

    def refused(*flags: str) -> str:
        assert cli.main(["resume", str(run), *flags]) == 2
        return capsys.readouterr().err

    err = refused("--n-layer", "4")
    assert "--n-layer (the run has 2) cannot change when resuming" in err
    assert "unrecognized" not in err
    err = refused("--seed", "3", "--max-iters", "4")
    assert "--seed (the run has 0) cannot change" in err and "which batches" in err
    assert "--batch-size (the run has 2)" in refused("--batch-size", "4", "--max-iters", "4")
    assert "--block-size" in refused("--block-size", "16", "--max-iters", "4")
    assert "--eval-batches" in refused("--eval-batches", "2", "--max-iters", "4")
    err = refused("--max-iters", "2")
    assert "--max-iters 2 is not beyond the run's current step 2" in err
    assert "not beyond" in refused("--max-iters", "1")
    assert "already trained its 2 steps" in refused()
    assert _steps(run) == [1, 2]

    # The run's own config.toml is a valid --config for resume; flags still win over it.
    config = run / "config.toml"
    capsys.readouterr()
    assert cli.main(["resume", str(run), "--config", str(config), "--max-iters", "3"]) == 0
    assert _steps(run) == [1, 2, 3]
    changed = tmp_path / "more.toml"
    changed.write_text("max_iters = 4\nlr = 0.001\n")
    assert cli.main(["resume", str(run), "--config", str(changed)]) == 0
    assert _steps(run) == [1, 2, 3, 4]
    assert read_trainer_state(run / "last")["config"]["lr"] == 0.001
    changed.write_text("max_iters = 5\nseed = 9\n")
    assert cli.main(["resume", str(run), "--config", str(changed)]) == 2
    assert "--seed (the run has 0) cannot change" in capsys.readouterr().err


def test_resume_names_the_trainer_file_whose_optimizer_state_does_not_fit(
    two_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(two_step_run, tmp_path)
    trainer_pt = run / "last" / "trainer.pt"
    state = torch.load(trainer_pt, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].pop()  # one parameter short
    torch.save(state, trainer_pt)
    capsys.readouterr()
    assert cli.main(["resume", str(run), "--max-iters", "3"]) == 2
    err = capsys.readouterr().err
    assert f"the optimizer state in {trainer_pt} belongs to another model layout" in err
    assert _steps(run) == [1, 2]


def test_resume_without_a_grad_accum_keeps_the_runs_own(tmp_path: Path) -> None:
    run = _two_step_run(tmp_path, "--grad-accum", "3")
    assert cli.main(["resume", str(run), "--grad-accum", "none", "--max-iters", "3"]) == 0
    assert read_trainer_state(run / "last")["config"]["grad_accum"] == 3
    assert _steps(run) == [1, 2, 3]
