"""finetune's configuration, command line and device checks (no training here)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from finetune import cli
from finetune.config import (
    FIELDS,
    FIXED_ON_RESUME,
    SUBCOMMAND_DEFAULTS,
    ConfigError,
    TrainConfig,
    coerce_value,
)
from finetune.device import (
    GIB,
    DeviceError,
    DeviceInfo,
    check_memory,
    estimate_memory,
    select_device,
)
from finetune.flags import GROUP_TITLES, add_config_flags, build_config, load_toml, to_toml
from gpt2load.config import preset

REPO_ROOT = Path(__file__).resolve().parent.parent


def words(text: str) -> list[str]:
    return text.split()


ISSUE_FLAGS = [
    f"--{name}"
    for name in words(
        "out init data max-iters batch-size block-size grad-accum lr min-lr warmup-iters "
        "weight-decay grad-clip eval-interval eval-batches sample-interval sample-prompt "
        "save-interval patience seed device force-cpu dtype compile wandb wandb-project "
        "wandb-mode n-layer n-head n-embd"
    )
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_config_flags(parser)
    return parser


def test_every_field_is_a_flag_with_its_help_text() -> None:
    parser = _parser()
    by_dest = {a.dest: a for a in parser._actions}
    for name, f in FIELDS.items():
        action = by_dest[name]
        assert "--" + name.replace("_", "-") in action.option_strings
        assert f.metadata["help"] in action.help
    options = {s for a in parser._actions for s in a.option_strings}
    assert set(ISSUE_FLAGS) <= options


@pytest.mark.parametrize("command", ["shakespeare", "pretrain"])
def test_help_states_each_default_once(command: str) -> None:
    """A command's own default (shakespeare's dropout 0.1) replaces the field's general one."""
    sub = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[command]
    helps = {a.dest: a.help for a in sub._actions if a.help and a.help != argparse.SUPPRESS}
    for dest, text in helps.items():
        assert text.count("(default") <= 1, (command, dest, text)
    if command == "shakespeare":
        assert helps["dropout"].endswith("(default: 0.1)")


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('max_iters = 7\nlr = 0.01\ndata = ["a.txt"]\nwandb-tags = ["x", "y"]\n')
    flags = vars(_parser().parse_args(["--lr", "0.5", "--top-k", "none"]))
    cfg = build_config("shakespeare", flags, toml)
    assert cfg.max_iters == 7  # from the file
    assert cfg.lr == 0.5  # the flag wins over the file
    assert cfg.top_k is None
    assert cfg.data == ["a.txt"] and cfg.wandb_tags == ["x", "y"]
    assert cfg.sample_prompt == "ROMEO:"  # shakespeare's own default
    assert cfg.batch_size == TrainConfig().batch_size  # field default


def test_unknown_and_mistyped_settings_are_errors(tmp_path: Path) -> None:
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("max_iter = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_iter'.*max_iters"):
        load_toml(bad_key)
    for text, match in (
        ('max_iters = "5"\n', "max_iters must be an integer"),
        ("lr = true\n", "lr must be a number"),
        ("compile = 1\n", "compile must be true or false"),
        ('dtype = "float8"\n', "dtype must be one of"),
        ("batch_size = 0\n", "batch_size must be >= 1"),
        ("max_iters = \n", "not valid TOML"),
    ):
        path = tmp_path / "b.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_toml(path)
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-iters", "ten"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-iter", "10"])  # no abbreviations: a typo is not a guess


