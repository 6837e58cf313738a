"""``gpt2load generate`` from a native checkpoint: its command line in this process (faster),
and once in a real subprocess (exit code, nothing on stdout, one line on stderr)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2load.cli import main
from gpt2load.formats import load_checkpoint
from gpt2load.generation import generate
from gpt2load.native import save_native
from tests.conftest import REPO_ROOT, TINY_CONFIGS, random_model


def make_checkpoint(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A tiny native checkpoint with the tokenizer files beside it, as a download would have."""
    model = random_model(TINY_CONFIGS["tiny"], seed=seed)
    save_native(model, folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def make_padded_checkpoint(folder: Path, tokenizer_dir: Path) -> Path:
    """A nanoGPT-style model whose vocabulary is padded to 50304, where the padding ids
    (which the tokenizer cannot decode) are the likeliest next token after every input."""
    config = TINY_CONFIGS["tiny"].replace(vocab_size=50304)
    model = random_model(config, seed=3)
    with torch.no_grad():
        model.final_norm.scale.zero_()  # every position's hidden state becomes `shift`
        model.final_norm.shift.fill_(1.0)
        model.tok_emb.weight[50257:] = 1.0  # tied head: logit 32 for the padding, ~0 for the rest
    save_native(model, folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt2load", *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_main(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """``run_cli``'s answer from ``gpt2load.cli.main`` in this process."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_generate_prints_the_greedy_continuation(
    tmp_path: Path, tokenizer_dir, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    result = run_main(
        capsys,
        "generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "12",
        "--temperature", "0", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = random_model(TINY_CONFIGS["tiny"], seed=0)
    ids = tokenizer.encode("ROMEO:")
    expected = generate(model, torch.tensor([ids]), 12, temperature=0)[0].tolist()
    assert result.stdout == tokenizer.decode(expected) + "\n"


def test_num_samples_and_seed_are_reproducible(
    tmp_path: Path, tokenizer_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    args = ("generate", str(folder), "--prompt", "Hi", "--max-new-tokens", "8", "--seed", "3",
            "--num-samples", "2", "--top-k", "20", "--device", "cpu")  # fmt: skip
    first, second = run_main(capsys, *args), run_main(capsys, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.count("--- sample") == 2


def test_missing_model_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(capsys, "generate", "no/such/folder", "--prompt", "x")
    assert result.returncode == 2
    assert "neither an existing file or folder nor a GPT-2 model name" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_sampling_arguments_exit_2_before_anything_is_printed(
    tmp_path: Path, tokenizer_dir, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    for i, bad in enumerate(
        (
            ("--temperature", "-1"),
            ("--top-k", "0"),
            ("--top-p", "1.5"),
            ("--max-new-tokens", "-3"),
            ("--seed", str(2**63)),
            ("--seed", str(2**63 - 1), "--num-samples", "2"),  # the second sample's seed is 2**63
        )
    ):
        argv = ("generate", str(folder), "--prompt", "PROMPT-TEXT", "--device", "cpu", *bad)
        if i == 0:  # one in a process of its own; the others in this one, which is faster
            result = run_cli(*argv)
            code, out, err = result.returncode, result.stdout, result.stderr.strip()
        else:
            code = main(list(argv))
            out, err = capsys.readouterr()
            err = err.strip()
        assert code == 2, (bad, err)
        assert out == "", bad  # not even the prompt
        assert err.startswith("gpt2load generate: error:") and "\n" not in err, err


def test_padded_vocabulary_never_emits_ids_the_tokenizer_lacks(
    tmp_path: Path, tokenizer_dir, tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_padded_checkpoint(tmp_path / "padded", tokenizer_dir)
    model = load_checkpoint(folder)
    ids = torch.tensor([tokenizer.encode("ROMEO:")])
    assert int(generate(model, ids, 3, temperature=0)[0, -1]) >= 50257  # unmasked: padding wins
    expected = generate(model, ids, 8, temperature=0, vocab_limit=tokenizer.n_vocab)[0].tolist()
    assert max(expected) < tokenizer.n_vocab
    result = run_main(capsys, "generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens",
                      "8", "--temperature", "0", "--device", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == tokenizer.decode(expected) + "\n"
    sampled = run_main(capsys, "generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens",
                       "8", "--seed", "1", "--device", "cpu")  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    chat = run_main(capsys, "chat", str(folder), "--device", "cpu", "--temperature", "0",
                    "--max-new-tokens", "8", stdin="ROMEO:\n/temp 1\nROMEO:\n")  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.splitlines()[0] == tokenizer.decode(expected)
    assert "error" not in chat.stdout


def test_generate_streams_each_token_as_it_is_produced(
    tmp_path: Path, tokenizer_dir, monkeypatch
) -> None:
    """Text reaches stdout (written and flushed) between one decoding step and the next, not
    at the end: the order of model calls, writes and flushes shows it."""
    from gpt2load.model import GPT

    folder = make_checkpoint(tmp_path / "ckpt", tokenizer_dir)
    events: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            events.append("write" if text else "empty")
            return len(text)

        def flush(self) -> None:
            events.append("flush")

    real_forward = GPT.forward

    def counted_forward(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        events.append("step")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", counted_forward)
    monkeypatch.setattr(sys, "stdout", Recorder())
    argv = ["generate", str(folder), "--prompt", "ROMEO:", "--max-new-tokens", "10"]
    assert main([*argv, "--temperature", "0", "--device", "cpu"]) == 0
    steps = [i for i, e in enumerate(events) if e == "step"]
    assert len(steps) >= 9  # one model call per new token (the last needs none)
    # Between consecutive steps, the token just chosen was flushed out.
    flushed_between = sum(
        "flush" in events[a:b] for a, b in zip(steps[:-1], steps[1:], strict=True)
    )
    assert flushed_between == len(steps) - 1
    assert events.index("write") < steps[0]  # the prompt first, before any model call


def test_a_run_folder_means_its_best_checkpoint_else_its_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    save_native(random_model(TINY_CONFIGS["tiny"]), run / "last")
    assert main(["info", str(run)]) == 0
    out, err = capsys.readouterr()
    assert f"path        {run / 'last'}" in out
    assert f"{run} has no best/ checkpoint; using {run / 'last'}" in err
    save_native(random_model(TINY_CONFIGS["tiny"]), run / "best")
    assert main(["info", str(run)]) == 0
    out, err = capsys.readouterr()
    assert f"path        {run / 'best'}" in out and err == ""
