"""Real short trainings on the CPU with a tiny model: the loop, checkpoints, resume, stopping."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gpt2load
from finetune import cli
from finetune.checkpoint import find_checkpoint, read_trainer_state
from finetune.config import TrainConfig
from finetune.data import open_prepared
from finetune.launch import resume, start
from finetune.plan import plan_resume, plan_run, single_process_plan
from finetune.trainer import DIVERGED, EARLY_STOPPED, INTERRUPTED, Trainer
from gpt2load.model import GPT

from .conftest import SHAKESPEARE_TXT, VERDICT_TXT, make_char_text, make_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = {"init": "scratch", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}


def _quiet(_: str) -> None:
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def argv(template: str, **values: object) -> list[str]:
    """Command-line words from a template; values go in after splitting, so paths may hold spaces."""
    return [word.format(**values) for word in template.split()]


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    settings = {
        **TINY,
        "out": str(tmp_path / "run"),
        "data": [str(make_dataset(tmp_path / "ds"))],
        "data_dir": str(tmp_path / "data"),
        "batch_size": 4,
        "max_iters": 12,
        "lr": 3e-3,
        "warmup_iters": 2,
        "eval_interval": 4,
        "save_interval": 100,
        "sample_interval": 0,
        "force_cpu": True,
        "progress": False,
        "seed": 0,
        **overrides,
    }
    return TrainConfig(**settings)


def char_config(tmp_path: Path, **overrides) -> TrainConfig:
    """``tiny_config`` on a character model (see ``make_char_text``), for the tests whose point
    is not the vocabulary."""
    text = make_char_text(tmp_path / "text.txt")
    return tiny_config(tmp_path, data=[str(text)], tokenizer="char", **overrides)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ the loop
@pytest.mark.slow
def test_loss_falls_and_metrics_are_complete(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, max_iters=30, eval_interval=10, save_interval=20)
    result = start(cfg, log=_quiet)
    assert result.status == "completed" and result.exit_code == 0
    run = Path(cfg.out)
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 31))
    for r in records:
        assert {"step", "train_loss", "lr", "tokens_per_s"} <= r.keys()
        assert r["tokens_per_s"] > 0
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert all("eval_train_loss" in r for r in evals)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 2.0
    # Warmup then cosine decay down to min_lr (lr / 10).
    lrs = [r["lr"] for r in records]
    assert lrs[0] < lrs[1] <= max(lrs) == pytest.approx(3e-3, rel=0.01)
    assert lrs[-1] == pytest.approx(3e-4, rel=0.05)
    assert (run / "loss.png").stat().st_size > 1000
    assert read_trainer_state(run / "last")["step"] == 30
    assert (run / "best" / "info.json").exists()
    saved = TrainConfig.from_dict(__import__("tomllib").loads((run / "config.toml").read_text()))
    assert saved.lr == 3e-3 and saved.n_layer == 2 and saved.min_lr == pytest.approx(3e-4)


def test_eval_uses_exactly_the_fixed_batches(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    data = open_prepared(cfg.data[0])
    torch.manual_seed(0)
    model = GPT(__import__("finetune.modelinit", fromlist=["x"]).scratch_config(cfg))
    trainer = Trainer(single_process_plan(cfg), model, data, log=_quiet)
    assert len(trainer.eval_sets["train"]) == 5 and len(trainer.eval_sets["val"]) == 5
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))
    first = trainer.evaluate()
    second = trainer.evaluate()
    handle.remove()
    assert len(calls) == 2 * 2 * 5  # two evaluations x (train + val) x 5 batches
    assert all(shape == (4, 32) for shape in calls)
    assert first == second  # the same batches every time, so evaluations compare
    assert model.training  # evaluation puts the model back in training mode

    three = Trainer(single_process_plan(cfg.replace(eval_batches=3)), model, data, log=_quiet)
    assert len(three.eval_sets["val"]) == 3


@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path) -> None:
    """Stop at step 5 (between evals and saves), resume: every later number is identical."""
    common = {"dropout": 0.1, "grad_accum": 2, "max_iters": 9, "eval_interval": 3}
    full_cfg = char_config(tmp_path / "a", **common)
    start(full_cfg, log=_quiet)

    stop_cfg = char_config(tmp_path / "b", **common)

    def stop_at_5(trainer: Trainer, record: dict) -> None:
        if record["step"] == 5:
            trainer.request_stop("test")

    stopped = start(stop_cfg, log=_quiet, callbacks=[stop_at_5])
    assert stopped.status == INTERRUPTED and stopped.step == 5
    state = read_trainer_state(Path(stop_cfg.out) / "last")
    assert state["step"] == 5 and state["data"]["position"] == 10
    resumed = resume(stop_cfg.out, log=_quiet)
    assert resumed.status == "completed" and resumed.step == 9

    full, split = read_metrics(Path(full_cfg.out)), read_metrics(Path(stop_cfg.out))
    assert [r["step"] for r in split] == list(range(1, 10))
    for a, b in zip(full, split, strict=True):
        for key in ("train_loss", "lr", "grad_norm", "val_loss", "eval_train_loss"):
            assert a.get(key) == b.get(key), (a["step"], key)
    wa = torch.load(Path(full_cfg.out) / "last" / "trainer.pt", weights_only=True)
    wb = torch.load(Path(stop_cfg.out) / "last" / "trainer.pt", weights_only=True)
    for sa, sb in zip(
        wa["optimizer"]["state"].values(), wb["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    from safetensors.torch import load_file

    ma = load_file(str(Path(full_cfg.out) / "last" / "model.safetensors"))
    mb = load_file(str(Path(stop_cfg.out) / "last" / "model.safetensors"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_checkpoints_load_with_gpt2load(tmp_path: Path) -> None:
    import gpt2load

    cfg = tiny_config(tmp_path, max_iters=6, eval_interval=3)
    start(cfg, log=_quiet)
    run = Path(cfg.out)
    x = torch.randint(0, 300, (2, 16))
    for name in ("best", "last"):
        loaded = gpt2load.load(run / name)
        assert loaded.config.n_layer == 2 and loaded.config.context_length == 32
        reference = GPT(loaded.config)
        state = load_file(str(run / name / "model.safetensors"))
        assert not reference.load_state_dict(state, strict=False).unexpected_keys
        reference.tie_weights()
        reference.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), reference(x))
    # A run folder works as --init: it means that run's best checkpoint.
    follow = tiny_config(
        tmp_path / "f", init=str(run), max_iters=2, n_layer=None, n_head=None, n_embd=None
    )
    assert start(follow, log=_quiet).status == "completed"


def test_early_stopping_after_patience(tmp_path: Path) -> None:
    cfg = char_config(
        tmp_path, lr=0.0, min_lr=0.0, warmup_iters=0, max_iters=20, eval_interval=1, patience=2
    )
    result = start(cfg, log=_quiet)
    assert result.status == EARLY_STOPPED and result.exit_code == 0
    assert result.step == 3  # eval 1 sets best, evals 2 and 3 do not improve
    assert read_trainer_state(Path(cfg.out) / "last")["step"] == 3


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = char_config(tmp_path, max_iters=10, save_interval=2)
    messages: list[str] = []

    def poison(trainer: Trainer, record: dict) -> None:
        if record["step"] == 3:
            model = trainer.raw_model
            original = model.forward

            def nan_forward(idx, targets=None, cache=None):
                logits, loss = original(idx, targets)
                return logits, loss * float("nan")

            model.forward = nan_forward

    result = start(cfg, log=messages.append, callbacks=[poison])
    assert result.status == DIVERGED and result.exit_code == 1
    assert "not finite" in result.message and "step 2" in result.message
    last = find_checkpoint(Path(cfg.out), "last")
    assert read_trainer_state(last)["step"] == 2
    assert len(read_metrics(Path(cfg.out))) == 3  # steps 1-3 ran; step 4 was refused
    assert all(math.isfinite(r["train_loss"]) for r in read_metrics(Path(cfg.out)))


def test_the_same_command_twice_gives_the_same_losses(tmp_path: Path) -> None:
    """--seed decides dropout even when the weights come from a checkpoint (not only for
    --init scratch): two runs in one process, where torch's generator has moved on in
    between, train identically; another seed trains differently."""
    base = char_config(tmp_path / "base", max_iters=1)
    start(base, log=_quiet)
    torch.manual_seed(12345)  # whatever ran before must not matter

    def losses(name: str, seed: int) -> list[float]:
        cfg = tiny_config(
            tmp_path / name,
            data=base.data,
            init=str(Path(base.out) / "last"),
            n_layer=None,
            n_head=None,
            n_embd=None,
            dropout=0.2,
            max_iters=4,
            seed=seed,
        )
        start(cfg, log=_quiet)
        return [r["train_loss"] for r in read_metrics(Path(cfg.out))]

    first, second = losses("one", 7), losses("two", 7)
    assert first == second
    assert losses("other", 8) != first


def test_dropout_is_decided_once_by_the_plan(tmp_path: Path) -> None:
    """--dropout, else the starting checkpoint's own, is in the plan before any model is
    built; a new model's default is 0; a resume keeps the run's (even a record that predates
    dropout being written there); the model only applies it."""
    base = char_config(tmp_path / "base", max_iters=1, dropout=0.15)
    start(base, log=_quiet)
    last = Path(base.out) / "last"
    assert gpt2load.inspect(last).config.dropout == 0.15
    init = {"data": base.data, "init": str(last), "n_layer": None, "n_head": None, "n_embd": None}
    own = plan_run(tiny_config(tmp_path / "own", **init), _quiet)
    assert own.model is not None and own.cfg.dropout == 0.15
    assert plan_run(tiny_config(tmp_path / "given", **init, dropout=0.3), _quiet).cfg.dropout == 0.3
    assert plan_run(char_config(tmp_path / "new"), _quiet).cfg.dropout == 0.0
    more = {"max_iters": 2}
    assert plan_resume(Path(base.out), more, _quiet).cfg.dropout == 0.15
    assert plan_resume(Path(base.out), more | {"dropout": 0.05}, _quiet).cfg.dropout == 0.05
    start(own.cfg, log=_quiet)  # a run from the checkpoint, its record made to predate dropout
    record = Path(own.cfg.out) / "last" / "trainer.pt"
    state = torch.load(record, weights_only=True)
    state["config"]["dropout"] = None
    torch.save(state, record)
    assert plan_resume(Path(own.cfg.out), {"max_iters": 13}, _quiet).cfg.dropout == 0.15


def test_config_file_through_the_command_line(tmp_path: Path) -> None:
    """`finetune pretrain --config FILE`: the file's settings apply, flags given beside it win."""
    data = make_dataset(tmp_path / "ds")
    config = tmp_path / "run.toml"
    config.write_text(
        f'[train]\ninit = "scratch"\nn_layer = 2\nn_head = 2\nn_embd = 32\n'
        f"block_size = 32\nbatch_size = 2\nmax_iters = 5\nlr = 0.002\nwarmup_iters = 1\n"
        f"eval_interval = 100\nsample_interval = 0\nforce_cpu = true\nprogress = false\n"
        f"data = [{json.dumps(str(data))}]\nout = {json.dumps(str(tmp_path / 'run'))}\n"
    )
    assert cli.main(["pretrain", "--config", str(config), "--max-iters", "3", "--seed", "4"]) == 0
    saved = TrainConfig.from_dict(
        __import__("tomllib").loads((tmp_path / "run" / "config.toml").read_text())
    )
    assert (saved.max_iters, saved.seed) == (3, 4)  # the flags won
    assert (saved.batch_size, saved.lr, saved.n_embd) == (2, 0.002, 32)  # from the file
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_warmup_longer_than_the_run_is_warned_about(tmp_path: Path) -> None:
    messages: list[str] = []
    start(char_config(tmp_path, max_iters=2, warmup_iters=2), log=messages.append)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert len(warnings) == 1 and "--warmup-iters 2 >= --max-iters 2" in warnings[0]
    messages.clear()
    start(char_config(tmp_path / "b", max_iters=3, warmup_iters=2), log=messages.append)
    assert not [m for m in messages if m.startswith("warning:")]