def test_cli_rejects_unknown_flags_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["pretrain", "--data", "x", "--no-such-flag"],
        ["pretrain", "--data", "x", "--batch-size", "2.5"],
        ["shakespeare", "--dtype", "float8"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    capsys.readouterr()
    assert cli.main(["pretrain", "--data", "x", "--batch-size", "0", "--force-cpu"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--init", "scratch", "--data", "t.txt", "--out="],
        ["pretrain", "--init", "scratch", "--data", "t.txt", "--data-dir", " "],
        ["pretrain", "--init", "", "--data", "t.txt"],
        ["pretrain", "--init", "scratch", "--data", "t.txt", ""],
        ["prepare", "t.txt", "--data-dir="],
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``--out "$RUN"`` with RUN unset would put a whole run in the working folder: an empty
    path (a flag or a TOML value) is one line naming it, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("some text to train on " * 40)
    if argv[-1] == "":  # the same, from a --config file
        (tmp_path / "run.toml").write_text('out = ""\n')
        argv = [*argv[:-1], "--config", "run.toml"]
    assert cli.main([*argv, "--force-cpu"] if argv[0] != "prepare" else argv) == 2
    err = capsys.readouterr().err
    assert "is empty (an unset shell variable?)" in err and len(err.splitlines()) == 1, err
    written = {p.name for p in tmp_path.iterdir()} - {"t.txt", "run.toml"}
    assert not written, written


def test_config_toml_round_trips() -> None:
    cfg = TrainConfig(
        data=["a b.txt", 'q"uote'], top_k=None, sample_prompt="line\n\ttab \x01", lr=3e-4
    )
    again = TrainConfig.from_dict(tomllib.loads(to_toml(cfg)))
    assert again == cfg


def test_resolved_fills_init_dependent_defaults() -> None:
    scratch = TrainConfig(init="scratch", data=["x"]).resolved()
    assert (scratch.n_layer, scratch.n_head, scratch.n_embd) == (6, 6, 384)
    assert scratch.lr == 1e-3 and scratch.min_lr == pytest.approx(1e-4)
    tuned = TrainConfig(init="gpt2", data=["x"], lr=2e-5).resolved()
    assert tuned.n_layer is None and tuned.min_lr == pytest.approx(2e-6)
    with pytest.raises(ConfigError, match="multiple of --n-head"):
        TrainConfig(init="scratch", data=["x"], n_head=3, n_embd=32).validate()
    with pytest.raises(ConfigError, match="no training data"):
        TrainConfig().validate()


def test_resume_refuses_to_change_model_data_or_batches(tmp_path: Path) -> None:
    from finetune.plan import check_fixed as _check_fixed

    recorded = TrainConfig(data=["x"], init="scratch", n_layer=2, seed=1, out=str(tmp_path))
    # The run's own values (its config.toml given back with --config) are fine.
    _check_fixed(recorded, {"n_layer": 2, "seed": 1, "data": ["x"], "out": str(tmp_path)}, tmp_path)
    with pytest.raises(ConfigError, match=r"--n-layer \(the run has 2\) cannot change when"):
        _check_fixed(recorded, {"n_layer": 4}, tmp_path)
    with pytest.raises(ConfigError, match="--seed .*which batches the run draws"):
        _check_fixed(recorded, {"seed": 2, "lr": 0.1}, tmp_path)
    for key, value in (("batch_size", 3), ("block_size", 16), ("eval_batches", 2)):
        with pytest.raises(ConfigError, match="cannot change when resuming"):
            _check_fixed(recorded, {key: value}, tmp_path)
    with pytest.raises(ConfigError, match="--out"):
        _check_fixed(recorded, {"out": str(tmp_path / "elsewhere")}, tmp_path)


def test_resume_accepts_fixed_flags_to_explain_them_but_hides_them() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["resume", "run", "--n-layer", "4", "--data", "x", "--seed", "2"])
    assert (args.n_layer, args.data, args.seed) == (4, ["x"], 2)  # refused later, with reasons
    resume = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "resume"
    ]
    helps = {a.dest: a.help for a in resume._actions}
    assert all(helps[name] == argparse.SUPPRESS for name in FIXED_ON_RESUME)
    assert helps["max_iters"] != argparse.SUPPRESS and "config" in helps
    # No "(default: 2000)": what a resumed run keeps is its own value, not the field default.
    assert helps["max_iters"] == FIELDS["max_iters"].metadata["help"]


def test_prepare_flags_come_from_the_config_fields() -> None:
    parser = cli.build_parser()
    prepare = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "prepare"
    ]
    by_dest = {a.dest: a for a in prepare._actions}
    for name in ("data_dir", "val_fraction", "tokenizer_dir"):
        assert FIELDS[name].metadata["help"] in by_dest[name].help
        assert "--" + name.replace("_", "-") in by_dest[name].option_strings
    args = parser.parse_args(["prepare", "a.txt", "--val-fraction", "0.2"])
    assert args.val_fraction == 0.2 and not hasattr(args, "data_dir")  # the field default later
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare", "a.txt", "--val-fraction", "lots"])


