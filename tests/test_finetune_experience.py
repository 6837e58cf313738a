"""What a training run tells its user (issue 15): never silent while it works, a summary with
the next commands when it ends, and a ``loss.png`` that names the run and shows its learning
rate. Every run is the real command line, in-process, on a 2-layer model of width 32."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from finetune import cli
from finetune.config import TrainConfig
from finetune.launch import start
from finetune.sinks import loss_figure, read_records

from .conftest import make_dataset

TINY_FLAGS = (
    "--init scratch --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 2 "
    "--warmup-iters 1 --eval-batches 3 --sample-interval 0 --force-cpu --seed 0"
)
TINY = TINY_FLAGS.split()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(argv: list[str]) -> tuple[int, str, str]:
    """``finetune ARGV`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lr0_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """4 steps at --lr 0 with an evaluation every 2: the val loss never improves after the
    first, so the best checkpoint (step 2) is not the last one (step 4)."""
    root = tmp_path_factory.mktemp("lr0")
    run = root / "runs" / "notes-lr0"
    argv = ["pretrain", *TINY, "--data", str(make_dataset(root / "ds")), "--out", str(run)]
    code, out, _ = _run([*argv, "--lr", "0", "--eval-interval", "2", "--max-iters", "4"])
    assert code == 0, out
    return run, out


def test_the_first_step_and_each_evaluation_show_on_stderr(tmp_path: Path) -> None:
    base = ["pretrain", *TINY, "--data", str(make_dataset(tmp_path / "ds")), "--lr", "3e-3"]
    argv = [*base, "--out", str(tmp_path / "run"), "--eval-interval", "2", "--max-iters", "4"]
    code, out, err = _run(argv)
    assert code == 0, err
    bar = err.replace("\r", "\n")
    assert "first step (warming up) ..." in bar
    assert bar.index("first step") < bar.index("2/4")  # shown while the first step ran
    assert bar.count("evaluating: 1/6 batches") == 2  # at steps 2 and 4, as they begin
    assert all(f"evaluating: {done}/6 batches" in bar for done in range(2, 7))
    assert "loss " in bar and "tok/s" in bar  # the bar itself is still there
    evaluated = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in evaluated] == ["step 2", "step 4"]  # whole lines
    assert "evaluating" not in out and "first step" not in out

    # Without the bar (--no-progress, as in a log file) the same news are plain lines.
    argv = [*base, "--out", str(tmp_path / "quiet"), "--eval-interval", "2", "--max-iters", "2"]
    code, out, err = _run([*argv, "--no-progress"])
    assert code == 0, err
    lines = out.splitlines()
    first, evaluating, result = (
        lines.index("first step (warming up) ..."),
        lines.index("evaluating (6 batches) ..."),
        next(i for i, line in enumerate(lines) if line.startswith("step 2: train")),
    )
    assert first < evaluating < result
    assert "evaluating" not in err and "first step" not in err


def test_a_finished_run_sums_up_with_the_next_commands(lr0_run: tuple[Path, str]) -> None:
    run, out = lr0_run
    evals = [r for r in read_records(run / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and evals[0]["val_loss"] == evals[1]["val_loss"]
    lines = out.splitlines()
    at = lines.index("finished 4 steps")  # the words the run always ended with
    summary = "\n".join(lines[at + 1 :])
    assert re.search(r"^  took \d+\.\ds \(steps 1-4\)$", summary, re.M), summary
    assert f"  best: val loss {evals[0]['val_loss']:.4f} at step 2, in {run / 'best'}" in summary
    assert f"  last: step 4, in {run / 'last'}" in summary
    assert f"  next: gpt2load generate {run / 'best'}" in summary
    assert f"        gpt2load chat {run / 'best'}" in summary
    assert f"        gpt2load compare gpt2 {run / 'best'}" in summary  # --init scratch


def test_early_stopped_and_interrupted_runs_sum_up_too_and_a_diverged_one_does_not(
    tmp_path: Path,
) -> None:
    data = make_dataset(tmp_path / "ds")
    base = ["pretrain", *TINY, "--data", str(data)]
    argv = [*base, "--out", str(tmp_path / "early"), "--lr", "0", "--eval-interval", "1"]
    code, out, _ = _run([*argv, "--patience", "1", "--max-iters", "10", "--no-progress"])
    assert code == 0 and "early stop: val loss has not improved for 1 evaluations" in out
    assert "best: val loss " in out and f"at step 1, in {tmp_path / 'early' / 'best'}" in out
    assert f"last: step 2, in {tmp_path / 'early' / 'last'}" in out
    assert f"next: gpt2load generate {tmp_path / 'early' / 'best'}" in out

    said: list[str] = []
    tiny = {"init": "scratch", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
    cfg = TrainConfig(
        **tiny, batch_size=2, data=[str(data)], out=str(tmp_path / "stopped"), max_iters=50
    )
    cfg = cfg.replace(eval_interval=100, sample_interval=0, force_cpu=True, progress=False)

    def stop_at_2(trainer, record: dict) -> None:  # noqa: ANN001 - a finetune Callback
        if record["step"] == 2:
            trainer.request_stop("test")

    assert start(cfg, log=said.append, callbacks=[stop_at_2]).status == "interrupted"
    text = "\n".join(said)
    assert "stopped (test) at step 2" in text and "(steps 1-2)" in text
    assert "best:" not in text  # no evaluation ran, so there is no best checkpoint
    last = tmp_path / "stopped" / "last"
    assert f"last: step 2, in {last}" in text and f"next: gpt2load generate {last}" in text

    argv = [*base, "--out", str(tmp_path / "nan"), "--lr", "1e30", "--max-iters", "5"]
    code, out, _ = _run([*argv, "--no-progress"])
    assert code == 1 and "is not finite" in out
    assert "next:" not in out and "took" not in out  # nothing worth trying was left


def test_the_loss_plot_names_the_run_counts_whole_steps_and_shows_the_learning_rate(
    lr0_run: tuple[Path, str],
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    run, _ = lr0_run
    records = read_records(run / "metrics.jsonl")
    fig = loss_figure(records, run.name)
    FigureCanvasAgg(fig).draw()
    loss, lr = fig.axes
    assert loss.get_title() == "notes-lr0" and loss.get_ylabel() == "loss"
    ticks = [t for t in loss.get_xticks() if 1 <= t <= 4]
    assert ticks and all(t == int(t) for t in ticks)  # 4 steps: no 0.5 ticks
    assert lr.get_ylabel() == "learning rate" and lr.get_shared_x_axes().joined(lr, loss)
    [lr_line] = lr.get_lines()
    assert list(lr_line.get_ydata()) == [r["lr"] for r in records]
    assert {line.get_label() for line in loss.get_lines()} == {
        "train (step)",
        "train (eval)",
        "val (eval)",
    }

    # The run's own loss.png is that figure, title included: the same bytes...
    def png(title: str) -> bytes:
        buffer = io.BytesIO()
        loss_figure(records, title).savefig(buffer, format="png")
        return buffer.getvalue()

    assert (run / "loss.png").read_bytes() == png(run.name)
    assert png("another-run") != png(run.name)  # ...which another title would change
    assert json.loads((run / "last" / "info.json").read_text())["step"] == 4