# ------------------------------------------------------------------ bad input
def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = argv(
        "pretrain --force-cpu --no-progress --sample-interval 0 --data-dir {d}", d=tmp_path / "data"
    )
    tiny = argv("--init scratch --n-layer 2 --n-head 2 --n-embd 32")

    def run(*argv: str) -> str:
        assert cli.main([*base, *argv]) == 2
        return capsys.readouterr().err

    assert "does not exist" in run("--data", str(tmp_path / "missing.txt"), *tiny)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "no text to train on" in run("--data", str(empty), *tiny)
    short = make_dataset(tmp_path / "short", train_tokens=20, val_tokens=10)
    err = run("--data", str(short), *tiny, "--block-size", "32", "--out", str(tmp_path / "s"))
    assert "fewer than one context window" in err and "--block-size" in err

    cfg = tiny_config(tmp_path / "ok", max_iters=2)
    start(cfg, log=_quiet)
    ckpt = str(Path(cfg.out) / "last")
    data = ["--data", cfg.data[0]]
    err = run(*data, "--init", ckpt, "--n-embd", "64", "--out", str(tmp_path / "x"))
    assert "another size" in err and "--n-embd 64" in err
    err = run(*data, "--init", ckpt, "--block-size", "64", "--out", str(tmp_path / "y"))
    assert "longer than the model's context of 32" in err
    err = run(*data, *tiny, "--block-size", "32", "--out", cfg.out)
    assert "already holds a run" in err and "finetune resume" in err
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "no 'last' checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------------ W&B
def _wandb_offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No W&B login anywhere (no key, an empty netrc, no WANDB_MODE): what a new user has."""
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "empty-netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    wandb_dir = tmp_path / "wandb-home"
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return wandb_dir


def _offline_blob(wandb_dir: Path) -> bytes:
    runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    return next(runs[0].glob("run-*.wandb")).read_bytes()


@pytest.mark.slow
def test_wandb_without_a_login_logs_offline_with_metrics_config_and_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb_dir = _wandb_offline_env(tmp_path, monkeypatch)
    messages: list[str] = []
    cfg = tiny_config(
        tmp_path,
        max_iters=4,
        eval_interval=2,
        wandb=True,
        wandb_project="finetune-test-project",
        wandb_tags=["tag-xyz-7"],
        weight_decay=0.0731,
    )
    result = start(cfg, log=messages.append)
    assert result.status == "completed"
    assert any("no W&B login found, logging offline" in m for m in messages)
    assert any("wandb sync" in m for m in messages)
    blob = _offline_blob(wandb_dir)
    for key in (
        b"train/loss",
        b"val/loss",
        b"train/lr",
        b"train/grad_norm",
        b"perf/tokens_per_s",
        b"train/eval_loss",
    ):
        assert key in blob, key
    last = read_metrics(Path(cfg.out))[-1]
    assert json.dumps(last["val_loss"]).encode() in blob  # the logged value itself
    assert b"finetune-test-project" in blob and b"tag-xyz-7" in blob
    assert b"weight_decay" in blob and b"0.0731" in blob  # the whole config, values included


@pytest.mark.slow
def test_wandb_logs_the_samples_as_a_table(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb_dir = _wandb_offline_env(tmp_path, monkeypatch)
    cfg = tiny_config(
        tmp_path,
        max_iters=4,
        eval_interval=4,
        sample_interval=2,
        sample_tokens=8,
        sample_prompt="ROMEO-PROMPT-9:",
        tokenizer_dir=str(tokenizer_dir),
        wandb=True,
    )
    assert start(cfg, log=_quiet).status == "completed"
    blob = _offline_blob(wandb_dir)
    assert b"samples" in blob and b"table-file" in blob
    tables = list(
        (wandb_dir / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json")
    )
    assert len(tables) == 2  # logged whole at steps 2 and 4
    final = max(tables, key=lambda p: int(p.name.split("_")[1]))
    table = json.loads(final.read_text())
    assert table["columns"] == ["step", "prompt", "sample"]
    assert [row[0] for row in table["data"]] == [2, 4]
    assert all(row[1] == "ROMEO-PROMPT-9:" and row[2] for row in table["data"])


def test_wandb_failure_never_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finetune.sinks as lw

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("W&B is down")

    monkeypatch.setitem(sys.modules, "wandb", Broken())
    messages: list[str] = []
    cfg = char_config(tmp_path, max_iters=2, wandb=True, wandb_mode="offline")
    assert start(cfg, log=messages.append).status == "completed"
    assert any("continuing without W&B" in m for m in messages)
    assert lw.wandb_mode("auto", enabled=False) == "disabled"
    assert lw.wandb_mode("disabled", enabled=True) == "disabled"
    assert lw.safe_text("ok\x1b[31mred\u202eevil\r\nline") == "ok\ufffd[31mredevil\nline"


def test_wandb_failing_while_logging_never_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B starts fine, then its log() raises mid-run: one warning, and every step still runs."""
    import types

    calls: list[str] = []

    class Run:
        id = "fake-run"
        dir = str(tmp_path / "wandb" / "files")
        summary: dict = {}

        def log(self, metrics, step=None):
            calls.append("log")
            if step == 2:
                raise ConnectionError("W&B went away")

        def finish(self, exit_code=0):
            calls.append("finish")

    fake = types.SimpleNamespace(init=lambda **kw: Run(), Settings=lambda **kw: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    messages: list[str] = []
    cfg = char_config(tmp_path, max_iters=5, wandb=True, wandb_mode="online")
    result = start(cfg, log=messages.append)
    assert result.status == "completed" and result.step == 5
    assert [r["step"] for r in read_metrics(Path(cfg.out))] == [1, 2, 3, 4, 5]
    failures = [m for m in messages if "logging failed" in m]
    assert len(failures) == 1 and "continuing without W&B" in failures[0]
    assert calls.count("log") == 2  # steps 1 and 2; nothing is sent after the failure


# ------------------------------------------------------------------ signals
SIGNAL_RUN = (
    "--data {text} --tokenizer char --data-dir {run}-data --out {run} --init scratch --n-layer 2 "
    "--n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --grad-accum 2 --dropout 0.1 "
    "--lr 3e-3 --warmup-iters 0 --lr-schedule constant --save-interval 1000000 "
    "--eval-interval 1000000 --sample-interval 0 --force-cpu --no-progress --seed 0"
)
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, int, str]]:
    """Two real `finetune pretrain` processes at once (a character model: the vocabulary is
    not the point), each sent its signal mid-run: the text, run folder, exit code and output."""
    root = tmp_path_factory.mktemp("signals")
    text = make_char_text(root / "text.txt")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    procs = {}
    try:
        for name in SIGNALS:
            run = root / name
            words = argv(SIGNAL_RUN + " --max-iters 100000", text=text, run=run)
            command = [sys.executable, "-m", "finetune", "pretrain", *words]
            out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
            procs[name] = subprocess.Popen(command, cwd=root, env=env, **out)
        deadline = time.monotonic() + 90
        for name, proc in procs.items():
            metrics = root / name / "metrics.jsonl"
            while time.monotonic() < deadline and proc.poll() is None:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, proc.communicate()[0]
            proc.send_signal(SIGNALS[name])
        done = {name: proc.communicate(timeout=60)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return {name: (text, root / name, procs[name].returncode, done[name]) for name in SIGNALS}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_a_signal_leaves_a_checkpoint_that_resumes_exactly(
    signalled: dict, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C or SIGTERM (what schedulers send) to a real process mid-run, then the
    `finetune resume` command: every loss equals that of a run that was never stopped. A
    constant learning rate keeps the schedule independent of --max-iters, which the resume
    changes."""
    text, run, returncode, out = signalled[name]
    assert returncode == 128 + SIGNALS[name], out
    assert name in out
    assert "finetune resume" in out and "Traceback" not in out
    state = read_trainer_state(run / "last")
    steps = len(read_metrics(run))
    assert state["step"] == steps >= 3

    total = steps + 3
    capsys.readouterr()
    assert cli.main(["resume", str(run), "--max-iters", str(total)]) == 0
    assert f"at step {steps} of {total}" in capsys.readouterr().out

    whole = run.parent / f"{name}-whole"
    assert (
        cli.main(["pretrain", *argv(SIGNAL_RUN, text=text, run=whole), "--max-iters", str(total)])
        == 0
    )
    split, unbroken = read_metrics(run), read_metrics(whole)
    assert [r["step"] for r in split] == list(range(1, total + 1))
    for a, b in zip(unbroken, split, strict=True):
        for key in ("train_loss", "grad_norm", "val_loss", "eval_train_loss"):
            assert a.get(key) == b.get(key), (a["step"], key)


# ------------------------------------------------------------------ real text
def test_finetune_on_real_text_with_samples(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not VERDICT_TXT.exists():
        pytest.skip(f"{VERDICT_TXT} not found (../shared/data absent)")
    monkeypatch.chdir(tmp_path)
    command = argv(
        "pretrain --data {text} --init scratch --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 "
        "--batch-size 4 --max-iters 20 --lr 3e-3 --warmup-iters 2 --eval-interval 10 "
        "--sample-interval 10 --sample-tokens 8 --sample-prompt {prompt} --force-cpu "
        "--no-progress --tokenizer-dir {tok} --out runs/verdict",
        text=VERDICT_TXT,
        prompt="I had",
        tok=tokenizer_dir,
    )
    assert cli.main(command) == 0
    [prepared] = (tmp_path / "data").glob("the-verdict-*")  # name + hash of the source path
    meta = json.loads((prepared / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"]) == (4612, 534)
    evals = [r for r in read_metrics(tmp_path / "runs" / "verdict") if "val_loss" in r]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    samples = (tmp_path / "runs" / "verdict" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in samples] == [10, 20]


def test_shakespeare_command_end_to_end(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not SHAKESPEARE_TXT.exists():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE_TXT} (../shared/data absent)")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "shakespeare").mkdir(parents=True)
    shutil.copy(SHAKESPEARE_TXT, tmp_path / "data" / "shakespeare" / "input.txt")  # no download
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer_dir))
    command = argv(
        "shakespeare --init scratch --n-layer 1 --n-head 2 --n-embd 16 --block-size 16 "
        "--batch-size 2 --max-iters 3 --eval-interval 3 --sample-interval 3 --sample-tokens 4 "
        "--force-cpu --no-progress"
    )
    assert cli.main(command) == 0
    run = tmp_path / "runs" / "shakespeare"
    assert (run / "best" / "model.safetensors").exists()
    meta = json.loads((tmp_path / "data" / "shakespeare" / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    assert json.loads((run / "samples.jsonl").read_text())["prompt"] == "ROMEO:"
