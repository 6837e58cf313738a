"""gpt2load's commands as a new user meets them (issue 15): long work shows progress on stderr,
every option says what it does and its default, one name for the model argument, one set of
--dtype values, errors that name the flag, tensor counts that agree between info and verify,
and a verify failure that says which download repairs it."""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
from pathlib import Path

import pytest
from safetensors import safe_open

from gpt2load import releases
from gpt2load.cli import build_parser, main
from gpt2load.config import DTYPE_ALIASES
from gpt2load.downloads import download
from gpt2load.formats import convert
from gpt2load.formats.plan import parameter_shapes
from gpt2load.native import save_native
from tests.conftest import TINY_CONFIGS, random_model
from tests.http_server import FAKE_TOKENIZER, FileServer, fake_tokenizer_facts, isolate_downloads
from tests.test_cli_generate import make_checkpoint

# Takes only a model name or repo id (never a path): its argument is MODEL.
NAME_ONLY = {"download"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_compare_says_on_stderr_what_it_is_doing(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_checkpoint(tmp_path / "a", tokenizer_dir, seed=1)
    b = make_checkpoint(tmp_path / "b", tokenizer_dir, seed=2)
    text = tmp_path / "eval.txt"
    text.write_text("To be, or not to be, that is the question. " * 10)
    argv = ["compare", str(a), str(b), "--prompt", "Hi", "--prompt", "Oh", "--max-new-tokens",
            "5", "--eval-text", str(text), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    for i, model in enumerate((a, b), 1):
        tag = f"[{i}/2] "
        assert f"{tag}loading {model} on cpu ..." in err
        assert f"{tag}loaded {model}: 1,635,744 parameters, float32 on cpu" in err
        assert re.search(rf"{re.escape(f'{tag}{model}')}: generating: 100%\|.*?\| 10/10", err)
        assert f"{tag}{model}: scoring: 100%" in err  # of the text's tokens
    assert err.index("[1/2] loading") < err.index("[1/2] loaded") < err.index("[2/2] loading")


def test_generate_and_info_say_what_they_load_when_that_takes_a_while(
    tmp_path: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import time

    import gpt2load.formats
    from gpt2load.commands import _common

    folder = make_checkpoint(tmp_path / "m", tokenizer_dir)
    generate = ["generate", str(folder), "--prompt", "Hi", "--max-new-tokens", "3"]
    for name in ("load_checkpoint", "inspect_checkpoint"):
        real = getattr(gpt2load.formats, name)

        def slow(*args, real=real, **kwargs):  # noqa: ANN002, ANN003, ANN202
            time.sleep(0.5)  # a model of gigabytes, or an old-style pickle read whole
            return real(*args, **kwargs)

        monkeypatch.setattr(gpt2load.formats, name, slow)
    monkeypatch.setattr(_common, "QUIET_FOR", 0.1)
    assert main(generate) == 0
    out, err = capsys.readouterr()
    assert err == f"loading {folder} ...\n" and out.startswith("Hi")  # the text alone on stdout
    assert main(["info", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert err == f"reading {folder} ...\n" and out.startswith(f"path        {folder}")


def test_every_option_says_what_it_does_and_its_default() -> None:
    missing = []
    for name, parser in _commands().items():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if "-h" in action.option_strings:
                continue
            words = action.help or ""
            if not words or not ("default" in words or action.required):
                missing.append(f"{name} {action.option_strings[0]}: {words!r}")
    assert missing == []


def test_the_model_argument_has_one_name(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands()
    taking_a_model = sorted(set(commands) - NAME_ONLY - {"list"})
    assert taking_a_model == ["chat", "compare", "convert", "generate", "info", "verify"]
    for name in taking_a_model:
        first = next(a for a in commands[name]._actions if not a.option_strings)
        assert first.metavar == "MODEL_OR_PATH", name
        assert "MODEL_OR_PATH" in commands[name].format_usage()
        assert first.help and "model name" in first.help, name


def test_dtype_takes_the_same_values_in_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    canonical = tuple(sorted(set(DTYPE_ALIASES.values())))
    assert {"float32", "bfloat16", "float16"} <= set(canonical)
    with_dtype = {}
    for name, parser in _commands().items():
        for action in parser._actions:
            if "--dtype" in action.option_strings:
                with_dtype[name] = action
    assert sorted(with_dtype) == ["chat", "compare", "convert", "generate"]
    for name, action in with_dtype.items():
        assert tuple(action.choices) == canonical, name
        for spelling in ("bf16", "FP16", "half", "float"):
            assert spelling.lower() in action.help, (name, spelling)
    parser = build_parser()
    for name in with_dtype:
        extra = ["out", "--to", "hf"] if name == "convert" else []
        for spelling, meant in (*DTYPE_ALIASES.items(), ("BF16", "bfloat16")):
            args = parser.parse_args([name, "m", *extra, "--dtype", spelling])
            assert args.dtype == meant, (name, spelling)
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "m", "out", "--to", "hf", "--dtype", "int8"])
    assert "argument --dtype: invalid choice: 'int8'" in capsys.readouterr().err


def test_an_error_about_a_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for command, bad, expected in (
        ("generate", ["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        ("generate", ["--max-new-tokens", "-3"], "--max-new-tokens must be >= 0, got -3"),
        ("compare", ["--temperature", "-1"], "--temperature must be >= 0"),
        ("compare", ["--top-k", "0"], "--top-k must be >= 1, got 0"),
        (
            "generate",
            ["--seed", str(2**63 - 1), "--num-samples", "3"],
            f"--seed must be in [0, 2**63), got {2**63 + 1} (sample 3 uses --seed + 2)",
        ),
    ):
        assert main([command, "no/such/model", "--prompt", "x", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"gpt2load {command}: error: {expected}" or (
            err.startswith(f"gpt2load {command}: error: {expected}") and "\n" not in err
        ), err


def test_info_and_verify_count_the_tensors_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's folder: 5 layers in Hugging Face's layout, 64 tensors by one count, 85 by
    the other; both commands now say which is which."""
    config = TINY_CONFIGS["odd"]
    assert config.n_layer == 5
    convert(save_native(random_model(config), tmp_path / "native"), tmp_path / "hf", "hf")
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        names = list(f.keys())  # noqa: SIM118 (safe_open has no __iter__)
    stored = [k for k in names if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    in_model = len(parameter_shapes(config))
    assert (len(stored), in_model) == (64, 85)
    assert in_model == len(stored) + 2 * (2 * config.n_layer) + 1  # c_attn weight and bias, head
    assert main(["info", str(tmp_path / "hf")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tensors"))
    assert line == (
        "tensors     64 used from the files, 85 in the model (10 fused query/key/value tensors "
        "are split in three; the output head shares the token embedding)"
    )
    assert main(["verify", str(tmp_path / "hf"), "--no-known-answer"]) == 0
    assert "ok    tensors: 85 tensors in the model," in capsys.readouterr().out
    assert main(["info", str(tmp_path / "native")]) == 0  # split already: only the head differs
    out = capsys.readouterr().out
    assert "84 used from the files, 85 in the model (the output head shares" in out


def test_a_verify_failure_gives_the_download_that_repairs_it(
    tmp_path: Path,
    server: FileServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    isolate_downloads(monkeypatch, tmp_path)
    fake_tokenizer_facts(monkeypatch)
    convert(
        save_native(random_model(TINY_CONFIGS["tiny"]), tmp_path / "src"), tmp_path / "hf", "hf"
    )
    files = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()} | FAKE_TOKENIZER
    built_in = releases.release("gpt2-medium", "hf")  # whose weights have no published sha256
    for spec in built_in.files:
        server.add_url(spec.url, files[spec.path])
    folder = download("gpt2-medium", source="hf", mirror=server.url, progress=False)
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # still loads: only the hash knows

    assert main(["verify", str(folder), "--no-known-answer"]) == 1
    out, err = capsys.readouterr()
    assert "hashing model.safetensors" in err  # the bar of bytes
    advice = out.splitlines()[-1]
    command = f"gpt2load download gpt2-medium --source hf --dir {folder}"
    assert advice == f"to repair, download model.safetensors again: {command}"

    monkeypatch.setenv("GPT2LOAD_MIRROR", server.url)  # where the user's hosts are reachable
    assert main(shlex.split(command)[1:]) == 0
    assert hashlib.sha256(weights.read_bytes()).digest() == hashlib.sha256(good).digest()
    assert main(["verify", str(folder), "--no-known-answer"]) == 0
    assert "to repair" not in capsys.readouterr().out