# ------------------------------------------------------------------ GPU check
def test_no_gpu_exits_2_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "t.txt"
    text.write_text("hello " * 100)
    code = cli.main(["pretrain", "--data", str(text), "--out", "run", "--init", "scratch"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no CUDA GPU" in err
    assert "--force-cpu" in err and "--device mps" in err and "fix CUDA" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_device_selection_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    info = select_device("cuda", force_cpu=True)
    assert info.type == "cpu" and "bf16" in info.describe()
    assert select_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="unknown --device"):
        select_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="--device mps"):
        select_device("mps")


def test_gpu_check_exit_code_in_a_real_process(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so the no-GPU path cannot be shown in a subprocess")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune",
            *words(f"shakespeare --out {tmp_path / 'r'}"),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--force-cpu" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_memory_estimate_refuses_what_cannot_fit() -> None:
    config = preset("gpt2")
    small_gpu = DeviceInfo(torch.device("cuda"), "Test GPU 8GB", 8 * GIB, True, None)
    est = estimate_memory(config, 32, 1024, torch.bfloat16)
    assert est.weights_and_optimizer == 16 * 124_439_808  # tied head counted once
    with pytest.raises(DeviceError, match=r"lower --batch-size \(about \d+ fits\)"):
        check_memory(est, small_gpu, 32)
    check_memory(estimate_memory(config, 2, 1024, torch.bfloat16), small_gpu, 2)
    with pytest.raises(DeviceError, match="--block-size"):
        check_memory(estimate_memory(config, 1, 1024 * 64, torch.bfloat16), small_gpu, 1)
    with pytest.raises(DeviceError, match="smaller --init"):
        check_memory(estimate_memory(preset("gpt2-xl"), 1, 128, torch.bfloat16), small_gpu, 1)


def test_script_is_the_shakespeare_command() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "finetune_shakespeare.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "finetune shakespeare" in proc.stdout and "--sample-prompt" in proc.stdout


def test_config_defaults_are_consistent() -> None:
    """Every default passes its own field's checks (type, choices, minimum), every field has
    help and a known group, and the tables that name fields name real ones."""
    cfg = TrainConfig()
    assert cfg.eval_batches == 5
    assert cfg.device == "cuda"
    for f in dataclasses.fields(TrainConfig):
        default = getattr(cfg, f.name)
        assert coerce_value(f.name, default, source="default") == default, f.name
        assert f.metadata["help"].strip(), f.name
        assert f.metadata["group"] in GROUP_TITLES, f.name
    for command, defaults in SUBCOMMAND_DEFAULTS.items():
        for key, value in defaults.items():
            assert coerce_value(key, value, source=command) == value, (command, key)
    assert set(FIXED_ON_RESUME) <= FIELDS.keys() and len(set(FIXED_ON_RESUME)) == len(
        FIXED_ON_RESUME
    )
    assert set(cli.PREPARE_FIELDS) <= FIELDS.keys()
    shakespeare = build_config("shakespeare", {})
    shakespeare.replace(data=["x"]).validate()  # the command's defaults make a valid run
    assert TrainConfig.from_dict(tomllib.loads(to_toml(shakespeare))) == shakespeare


def test_dtype_takes_the_spellings_gpt2load_takes(tmp_path: Path) -> None:
    for spelling, canonical in (("bf16", "bfloat16"), ("FP16", "float16"), ("fp32", "float32")):
        flags = vars(_parser().parse_args(["--dtype", spelling]))
        assert build_config("pretrain", flags).dtype == canonical
    toml = tmp_path / "run.toml"
    toml.write_text('dtype = "bf16"\n')
    assert build_config("pretrain", {}, toml).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--dtype", "int8"])


def test_a_mistyped_flag_is_reported_by_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    from gpt2load.cli import main as gpt2load_main

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", "--max-iter", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "finetune pretrain: error: unrecognized arguments: --max-iter 3" in err
    assert err.startswith("usage: finetune pretrain")
    with pytest.raises(SystemExit):
        gpt2load_main(["generate", "gpt2", "--promt", "x"])
    assert "gpt2load generate: error: unrecognized arguments: --promt x" in capsys.readouterr().err
