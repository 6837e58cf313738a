"""Hostile runs, files and users against `finetune` (issue 13): lose nothing, follow no link,
hang on nothing, and answer with one line, never a traceback.

Everything goes through the real command line, on a 2-layer model of width 32, a made-up
token stream and a few steps; a second process (a concurrent run, a file-size limit, a
read-only mount) is a real ``python -m finetune``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune import cli
from finetune.runlock import LOCK_FILE
from gpt2load.native import NATIVE_FILENAME, save_native

from .conftest import make_char_text, make_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_FLAGS = (
    "--init scratch --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 2 "
    "--lr 3e-3 --warmup-iters 1 --eval-interval 100 --sample-interval 0 --force-cpu "
    "--no-progress --seed 0"
)
TINY = TINY_FLAGS.split()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (``last`` and ``best`` at step 2), copied by each test that
    changes it."""
    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "ds")
    run = root / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["pretrain", *TINY, "--data", str(data), "--out", str(run), "--max-iters", "2"]
        assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(before)
    return run


def _copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the trained run, and its dataset."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, run.parent / "ds"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file aside), byte for byte."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run the command; it must fail with ``code`` and say so in exactly one line."""
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _python_m_finetune(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "finetune", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


# ------------------------------------------------------- data loss: --overwrite
def test_overwrite_starts_from_the_runs_own_weights_before_replacing_them(
    trained: Path, tmp_path: Path
) -> None:
    """--init RUN / RUN/last / RUN/best with --out RUN --overwrite: the weights are read first.

    At --lr 0 a step changes nothing, so the new run's checkpoints must hold exactly the
    old run's weights; before the fix the folder was emptied first and the run refused."""
    run, data = _copy(trained, tmp_path)
    weights = load_file(str(trained / "best" / NATIVE_FILENAME))
    for init in (run, run / "last", run / "best"):
        argv = ["pretrain", *TINY, "--data", str(data), "--out", str(run), "--overwrite"]
        assert cli.main([*argv, "--init", str(init), "--lr", "0", "--max-iters", "1"]) == 0
        for name in ("last", "best"):
            again = load_file(str(run / name / NATIVE_FILENAME))
            assert again.keys() == weights.keys()
            assert all(torch.equal(again[k], weights[k]) for k in weights), (init, name)
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
        assert steps == [1]  # the old run's records were replaced, not continued


