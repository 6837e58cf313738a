"""Any GPT-2 on the Hugging Face hub by its id (issue 16), through a stand-in hub on 127.0.0.1
(``tests.hub_server``) with ``HF_ENDPOINT`` pointing at it and the HF cache in ``tmp_path``.
huggingface_hub and transformers download from the stand-in too, so it answers as the hub does;
they read ``HF_ENDPOINT`` and offline mode once, at import, so ``_as_if_imported_now`` sets
what they would have read, while gpt2load must (and does) read the environment at each call."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants, hf_hub_download, snapshot_download

import gpt2load
from gpt2load import releases
from gpt2load.cli import main
from gpt2load.errors import NO_NETWORK_ADVICE, ChecksumError
from gpt2load.hub import settings
from tests.conftest import TINY_CONFIGS, TOKENIZER_DIR
from tests.hf_reference import hf_config
from tests.http_server import isolate_downloads
from tests.hub_server import TOKEN, StandInHub

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
IDS = torch.tensor([[464, 1049, 286, 4950, 11, 50256, 0, 1234]])


@pytest.fixture(scope="module")
def reference() -> transformers.GPT2LMHeadModel:
    """transformers' GPT-2 of the tiny shape, every tensor random (a zero bias hides nothing)."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_config(TINY_CONFIGS["tiny"])).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    return model


def _folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.fixture(scope="module")
def repos(
    reference: transformers.GPT2LMHeadModel, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, bytes]]:
    """What the stand-in serves: the reference model sharded, single-file, as a bare
    pytorch_model.bin, with only tokenizer.json, private, and a llama config."""
    tmp = tmp_path_factory.mktemp("repos")
    reference.save_pretrained(tmp / "sharded", max_shard_size="2MB")
    reference.save_pretrained(tmp / "single")
    sharded, single = _folder(tmp / "sharded"), _folder(tmp / "single")
    torch.save(reference.state_dict(), tmp / "model.bin")
    bin_only = {
        "config.json": single["config.json"],
        "pytorch_model.bin": (tmp / "model.bin").read_bytes(),
    }
    llama = dict(single, **{"config.json": json.dumps({"model_type": "llama"}).encode()})
    served = {
        "org/sharded": sharded | {"pytorch_model.bin": bin_only["pytorch_model.bin"]},
        "org/single": single,
        "org/bin": bin_only,
        "org/llama": llama,
        "openai-community/gpt2": single,
    }
    if (TOKENIZER_DIR / "encoder.json").is_file() and (TOKENIZER_DIR / "vocab.bpe").is_file():
        tok = transformers.GPT2TokenizerFast(
            vocab=str(TOKENIZER_DIR / "encoder.json"), merges=str(TOKENIZER_DIR / "vocab.bpe")
        )
        tok.save_pretrained(tmp / "tok")
        served["org/tok"] = single | _folder(tmp / "tok")
        assert "tokenizer.json" in served["org/tok"] and "vocab.json" not in served["org/tok"]
    served["org/secret"] = served.get("org/tok", single)
    return served


