"""nanoGPT's character-level models: ``meta.pkl`` read without running code, and generate/chat."""

from __future__ import annotations

import io
import os
import pickle
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2load.char_tokenizer import CharTokenizer, CharVocabularyError, read_meta_pkl
from gpt2load.config import GPTConfig
from gpt2load.console import Console, Settings
from gpt2load.tokenizer import (
    StreamDecoder,
    check_tokenizer_fits,
    get_tokenizer,
    prompt_ids,
)
from tests.checkpoint_factory import random_hf_state_dict, write_nanogpt_ckpt
from tests.conftest import REPO_ROOT

# The 65 characters of Tiny Shakespeare, in the order nanoGPT's prepare.py lists them.
SHAKESPEARE_CHARS = sorted("\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase)
CHAR_CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, context_length=64, vocab_size=65)


def write_meta(folder: Path, chars: list[str]) -> Path:
    """``meta.pkl`` exactly as nanoGPT's ``data/shakespeare_char/prepare.py`` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return folder / "meta.pkl"


def make_char_checkpoint(folder: Path, seed: int = 0, meta: bool = True) -> Path:
    """A nanoGPT shakespeare_char run: ``ckpt.pt`` (bias=True) with ``meta.pkl`` beside it."""
    write_nanogpt_ckpt(folder / "ckpt.pt", random_hf_state_dict(CHAR_CONFIG, seed), CHAR_CONFIG)
    if meta:
        write_meta(folder, SHAKESPEARE_CHARS)
    return folder


def test_shakespeare_has_65_characters() -> None:
    assert len(SHAKESPEARE_CHARS) == 65 and SHAKESPEARE_CHARS[0] == "\n"


def test_round_trip_and_the_tiktoken_interface(tmp_path: Path) -> None:
    write_meta(tmp_path, SHAKESPEARE_CHARS)
    tok = get_tokenizer(tmp_path / "ckpt.pt")  # beside a checkpoint file, or in its folder
    assert isinstance(tok, CharTokenizer) and tok.n_vocab == 65 and tok.eot_token is None
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?"
    ids = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [SHAKESPEARE_CHARS.index(c) for c in text]
    assert tok.decode(ids) == text and tok.encode_ordinary(text) == ids
    decoder = StreamDecoder(tok)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == text
    assert prompt_ids(tok, "") == [0]  # an empty prompt starts at a newline, as sample.py does
    # Writing it back gives nanoGPT's dict, which reads the same.
    again = CharTokenizer.from_meta_pkl(tok.save(tmp_path / "copy"))
    assert again.itos == tok.itos and again.name == tok.name
    with open(tmp_path / "copy" / "meta.pkl", "rb") as f:
        assert pickle.load(f)["stoi"] == {c: i for i, c in enumerate(SHAKESPEARE_CHARS)}


def test_meta_pkl_wins_over_gpt2_files_beside_it(tmp_path: Path, tokenizer_dir: Path) -> None:
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((tokenizer_dir / name).read_bytes())
    assert get_tokenizer(tmp_path).n_vocab == 50257
    write_meta(tmp_path, SHAKESPEARE_CHARS)
    assert isinstance(get_tokenizer(tmp_path), CharTokenizer)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_meta_pkl_that_would_run_code_is_refused_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    payload = _RunsCode()
    payload.marker = marker
    evil = tmp_path / "meta.pkl"
    evil.write_bytes(pickle.dumps({"vocab_size": 1, "itos": {0: payload}, "stoi": {}}))
    for read in (read_meta_pkl, CharTokenizer.from_meta_pkl, get_tokenizer):
        with pytest.raises(CharVocabularyError) as err:
            read(evil)
        message = str(err.value)
        assert "\n" not in message and str(evil) in message and "system" in message
    assert not marker.exists()
    # The same through the command line: a one-line error and still nothing run.
    write_nanogpt_ckpt(tmp_path / "ckpt.pt", random_hf_state_dict(CHAR_CONFIG), CHAR_CONFIG)
    assert cli_generate(tmp_path / "ckpt.pt", "ROMEO:") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meta.pkl" in err and not marker.exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ([1, 2, 3], "a list"),
        (1.5, "a float"),
        ("abc", "a str, not"),
        ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}, "x": 0.5}, "float"),
        ({"vocab_size": 2, "itos": [("a",)], "stoi": {}}, "a list"),
        ({"vocab_size": True, "itos": {0: "a"}, "stoi": {"a": 0}}, "a bool"),
        ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 1, "b": 0}}, "not inverse"),
        ({"vocab_size": 2, "itos": {0: "a", 2: "b"}, "stoi": {"a": 0, "b": 2}}, "not 0..1"),
        ({"vocab_size": 3, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}}, "vocab_size is 3"),
        ({"vocab_size": 2, "itos": {0: "a", 1: "bc"}, "stoi": {"a": 0, "bc": 1}}, "one character"),
        ({"itos": {0: "a"}, "stoi": {"a": 0}}, "no vocab_size"),
    ],
)
def test_anything_but_a_plain_vocabulary_is_refused(tmp_path: Path, content, why: str) -> None:
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(CharVocabularyError) as err:
        CharTokenizer.from_meta_pkl(path)
    message = str(err.value)
    assert why in message and str(path) in message and "\n" not in message


def test_garbled_bytes_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 1})[:-3])
    with pytest.raises(CharVocabularyError, match="not a readable pickle"):
        CharTokenizer.from_meta_pkl(path)


def test_vocabulary_must_fit_the_model() -> None:
    tok = CharTokenizer(SHAKESPEARE_CHARS)
    check_tokenizer_fits(tok, 65, "m")
    with pytest.raises(CharVocabularyError) as err:
        check_tokenizer_fits(tok, 70, "runs/char")
    assert "65 characters" in str(err.value) and "70 tokens" in str(err.value)


def test_gpt2_bpe_may_be_smaller_than_the_model_never_larger(tokenizer) -> None:
    check_tokenizer_fits(tokenizer, 50304, "nanogpt")  # nanoGPT's padded vocabulary
    check_tokenizer_fits(tokenizer, 50257, "gpt2")
    with pytest.raises(ValueError) as err:
        check_tokenizer_fits(tokenizer, 65, "out-shakespeare-char")
    assert "65 tokens" in str(err.value) and "50257" in str(err.value)
    assert "meta.pkl" in str(err.value)


def test_text_outside_the_vocabulary_names_the_characters() -> None:
    tok = CharTokenizer(SHAKESPEARE_CHARS)
    with pytest.raises(CharVocabularyError) as err:
        prompt_ids(tok, "ROMEO: café €5 é")
    assert str(err.value) == (
        "the prompt has characters outside the model's 65-character vocabulary: 'é', '€', '5'"
    )


GENERATE = ["--max-new-tokens", "40", "--seed", "1", "--device", "cpu"]


def cli_generate(path: Path, prompt: str) -> int:
    """``gpt2load generate`` in this process: for the errors, which need no fresh interpreter."""
    from gpt2load.cli import main

    return main(["generate", str(path), "--prompt", prompt, *GENERATE])


def test_generate_with_a_char_checkpoint_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_char_checkpoint(tmp_path / "out-shakespeare-char")
    result = subprocess.run(
        [sys.executable, "-m", "gpt2load", "generate", str(folder / "ckpt.pt"),
         "--prompt", "ROMEO:", *GENERATE],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout[:-1]  # print's final newline
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40
    assert set(text) <= set(SHAKESPEARE_CHARS), set(text) - set(SHAKESPEARE_CHARS)

    assert cli_generate(folder / "ckpt.pt", "ROMEO: café") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the model's 65-character vocabulary: 'é'" in err

    write_meta(folder, SHAKESPEARE_CHARS[:60])  # another dataset's vocabulary
    assert cli_generate(folder / "ckpt.pt", "ROMEO:") == 2
    err = capsys.readouterr().err
    assert "60 characters" in err and "65 tokens" in err


def test_a_char_model_without_its_meta_pkl_says_so(
    tmp_path: Path,
    tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = make_char_checkpoint(tmp_path / "run", meta=False)
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer_dir))  # GPT-2's BPE is at hand
    assert cli_generate(folder / "ckpt.pt", "ROMEO:") == 2  # one line, not a traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "65 tokens" in err and "meta.pkl" in err


def test_chat_with_a_char_model(tmp_path: Path) -> None:
    from gpt2load.formats import load_checkpoint

    folder = make_char_checkpoint(tmp_path / "run")
    ckpt = folder / "ckpt.pt"
    model, tok = load_checkpoint(ckpt, device="cpu"), get_tokenizer(ckpt)
    out = io.StringIO()
    console = Console(model, tok, Settings(temperature=0.0, max_new_tokens=12), out)
    for line in ("ROMEO:", "JULIET: ¿qué?", "/topk 5", "KING:"):
        assert console.handle(line)
    lines = out.getvalue().splitlines()
    assert any("outside the model's 65-character vocabulary: '¿', 'é'" in line for line in lines)
    assert any(line.startswith("KING:") for line in lines)  # the console went on

    # The answer is what greedy decoding of the model gives, character by character.
    from gpt2load.generation import generate

    idx = torch.tensor([tok.encode("ROMEO:")])
    expected = tok.decode(generate(model, idx, 12, temperature=0.0)[0].tolist())
    assert expected in out.getvalue()