def test_a_refused_overwrite_leaves_the_old_run_whole(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = _copy(trained, tmp_path)
    before = _snapshot(run)
    argv = ["pretrain", *TINY, "--init", str(run / "best"), "--out", str(run), "--overwrite"]
    line = _error_line(capsys, [*argv, "--data", str(tmp_path / "missing.txt")])
    assert "missing.txt" in line and "does not exist" in line
    assert _snapshot(run) == before
    assert not (run / LOCK_FILE).exists()


@pytest.mark.parametrize("inside", ["last", "best", "last/sub", ".last.old", "best/.x/y"])
def test_a_new_run_inside_a_checkpoint_folder_is_refused_before_anything_is_written(
    inside: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RUN/last is replaced whole at RUN's next save: a run placed in it (or under it) would be
    deleted without a word, --overwrite or not, so it is refused before its folder exists."""
    run, data = _copy(trained, tmp_path)
    before = _snapshot(run)
    out = run / inside
    folder = run / inside.split("/")[0]
    for extra in ([], ["--overwrite"]):
        argv = ["pretrain", *TINY, "--init", str(run), "--data", str(data), "--out", str(out)]
        line = _error_line(capsys, [*argv, *extra, "--max-iters", "3"])
        assert f"--out {out}" in line and str(folder) in line, line
        assert "checkpoint folder" in line and "Pick an --out outside" in line, line
    assert _snapshot(run) == before  # nothing written, not even a lock file
    assert os.path.lexists(out) == (inside in ("last", "best")) and not list(run.rglob(LOCK_FILE))


def test_a_run_may_live_in_a_folder_of_weights_that_no_save_replaces(
    trained: Path, tmp_path: Path
) -> None:
    """Only a run's own checkpoint names are replaced whole: a folder that merely holds
    weights (a Hugging Face folder, a copied checkpoint) may hold a run's folder."""
    run, data = _copy(trained, tmp_path)
    weights = tmp_path / "my-model"
    shutil.copytree(run / "best", weights)  # model.safetensors, trainer.pt and all
    out = weights / "runs" / "ft"
    argv = ["pretrain", *TINY, "--init", str(weights), "--data", str(data), "--out", str(out)]
    assert cli.main([*argv, "--max-iters", "1"]) == 0
    assert (out / "last" / NATIVE_FILENAME).is_file() and (weights / NATIVE_FILENAME).is_file()


def test_resume_refuses_to_replace_a_checkpoint_folder_holding_another_run(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that an older version let live in RUN/last: RUN's next save would delete it."""
    run, _ = _copy(trained, tmp_path)
    shutil.copytree(trained / "best", run / "last" / "best")
    shutil.copyfile(trained / "metrics.jsonl", run / "last" / "metrics.jsonl")
    before = _snapshot(run)
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert f"{run / 'last'} holds another run's files (best, metrics.jsonl)" in line, line
    assert _snapshot(run) == before


@pytest.mark.parametrize("name", [".last.tmp", ".last.old", ".best.tmp", ".best.old"])
@pytest.mark.parametrize("kind", ["file", "folder", "link to a folder", "dangling link"])
def test_the_runs_own_temporary_names_are_cleared_whatever_stands_there(
    name: str, kind: str, trained: Path, tmp_path: Path
) -> None:
    """Left by a crash or by hand: the save clears them (a link, never what it points to),
    instead of training to the end and then failing every save with a wrong advice."""
    run, _ = _copy(trained, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me\n")
    stray = run / name
    {
        "file": lambda: stray.write_text("stray\n"),
        "folder": lambda: shutil.copytree(outside, stray),
        "link to a folder": lambda: stray.symlink_to(outside, target_is_directory=True),
        "dangling link": lambda: stray.symlink_to(tmp_path / "nowhere"),
    }[kind]()
    argv = ["resume", str(run), "--max-iters", "4", "--eval-interval", "2"]
    assert cli.main(argv) == 0
    for checkpoint in ("last", "best"):
        info = json.loads((run / checkpoint / "info.json").read_text())
        assert info["step"] == 4 and not (run / checkpoint).is_symlink()
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert (outside / "keep.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("name", ["last", "best"])
def test_a_link_or_a_file_at_a_checkpoints_name_is_refused_before_training(
    name: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resume would read the checkpoint out of the folder through the link, train, and its
    saves would replace the link (leaving links behind); refused at once, as for metrics."""
    run, _ = _copy(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (run / name).rename(elsewhere)
    kept = _snapshot(elsewhere)
    (run / name).symlink_to(elsewhere, target_is_directory=True)
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert f"{run / name} is a symbolic link" in line, line
    assert f"rm {run / name} && cp -r {elsewhere} {run / name}" in line, line
    (run / name).unlink()
    (run / name).write_text("not a checkpoint\n")
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert f"{run / name} is not a folder" in line, line
    assert _snapshot(elsewhere) == kept
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]


# ------------------------------------------------------- one process per run folder
def test_a_second_run_in_the_same_folder_is_refused_at_once_and_a_killed_one_leaves_no_lock(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data = _copy(trained, tmp_path)
    common = [*TINY, "--data", str(data), "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "finetune", "resume", str(run), "--max-iters", "100000"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / LOCK_FILE).exists() or not (run / LOCK_FILE).read_text():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run never took the folder"
            time.sleep(0.05)
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid
        for argv in (
            ["resume", str(run), "--max-iters", "5"],
            ["pretrain", *common, "--overwrite", "--max-iters", "1"],
        ):
            started = time.monotonic()
            line = _error_line(capsys, argv)
            assert time.monotonic() - started < 10  # at once, not after the other run
            assert "in use by another finetune run" in line
            assert f"pid {first.pid} on {holder['host']}" in line and holder["started"] in line
        assert first.poll() is None  # the holder was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # SIGKILL: no clean-up ran, the lock file is still there, but the lock died with it.
    assert (run / LOCK_FILE).exists()
    argv = ["pretrain", *common, "--overwrite", "--max-iters", "1"]
    assert cli.main(argv) == 0
    assert not (run / LOCK_FILE).exists()  # a run that ends removes its lock file


def test_a_link_at_the_lock_files_name_is_refused_not_followed(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = _copy(trained, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    (run / LOCK_FILE).symlink_to(outside)
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert "symbolic link" in line and LOCK_FILE in line
    assert outside.read_text() == "keep me\n"


@pytest.mark.parametrize("kind", ["hard link", "folder", "fifo"])
def test_a_hard_link_folder_or_fifo_at_the_lock_files_name_is_one_line(
    kind: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused with the lock file's path and what is wrong there, never written through (a
    hard link would truncate and overwrite the file it shares with), never waited on."""
    run, _ = _copy(trained, tmp_path)
    lock, outside = run / LOCK_FILE, tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    {
        "hard link": lambda: os.link(outside, lock),
        "folder": lock.mkdir,
        "fifo": lambda: os.mkfifo(lock),
    }[kind]()
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    said = {
        "hard link": "has other hard links",
        "folder": "is not a regular file",
        "fifo": "is not a regular file",
    }
    assert line.startswith(f"finetune resume: error: {lock} {said[kind]}"), line
    assert line.endswith(
        "a run folder's lock file must be a plain file of its own. Remove it and try again"
    )
    assert outside.read_text() == "keep me\n" and os.path.lexists(lock)


# ------------------------------------------------------- disks that refuse writes
def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_last_good_one(
    trained: Path, tmp_path: Path
) -> None:
    """Files are capped at 1 MiB (RLIMIT_FSIZE with SIGXFSZ ignored: writes fail with EFBIG,
    as they would with ENOSPC); a checkpoint of the tiny model is ~7 MB."""
    run, _ = _copy(trained, tmp_path)
    checkpoints = {name: _snapshot(run / name) for name in ("last", "best")}
    done = _python_m_finetune("resume", str(run), "--max-iters", "3", preexec_fn=_limit_file_size)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert line.startswith("finetune resume: error: could not save checkpoint")
    assert "File too large (EFBIG)" in line and "intact (step 2)" in line
    assert f"finetune resume {run}" in line
    for name, files in checkpoints.items():
        assert _snapshot(run / name) == files  # the step-2 checkpoints, byte for byte
    assert not list(run.glob(".*.tmp")) and not list(run.glob("**/.*.tmp"))


def _read_only_mount(folder: Path) -> list[str] | None:
    """A command prefix that runs its command with ``folder`` mounted read-only (root
    ignores permission bits, so chmod would prove nothing); None where that cannot be."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}'"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    return [unshare, "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]


def test_a_read_only_out_is_one_line_before_any_work(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    out = tmp_path / "ro"
    out.mkdir()
    prefix = _read_only_mount(out)
    if prefix is None:
        pytest.skip("running as root without a way to mount a folder read-only (unshare -m)")
    if not prefix:
        out.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    argv = ["pretrain", *TINY, "--data", str(data), "--out", str(out), "--max-iters", "1"]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "finetune", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"cannot write in the run folder {out}" in done.stderr
    assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    assert list(out.iterdir()) == []


# ------------------------------------------------------- damaged trainer.pt
def _edit_state(path: Path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda s: s.pop("optimizer"), "lacks 'optimizer'"),
        (lambda s: (s.pop("rng"), s.pop("data")), "lacks 'rng', 'data'"),
        (lambda s: s.update(step="2"), "'step' is str ('2'), not an integer"),
        (lambda s: s.update(step=2.5), "'step' is float (2.5), not an integer"),
        (lambda s: s.update(step=True), "'step' is bool (True), not an integer"),
        (lambda s: s["data"].update(position=None), "data['position'] is NoneType"),
        (None, "is empty (0 bytes)"),
        (b"PK\x03\x04 not really a zip", "it is damaged or not a trainer state"),
    ],
)
def test_a_damaged_trainer_state_is_named_with_its_fault(
    trained: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage,
    expected: str,
) -> None:
    run, _ = _copy(trained, tmp_path)
    path = run / "last" / "trainer.pt"
    if damage is None:
        path.write_bytes(b"")
    elif isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        _edit_state(path, damage)
    before = _snapshot(run)
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert str(path) in line and expected in line
    assert f"--init {run / 'last'}" in line  # its weights still start a new run
    assert _snapshot(run) == before


# ------------------------------------------------------- flags and files given wrongly
def test_settings_and_paths_of_the_wrong_kind_are_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = trained.parent / "ds"
    base = ["pretrain", *TINY, "--data", str(data), "--out", str(tmp_path / "new")]
    line = _error_line(capsys, [*base, "--seed", str(2**64)])
    assert "seed must be at most 9223372036854775807" in line
    line = _error_line(capsys, [*base, "--max-iters", str(2**63)])
    assert "max_iters must be at most" in line

    binary = tmp_path / "weights.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "is not text" in _error_line(capsys, [*base, "--config", str(binary)])
    assert "is a folder" in _error_line(capsys, [*base, "--config", str(tmp_path)])
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    for special in (fifo, Path("/dev/zero")):
        started = time.monotonic()
        line = _error_line(capsys, [*base, "--config", str(special)])
        assert "is not a regular file" in line and time.monotonic() - started < 5
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "deep.toml" in _error_line(capsys, [*base, "--config", str(deep)])
    line = _error_line(capsys, ["resume", str(trained), "--config", str(binary)])
    assert "is not text" in line

    text = tmp_path / "notes.txt"
    text.write_text("some words to train on\n" * 50)
    a_file = tmp_path / "data-dir-file"
    a_file.write_text("")
    for data_dir in (a_file, a_file / "sub"):
        argv = ["pretrain", *TINY, "--data", str(text), "--data-dir", str(data_dir)]
        line = _error_line(capsys, [*argv, "--out", str(tmp_path / "new")])
        assert f"--data-dir {data_dir} is not a folder" in line
    assert not (tmp_path / "new").exists()  # refused runs leave no empty run folder


def test_metrics_replaced_by_a_folder_or_a_link_is_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = _copy(trained, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert f"{run / 'metrics.jsonl'} is not a plain file" in line
    (run / "metrics.jsonl").rmdir()
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("")
    (run / "metrics.jsonl").symlink_to(outside)
    line = _error_line(capsys, ["resume", str(run), "--max-iters", "3"])
    assert "is a symbolic link" in line
    assert outside.read_text() == ""
    assert _snapshot(run / "last") == _snapshot(trained / "last")


# ------------------------------------------------------- one record per step
def test_resume_after_a_stop_between_saves_lists_each_sample_and_metric_once(
    tmp_path: Path,
) -> None:
    """A run killed between saves wrote samples and metrics past its last checkpoint; resumed,
    both files are cut back to the checkpoint's step, so no step is listed twice."""
    text = make_char_text(tmp_path / "play.txt")
    run = tmp_path / "run"
    argv = ["pretrain", *TINY, "--tokenizer", "char", "--data", str(text), "--out", str(run)]
    argv += [
        "--sample-interval",
        "1",
        "--sample-tokens",
        "3",
        "--sample-prompt",
        text.read_text()[:2],
    ]
    assert cli.main([*argv, "--max-iters", "2"]) == 0
    at_step_2 = tmp_path / "last-at-2"
    shutil.copytree(run / "last", at_step_2)
    assert cli.main(["resume", str(run), "--max-iters", "4"]) == 0
    shutil.rmtree(run / "last")  # as if killed after step 4's records, before its save
    shutil.copytree(at_step_2, run / "last")
    assert cli.main(["resume", str(run), "--max-iters", "5"]) == 0
    for name in ("samples.jsonl", "metrics.jsonl"):
        steps = [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]
        assert steps == [1, 2, 3, 4, 5], name


# ------------------------------------------------------- advice that must hold
def test_resume_with_a_lower_lr_derives_min_lr_again_and_trains_at_it(
    trained: Path, tmp_path: Path
) -> None:
    """The advice after a divergence, followed: the run had --lr 3e-3 (min_lr derived,
    3e-4); resuming at --lr 1e-4 must not fail on a min_lr frozen above it."""
    run, _ = _copy(trained, tmp_path)

    def recorded() -> dict:
        return torch.load(run / "last" / "trainer.pt", weights_only=True)

    assert cli.main(["resume", str(run), "--lr", "1e-4", "--max-iters", "3"]) == 0
    state = recorded()
    assert state["config"]["lr"] == 1e-4 and state["config"]["min_lr"] == pytest.approx(1e-5)
    lr_at_3 = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["lr"]
    assert 1e-5 <= lr_at_3 <= 1e-4  # the new peak is what the schedule now runs at
    # A min_lr given explicitly is kept when --lr changes again.
    assert cli.main(["resume", str(run), "--min-lr", "2e-5", "--max-iters", "4"]) == 0
    assert cli.main(["resume", str(run), "--lr", "5e-5", "--max-iters", "5"]) == 0
    assert recorded()["config"]["min_lr"] == 2e-5 and recorded()["config"]["lr"] == 5e-5


def test_broken_starting_weights_are_not_called_a_learning_rate_problem(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpt2load import load

    model = load(trained / "best")
    with torch.no_grad():
        model.trf_blocks[1].ff.layers[0].weight[3, 5] = float("nan")
    save_native(model, tmp_path / "nan")
    out = tmp_path / "new"
    argv = ["pretrain", *TINY, "--data", str(trained.parent / "ds"), "--out", str(out)]
    assert cli.main([*argv, "--init", str(tmp_path / "nan"), "--max-iters", "3"]) == 1
    said = capsys.readouterr().out
    assert "before any update: the starting weights (--init" in said
    assert "1 of its tensors hold NaN or inf (trf_blocks.1.ff.layers.0.weight)" in said
    assert "not a learning-rate problem" in said
    assert "Lower --lr" not in said and "finetune resume" not in said


def test_a_divergence_before_any_save_does_not_advise_resume(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new"
    argv = ["pretrain", *TINY, "--data", str(trained.parent / "ds"), "--out", str(out)]
    assert cli.main([*argv, "--lr", "1e30", "--max-iters", "5"]) == 1
    said = capsys.readouterr().out
    assert "is not finite" in said and "Lower --lr" in said
    assert "no checkpoint was saved yet, so start the run again" in said
    assert "finetune resume" not in said