@pytest.fixture
def hub(
    repos: dict[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[StandInHub]:
    """The stand-in serving ``repos`` (``org/secret`` private), and an environment where the
    HF cache, the HF home and weights/ are in ``tmp_path`` and no token is set."""
    isolate_downloads(monkeypatch, tmp_path)  # weights/ here, OpenAI's hosts unreachable
    with StandInHub() as stand_in:
        for repo_id, files in repos.items():
            stand_in.add_repo(repo_id, files, private=repo_id == "org/secret")
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("GPT2LOAD_TOKENIZER_DIR", raising=False)
        for kind in ("https", "http", "all"):  # the stand-in is reached directly
            for name in (f"{kind}_proxy", f"{kind.upper()}_PROXY"):
                monkeypatch.delenv(name, raising=False)
        yield stand_in


def _as_if_imported_now(monkeypatch: pytest.MonkeyPatch, hub: StandInHub, offline: bool) -> Path:
    """What huggingface_hub would have read at import in this environment; the cache folder."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    return settings().cache


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str, command: str) -> str:
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"gpt2load {command}: error: "), err
    return err


def _same_logits(model: torch.nn.Module, reference: transformers.GPT2LMHeadModel) -> None:
    with torch.no_grad():
        logits = model(IDS)
        logits = getattr(logits, "logits", logits)  # transformers' own model, or ours
        torch.testing.assert_close(logits, reference(IDS).logits, rtol=1e-5, atol=1e-5)


# -- the stand-in is faithful: the hub's own libraries download from it ----------------------
def test_huggingface_hub_and_transformers_download_from_the_stand_in(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference
) -> None:
    cache = _as_if_imported_now(monkeypatch, hub, offline=False)
    shard = "model-00001-of-00002.safetensors"
    path = Path(hf_hub_download("org/sharded", shard, cache_dir=cache, endpoint=hub.url))
    data = hub.repos["org/sharded"].files[shard]
    assert path.read_bytes() == data and path.resolve().name == hashlib.sha256(data).hexdigest()
    folder = Path(snapshot_download("org/single", cache_dir=cache, endpoint=hub.url))
    assert sorted(p.name for p in folder.iterdir()) == sorted(hub.repos["org/single"].files)
    model = transformers.GPT2LMHeadModel.from_pretrained("org/sharded", cache_dir=cache)
    _same_logits(model.eval(), reference)


# -- downloads by id, loading, the cache shared with transformers ----------------------------
def test_sharded_repo_downloads_by_id_and_loads_with_transformers_logits(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], tmp_path: Path, reference
) -> None:
    # huggingface_hub read these at its import; gpt2load reads the environment now.
    assert Path(constants.HF_HUB_CACHE) != tmp_path / "hf-cache" and hub.url != constants.ENDPOINT
    code, out, _ = _cli(capsys, "download", "org/sharded", "--quiet")
    assert code == 0
    folder = Path(out.splitlines()[-1])
    assert folder.is_relative_to(tmp_path / "hf-cache" / "models--org--sharded" / "snapshots")
    assert folder.name == hub.repos["org/sharded"].commit
    code, _, err = _cli(capsys, "download", "org/sharded", "--revision", "v9", "--quiet")
    assert code == 2 and "has no revision 'v9'" in _one_line(err, "download")
    code, _, err = _cli(capsys, "download", "org/sharded", "--source", "openai", "--quiet")
    assert code == 2 and "--source, --dir and --mirror are for" in _one_line(err, "download")
    assert hub.fetched("org/sharded", "model-00002-of-00002.safetensors")
    assert not hub.fetched("org/sharded", "pytorch_model.bin")  # safetensors preferred
    _same_logits(gpt2load.load("org/sharded"), reference)


def test_verify_hashes_a_hub_download_against_its_blob_names_and_says_how_to_repair(
    hub: StandInHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading trusts a blob's name (the sha256 the hub announced); verify hashes the bytes."""
    assert _cli(capsys, "download", "org/sharded", "--quiet")[0] == 0
    code, out, err = _cli(capsys, "verify", "org/sharded")
    assert code == 0, out + err
    assert "sha256 model-00001-of-00002.safetensors" in out and "all checks passed" in out
    folder = settings().cache / "models--org--sharded" / "snapshots"
    shard = next(folder.glob("*/model-00002-of-00002.safetensors")).resolve()
    damaged = bytearray(shard.read_bytes())
    damaged[-5] ^= 0xFF  # a flipped bit in the last tensor's bytes: the header still parses
    shard.write_bytes(bytes(damaged))
    code, out, _ = _cli(capsys, "verify", "org/sharded")
    assert code == 1, out
    assert "to repair, download model-00002-of-00002.safetensors again: gpt2load download " in out
    assert "org/sharded --force" in out


def test_transformers_reads_our_download_offline(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    assert _cli(capsys, "download", "org/sharded", "--quiet")[0] == 0
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _as_if_imported_now(monkeypatch, hub, offline=True)
    model = transformers.GPT2LMHeadModel.from_pretrained("org/sharded", cache_dir=cache)
    _same_logits(model.eval(), reference)


def test_we_load_what_transformers_cached_with_the_hub_gone(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch, reference
) -> None:
    cache = _as_if_imported_now(monkeypatch, hub, offline=False)
    transformers.GPT2LMHeadModel.from_pretrained("org/sharded", cache_dir=cache)
    asked = len(hub.requests)
    _same_logits(gpt2load.load("org/sharded"), reference)
    assert len(hub.requests) == asked  # no network at all, not even for a newer commit
    hub.stop()
    _same_logits(gpt2load.load("org/sharded"), reference)


def test_pytorch_model_bin_only_repo_loads(hub: StandInHub, reference) -> None:
    _same_logits(gpt2load.load("org/bin"), reference)


# -- tokenizer.json only ---------------------------------------------------------------------
def test_tokenizer_json_only_repo_generates(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], reference
) -> None:
    if "org/tok" not in hub.repos:
        pytest.skip(f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR}")
    prompt = "Every effort moves"
    argv = ["generate", "org/tok", "--prompt", prompt, "--max-new-tokens", "6"]
    code, out, err = _cli(capsys, *argv, "--temperature", "0")
    assert code == 0, err
    tok = transformers.GPT2TokenizerFast.from_pretrained(gpt2load.resolve("org/tok"))
    ids = tok(prompt, return_tensors="pt").input_ids
    theirs = reference.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=50256)
    assert tok.decode(theirs[0]) in out
    assert hub.fetched("org/tok", "tokenizer.json")


# -- private repos, other architectures, offline ---------------------------------------------
def test_private_and_gated_repos_need_a_token_which_is_never_shown_or_written(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch, tmp_path: Path, reference
) -> None:
    hub.add_repo("org/gated", hub.repos["org/single"].files, gated=True)
    said = []
    for repo_id, why in (("org/secret", "private"), ("org/gated", "gated")):
        code, out, err = _cli(capsys, "download", repo_id, "--quiet")
        line = _one_line(err, "download")
        assert code == 2 and why in line and "HF_TOKEN" in line and "hf auth login" in line, line
        said.append(out + err)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = _cli(capsys, "download", "org/secret", "--quiet")
    assert code == 0, err
    monkeypatch.delenv("HF_TOKEN")  # now the token `hf auth login` saved in HF_HOME
    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text(TOKEN)
    asked = len(hub.requests)
    code, out2, err2 = _cli(capsys, "download", "org/gated", "--quiet")
    assert code == 0, err2
    to_hub = [r.authorized for r in hub.requests[asked:] if not r.path.startswith("/_cdn/")]
    assert to_hub and all(to_hub)
    assert not any(r.authorized for r in hub.requests if r.path.startswith("/_cdn/"))  # hub only
    _same_logits(gpt2load.load("org/gated"), reference)
    assert TOKEN not in "".join(said) + out + err + out2 + err2
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "token"]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]


