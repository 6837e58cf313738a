"""``convert``: exported checkpoints load in transformers and TensorFlow, and round trips are exact."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2load.cli import main as cli_main
from gpt2load.config import GPTConfig
from gpt2load.formats import convert, detect_format, inspect_checkpoint, load_checkpoint
from gpt2load.formats.convert import DestinationError, MissingTokenizerWarning
from gpt2load.formats.tf_bundle import TFBundleSource
from tests.checkpoint_factory import (
    random_hf_state_dict,
    reference_logits,
    sample_ids,
    write_every_layout,
)
from tests.conftest import TINY_CONFIGS, TOKENIZER_DIR, random_model

pytest.importorskip("tensorflow", reason="writing OpenAI checkpoints needs TensorFlow")

CONFIG = GPTConfig(n_layer=3, n_head=5, n_embd=35, context_length=20, vocab_size=300)
TOKENIZER_NAMES = ("encoder.json", "vocab.bpe")


def gpt2_tokenizer(folder: Path) -> Path:
    """``folder`` with GPT-2's real tokenizer files: convert copies only files get_tokenizer
    accepts (their published sha256), so no stand-in would do."""
    if not (TOKENIZER_DIR / "encoder.json").is_file():
        pytest.skip(f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_NAMES:
        shutil.copyfile(TOKENIZER_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def openai_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    state = random_hf_state_dict(CONFIG, seed=11)
    folder = write_every_layout(root, CONFIG, state, only=["openai"])["openai"]
    return gpt2_tokenizer(folder)


def _tf_tensors(folder: Path) -> dict[str, bytes]:
    source = TFBundleSource(folder / "model.ckpt")
    return {
        n: source.tensor(n).reshape(-1).view(torch.uint8).numpy().tobytes()
        for n in source.entries()
    }


def test_round_trip_openai_native_hf_openai_is_bit_identical(
    openai_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)  # only what travels along
    convert(openai_folder, tmp_path / "native", "native")
    assert detect_format(tmp_path / "native") == "native"
    convert(tmp_path / "native", tmp_path / "hf", "hf")
    assert detect_format(tmp_path / "hf") == "hf-safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTokenizerWarning)  # the files must have arrived
        convert(tmp_path / "hf", tmp_path / "openai", "openai")
    assert detect_format(tmp_path / "openai") == "openai-tf"
    original, final = _tf_tensors(openai_folder), _tf_tensors(tmp_path / "openai")
    assert original.keys() == final.keys()
    assert all(original[n] == final[n] for n in original)
    native = load_checkpoint(tmp_path / "native").state_dict()
    again = load_checkpoint(tmp_path / "openai").state_dict()
    assert all(torch.equal(native[k], again[k]) for k in native)
    # The tokenizer files travel every step, bit-identical, under each format's names.
    for folder, names in (
        ("native", ("encoder.json", "vocab.bpe")),
        ("hf", ("vocab.json", "merges.txt")),
        ("openai", ("encoder.json", "vocab.bpe")),
    ):
        for original_name, name in zip(("encoder.json", "vocab.bpe"), names, strict=True):
            copied = (tmp_path / folder / name).read_bytes()
            assert copied == (openai_folder / original_name).read_bytes(), (folder, name)


def test_native_export_brings_the_real_tokenizer_and_generate_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (TOKENIZER_DIR / "encoder.json").is_file():
        pytest.skip(f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR}")
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    config = TINY_CONFIGS["tiny"]
    src = write_every_layout(tmp_path, config, random_hf_state_dict(config), only=["hf_hub"])
    convert(src["hf_hub"], tmp_path / "hf", "hf", tokenizer_dir=TOKENIZER_DIR)
    written = convert(tmp_path / "hf", tmp_path / "native" / "m.safetensors", "native")
    folder = tmp_path / "native"
    assert [p.name for p in written] == ["m.safetensors", "encoder.json", "vocab.bpe"]
    for name in ("encoder.json", "vocab.bpe"):
        assert (folder / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes()
    from gpt2load.tokenizer import tokenizer_folder

    assert tokenizer_folder(folder / "m.safetensors") == folder.resolve()


def test_openai_export_without_tokenizer_warns_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "weights"))  # an empty cache
    from gpt2load.native import save_native

    save_native(random_model(TINY_CONFIGS["small_vocab"]), tmp_path / "bare")
    with pytest.warns(MissingTokenizerWarning, match="WITHOUT them.*--tokenizer-dir"):
        written = convert(tmp_path / "bare", tmp_path / "openai", "openai")
    assert "encoder.json" not in {p.name for p in written}
    assert detect_format(tmp_path / "openai") == "openai-tf"  # the weights are still usable
    # The command line says it as its last line, on stderr.
    args = ["convert", str(tmp_path / "bare"), str(tmp_path / "again"), "--to", "openai"]
    assert cli_main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gpt2load convert: WARNING: no tokenizer files")
    # $GPT2LOAD_TOKENIZER_DIR is where the files come from when none are beside the source.
    tokenizer = gpt2_tokenizer(tmp_path / "tok")
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(tokenizer))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTokenizerWarning)
        written = convert(tmp_path / "bare", tmp_path / "third", "openai")
    encoder = (TOKENIZER_DIR / "encoder.json").read_bytes()
    assert (tmp_path / "third" / "encoder.json").read_bytes() == encoder
    # Without the variable, the tokenizer download cache (weights/tokenizer) serves as well.
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR")
    shutil.copytree(tokenizer, tmp_path / "weights" / "tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTokenizerWarning)
        convert(tmp_path / "bare", tmp_path / "fourth", "openai")
    assert (tmp_path / "fourth" / "vocab.bpe").read_bytes() == (
        tokenizer / "vocab.bpe"
    ).read_bytes()


def test_hf_export_loads_in_transformers_with_the_same_logits(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    model = random_model(TINY_CONFIGS["odd"], seed=5)
    from gpt2load.native import save_native

    save_native(model, tmp_path / "ours")
    written = convert(tmp_path / "ours", tmp_path / "hf", "hf")
    assert {p.name for p in written} == {"model.safetensors", "config.json"}
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = sample_ids(model.config)
    with torch.no_grad():
        assert (theirs(idx).logits - model(idx)).abs().max().item() <= 1e-5


def test_openai_export_reads_in_tensorflow_like_the_release(
    openai_folder: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    convert(openai_folder, tmp_path / "hf", "hf")
    out = tmp_path / "openai"
    convert(tmp_path / "hf", out, "openai")
    assert (out / "checkpoint").read_text() == (
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams == {"n_vocab": 300, "n_ctx": 20, "n_embd": 35, "n_head": 5, "n_layer": 3}
    assert list(hparams) == ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"]
    assert (out / "model.ckpt.meta").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "scratch files left behind"
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    shapes = reader.get_variable_to_shape_map()
    assert shapes["model/h0/attn/c_attn/w"] == [1, 35, 105]
    original = tf.train.load_checkpoint(str(openai_folder / "model.ckpt"))
    for name in shapes:
        assert np.array_equal(reader.get_tensor(name), original.get_tensor(name)), name
    # The tokenizer files come along, under OpenAI names (HF's vocab.json/merges.txt in between).
    encoder = (TOKENIZER_DIR / "encoder.json").read_bytes()
    assert (tmp_path / "hf" / "vocab.json").read_bytes() == encoder
    assert (out / "encoder.json").read_bytes() == encoder
    assert (out / "vocab.bpe").is_file()


def test_hf_files_from_the_hub_layout_export_to_openai_with_real_tokenizer(tmp_path: Path) -> None:
    if not (TOKENIZER_DIR / "encoder.json").is_file():
        pytest.skip(
            f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR} (../shared/data absent)"
        )
    config = TINY_CONFIGS["tiny"]
    state = random_hf_state_dict(config)
    src = write_every_layout(tmp_path, config, state, only=["hf_hub"])["hf_hub"]
    convert(src, tmp_path / "openai", "openai", tokenizer_dir=TOKENIZER_DIR)
    assert (tmp_path / "openai" / "encoder.json").stat().st_size == 1_042_301
    assert (tmp_path / "openai" / "vocab.bpe").stat().st_size == 456_318
    idx = sample_ids(config)
    with torch.no_grad():
        logits = load_checkpoint(tmp_path / "openai")(idx)
    assert (logits - reference_logits(state, config, idx)).abs().max().item() <= 1e-5


def test_native_export_with_a_dtype(openai_folder: Path, tmp_path: Path) -> None:
    written = convert(openai_folder, tmp_path / "m.safetensors", "native", dtype="bf16")
    assert written == [tmp_path / n for n in ("m.safetensors", "encoder.json", "vocab.bpe")]
    model = load_checkpoint(tmp_path / "m.safetensors")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config == CONFIG


def test_convert_command(
    openai_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["convert", str(openai_folder), str(tmp_path / "hf"), "--to", "hf"]) == 0
    out = capsys.readouterr().out
    assert "wrote hf checkpoint" in out and "model.safetensors" in out
    assert detect_format(tmp_path / "hf") == "hf-safetensors"


def test_convert_refuses_bad_requests(openai_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown target format 'onnx'"):
        convert(openai_folder, tmp_path / "x", "onnx")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        convert(openai_folder, blocker, "hf")
    with pytest.raises(FileNotFoundError, match="lacks the tokenizer files"):
        convert(openai_folder, tmp_path / "y", "openai", tokenizer_dir=tmp_path)
    untied = random_model(TINY_CONFIGS["tiny"].replace(tie_head=False))
    from gpt2load.native import save_native

    save_native(untied, tmp_path / "untied")
    with pytest.raises(ValueError, match="tie_head=False: openai's model has no output head"):
        convert(tmp_path / "untied", tmp_path / "z", "openai")
    assert not (tmp_path / "z").exists()  # refused before anything was written


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_convert_never_writes_over_its_own_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpt2load.native import save_native

    src = tmp_path / "src"
    save_native(random_model(TINY_CONFIGS["small_vocab"]), src)
    (tmp_path / "link").symlink_to(src)  # a link to SRC's folder is SRC's folder
    linked = tmp_path / "linked"  # a folder whose weights are a link into SRC's
    linked.mkdir()
    (linked / "model.safetensors").symlink_to(src / "model.safetensors")
    before = _contents(src)
    for source, dst, to, options in (
        (src, src, "hf", {}),
        (src, src, "native", {"dtype": "bf16"}),  # would throw the float32 weights away
        (src / "model.safetensors", src, "rasbt", {}),  # a SRC file counts by its folder
        (src, src / "other.safetensors", "native", {}),
        (src, tmp_path / "link", "openai", {}),
        (linked, src, "native", {}),
    ):
        with pytest.raises(DestinationError, match="would overwrite the checkpoint being read"):
            convert(source, dst, to, **options)
    assert _contents(src) == before and not (src / "other.safetensors").exists()
    assert cli_main(["convert", str(src), str(tmp_path / "link"), "--to", "hf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'link'} is where {src} lies" in err[0]
    assert _contents(src) == before
    # A folder of its own inside SRC's is fine: nothing of SRC's is in it.
    convert(src, src / "hf", "hf")
    assert detect_format(src / "hf") == "hf-safetensors" and _contents(src) == before


def test_convert_copies_no_tokenizer_file_that_gpt2load_refuses(
    openai_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gpt2load.char_tokenizer import CharTokenizer
    from gpt2load.errors import TokenizerError
    from gpt2load.native import save_native

    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    bad = gpt2_tokenizer(tmp_path / "badtok")
    (bad / "encoder.json").write_text('{"!": 0}')
    out = tmp_path / "out"
    with pytest.raises(TokenizerError, match="badtok/encoder.json is not GPT-2's published file"):
        convert(openai_folder, out, "openai", tokenizer_dir=bad)
    # Beside SRC (under Hugging Face's names), and in $GPT2LOAD_TOKENIZER_DIR for openai.
    src = tmp_path / "src"
    shutil.copytree(openai_folder, src)
    (src / "vocab.bpe").unlink()
    (src / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError, match="src/merges.txt \\(OpenAI's vocab.bpe\\) is not"):
        convert(src, out, "hf")
    save_native(random_model(TINY_CONFIGS["small_vocab"]), tmp_path / "bare")
    monkeypatch.setenv("GPT2LOAD_TOKENIZER_DIR", str(bad))
    with pytest.raises(TokenizerError, match="badtok/encoder.json is not"):
        convert(tmp_path / "bare", out, "openai")
    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR")
    # A meta.pkl beside GPT-2's files is what gpt2load would read there, not the files.
    with_meta = gpt2_tokenizer(tmp_path / "with_meta")
    CharTokenizer.from_text("ab").save(with_meta)
    with pytest.raises(TokenizerError, match="holds a meta.pkl beside GPT-2's tokenizer files"):
        convert(openai_folder, out, "hf", tokenizer_dir=with_meta)
    # A character model's meta.pkl is checked too.
    (tmp_path / "bare" / "meta.pkl").write_bytes(b"not a pickle")
    with pytest.raises(TokenizerError, match="bare/meta.pkl"):
        convert(tmp_path / "bare", out, "nanogpt")
    assert not out.exists()  # refused before anything was written
    args = ["convert", str(openai_folder), str(out), "--to", "openai", "--tokenizer-dir", str(bad)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encoder.json is not GPT-2's published file" in err[0]
    assert "nothing was written" in err[0] and not out.exists()


def test_refusals_name_the_gelu_the_target_computes(tmp_path: Path) -> None:
    from gpt2load.errors import CheckpointError
    from gpt2load.native import save_native

    small = TINY_CONFIGS["small_vocab"]
    nanogpt_like = small.replace(activation="gelu", bias=False, qkv_bias=False)
    save_native(random_model(nanogpt_like), tmp_path / "nanogpt")
    with pytest.raises(CheckpointError) as caught:
        convert(tmp_path / "nanogpt", tmp_path / "book", "rasbt")
    assert "activation='gelu': rasbt's model computes only GELU's tanh approximation" in str(
        caught.value
    )
    save_native(random_model(small.replace(activation="relu")), tmp_path / "relu")
    with pytest.raises(CheckpointError, match="'relu': nanogpt's model computes only the exact"):
        convert(tmp_path / "relu", tmp_path / "nano", "nanogpt")
    assert not (tmp_path / "book").exists() and not (tmp_path / "nano").exists()


def test_convert_refuses_an_empty_or_dangling_destination(
    openai_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # where an empty DST would write
    with pytest.raises(DestinationError, match="DST is empty: give the folder to write"):
        convert(openai_folder, "", "native")
    assert cli_main(["convert", str(openai_folder), " ", "--to", "hf"]) == 2
    assert "error: DST is empty" in capsys.readouterr().err
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for dst, to in ((dangling, "hf"), (dangling, "native"), (dangling / "m.safetensors", "native")):
        with pytest.raises(DestinationError) as caught:
            convert(openai_folder, dst, to)
        assert str(caught.value).startswith(f"{dangling} is a symbolic link to {tmp_path}/nowhere")
        assert "remove the link" in str(caught.value)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "dangling"]


def test_a_character_model_exports_with_its_meta_pkl_and_no_bpe_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2load.char_tokenizer import CharTokenizer
    from gpt2load.native import save_native
    from gpt2load.tokenizer import get_tokenizer

    monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("GPT2LOAD_WEIGHTS_DIR", str(tmp_path / "weights"))  # an empty cache
    vocab = CharTokenizer.from_text("First Citizen:\nBefore we proceed any further\n")
    config = TINY_CONFIGS["small_vocab"].replace(vocab_size=vocab.n_vocab)
    save_native(random_model(config), tmp_path / "char")
    vocab.save(tmp_path / "char")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingTokenizerWarning)  # it never had GPT-2's files
        written = convert(tmp_path / "char", tmp_path / "openai", "openai")
    assert written[-1] == tmp_path / "openai" / "meta.pkl"
    assert not {"encoder.json", "vocab.bpe"} & {p.name for p in written}
    assert get_tokenizer(tmp_path / "openai").itos == vocab.itos


def test_info_lists_every_file_of_the_checkpoint(
    openai_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "openai"
    convert(openai_folder, out, "openai")
    (out / "notes.txt").write_text("not part of the checkpoint")
    info = inspect_checkpoint(out)
    names = [p.name for p, _ in info.files]
    assert names == [
        "model.ckpt.index",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.meta",
        "checkpoint",
        "hparams.json",
        "encoder.json",
        "vocab.bpe",
    ]
    assert all(
        n == (out / name).stat().st_size for (_, n), name in zip(info.files, names, strict=True)
    )
    roles = dict(zip(names, info.roles, strict=True))
    assert roles["model.ckpt.meta"] == "TensorFlow graph" and roles["vocab.bpe"] == "tokenizer"
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in names) and "notes.txt" not in text
    assert "files       7," in text
    # Hugging Face: weights, config and the tokenizer under its names.
    convert(out, tmp_path / "hf", "hf")
    hf_info = inspect_checkpoint(tmp_path / "hf")
    hf = [(p.name, role) for (p, _), role in zip(hf_info.files, hf_info.roles, strict=True)]
    assert hf == [
        ("model.safetensors", "weights"),
        ("config.json", "config"),
        ("vocab.json", "tokenizer"),
        ("merges.txt", "tokenizer"),
    ]
    assert cli_main(["info", "--json", str(tmp_path / "hf")]) == 0
    listed = json.loads(capsys.readouterr().out)["files"]
    assert [(f["role"], Path(f["path"]).name) for f in listed][1] == ("config", "config.json")


def test_the_command_offers_exactly_the_writers() -> None:
    """`convert --to` lists its choices without importing torch, so it keeps its own copy."""
    from gpt2load.commands.convert import TARGETS
    from gpt2load.formats.convert import WRITERS

    assert tuple(WRITERS) == TARGETS