def test_other_architecture_refused_by_its_config_before_any_weights(
    hub: StandInHub, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "download", "org/llama", "--quiet")
    assert code == 2 and "'llama'" in _one_line(err, "download")
    with pytest.raises(gpt2load.CheckpointError, match="llama"):
        gpt2load.load("org/llama")
    assert hub.fetched("org/llama", "config.json")
    assert hub.fetched("org/llama", "model.safetensors") == []


def test_offline_with_nothing_cached_is_one_fast_line(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    code, _, err = _cli(capsys, "generate", "org/single", "--prompt", "Hi")
    assert time.monotonic() - start < 5 and code == 2
    assert "HF_HUB_OFFLINE" in _one_line(err, "generate") and hub.requests == []


def test_a_hub_whose_name_does_not_resolve_fails_at_once_with_the_advice(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://gpt2load-offline.invalid")  # .invalid: RFC 6761
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    code, _, err = _cli(capsys, "download", "org/single", "--quiet")
    assert time.monotonic() - start < 5 and code == 2, err  # no retries: the network is absent
    line = _one_line(err, "download")
    assert "does not resolve" in line and NO_NETWORK_ADVICE in line and "hf-cache" in line
    # Nothing listening where the hub should be: the same, at once (huggingface_hub itself
    # would retry for half a minute).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port of ours that nothing listens on
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    start = time.monotonic()
    code, _, err = _cli(capsys, "generate", "org/single", "--prompt", "x")
    closed.close()
    assert time.monotonic() - start < 5 and code == 2, err
    line = _one_line(err, "generate")
    assert "connection refused" in line and NO_NETWORK_ADVICE in line


# -- finetune --init ORG/NAME -----------------------------------------------------------------
def test_finetune_starts_from_a_repo_id_and_its_checkpoints_carry_the_tokenizer(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from finetune.cli import main as finetune

    if "org/tok" not in hub.repos:
        pytest.skip(f"real GPT-2 tokenizer files not found in {TOKENIZER_DIR}")
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question. " * 200)
    argv = ["pretrain", "--init", "org/tok", "--data", "text.txt", "--force-cpu", "--no-progress"]
    argv += ["--max-iters", "2", "--warmup-iters", "1", "--batch-size", "2", "--block-size", "16"]
    argv += ["--eval-interval", "1", "--eval-batches", "1", "--sample-interval", "0"]
    assert finetune(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "runs" / "pretrain" / "best" / "tokenizer.json").is_file()
    assert gpt2load.load(tmp_path / "runs" / "pretrain" / "best").config.n_embd == 32


# -- published names through the cache, and what `gpt2load list` shows ----------------------
def test_published_name_uses_the_cache_checked_by_its_pin_and_list_shows_it(
    hub: StandInHub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server,
    tmp_path: Path,
) -> None:
    cache = _as_if_imported_now(monkeypatch, hub, offline=False)
    transformers.GPT2LMHeadModel.from_pretrained("openai-community/gpt2", cache_dir=cache)
    assert _cli(capsys, "download", "org/single", "--quiet")[0] == 0
    hf_hub_download("org/bin", "config.json", cache_dir=cache, endpoint=hub.url)  # no weights
    hub.stop()
    with pytest.raises(ChecksumError, match="not the published openai-community/gpt2"):
        gpt2load.resolve("gpt2", download=False)  # the tiny model is not the published 124M
    data = hub.repos["openai-community/gpt2"].files["model.safetensors"]
    monkeypatch.setattr(releases, "_HF_SAFETENSORS_124M", hashlib.sha256(data).hexdigest())
    with pytest.raises(ChecksumError, match=f"{len(data)} bytes; expected .* 548105171 bytes"):
        gpt2load.resolve("gpt2", download=False)  # the published name, not the published size
    monkeypatch.setattr(releases, "_HF_SAFETENSORS_124M_SIZE", len(data))
    assert gpt2load.resolve("gpt2", download=False).is_relative_to(cache)
    # A download into weights/ that failed before its weights does not hide the cache's copy.
    (tmp_path / "weights" / "gpt2" / "hf").mkdir(parents=True)
    (tmp_path / "weights" / "gpt2" / "hf" / "config.json").write_text("{}")
    assert gpt2load.resolve("gpt2", download=False).is_relative_to(cache)
    # Nor does another source's folder, when the name is to be had (hub and hosts are gone).
    (tmp_path / "weights" / "gpt2" / "openai").mkdir()
    (tmp_path / "weights" / "gpt2" / "openai" / "checkpoint").write_text("x")
    assert gpt2load.resolve("gpt2").is_relative_to(cache)
    # And a weights/ folder, downloaded from a manifest with a published sha256.
    url = server.url + server.add("/w/model.safetensors", data)
    manifest, sha = tmp_path / "m.json", hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps({"files": [{"url": url, "sha256": sha}]}))
    argv = ["download", "mine", "--manifest", str(manifest), "--mirror", server.url, "--quiet"]
    assert _cli(capsys, *argv)[0] == 0
    code, out, _ = _cli(capsys, "list")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    size = f"{len(data) / 1e6:.1f} MB"
    assert size in lines["mine/custom"] and "verified" in lines["mine/custom"], out
    cached = next(v for k, v in lines.items() if k.startswith("openai-community/gpt2@"))
    assert "verified" in cached and "NOT" not in cached, out
    single = next(v for k, v in lines.items() if k.startswith("org/single@"))
    size = sum(map(len, hub.repos["org/single"].files.values())) / 1e6
    assert f"{size:.1f} MB" in single and "sha256 by etag" in single, out
    bare = next(v for k, v in lines.items() if k.startswith("org/bin@"))
    assert "no weights (`gpt2load download org/bin` fetches them)" in bare, out


def test_a_published_name_with_other_weights_than_its_pinned_file_is_refused(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host serving openai-community/gpt2 without its model.safetensors (only a
    pytorch_model.bin) cannot slip other weights under the pinned name: the download is
    refused, and so is the copy it left in the cache."""
    hub.add_repo("openai-community/gpt2", hub.repos["org/bin"].files)
    _as_if_imported_now(monkeypatch, hub, offline=False)
    code, _, err = _cli(capsys, "download", "openai-community/gpt2", "--quiet")
    assert code == 2 and "holds no model.safetensors" in _one_line(err, "download"), err
    assert "download again" in err
    with pytest.raises(ChecksumError, match="holds no model.safetensors"):
        gpt2load.resolve("openai-community/gpt2", download=False)
    with pytest.raises(ChecksumError, match="holds no model.safetensors"):
        gpt2load.resolve("gpt2", download=False)


def test_a_weights_file_cut_short_by_the_hub_is_one_line(
    hub: StandInHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's own size check of a cut transfer becomes one line saying to retry, and
    the cut file is no snapshot anything loads."""
    data = hub.repos["org/single"].files["model.safetensors"]
    hub.cdn[hashlib.sha256(data).hexdigest()] = data[: len(data) // 2]
    _as_if_imported_now(monkeypatch, hub, offline=False)
    code, _, err = _cli(capsys, "download", "org/single", "--quiet")
    line = _one_line(err, "download")
    assert code == 2 and "org/single" in line and "arrived incomplete" in line, err
    assert "run the command again" in line
    with pytest.raises(FileNotFoundError):
        gpt2load.resolve("org/single", download=False)


def test_a_mistyped_local_path_is_said_to_be_one_before_the_hub_answer(
    hub: StandInHub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``runs/ckpt.pt`` that does not exist reads as a repo id too: when its folder exists, the
    line says first that there is no such local file, in gpt2load and in finetune's --init."""
    _as_if_imported_now(monkeypatch, hub, offline=False)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "info", "runs/ckpt.pt")
    line = _one_line(err, "info")
    assert code == 2 and "runs/ckpt.pt is no local file (runs/ has no ckpt.pt)" in line, err
    assert "has no such repo" in line  # and what the hub said
    from finetune.cli import main as finetune

    (tmp_path / "t.txt").write_text("hello world " * 50)
    argv = ["pretrain", "--init", "runs/ckpt.pt", "--data", "t.txt", "--force-cpu"]
    assert finetune(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("finetune pretrain: error: --init runs/ckpt.pt is no local file"), err
    assert err.count("as a Hugging Face repo id") == 1, err
