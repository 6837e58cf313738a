"""Hostile checkpoint files (issue 13): what a file claims is bounded by what it holds.

Each test builds its own small file, goes through the command a user would run where one
exists, and asserts the outcome: the one-line error naming file and tensor, the exit code,
the time bound. A damaged OpenAI shard fails its CRC-32C; safetensors headers are held to
the format's rules, checked against the ``safetensors`` library itself; devices and pipes
are refused before anything reads them; a ``.pth`` cannot claim more than it stores.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import struct
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpt2load.cli import main
from gpt2load.config import GPTConfig
from gpt2load.formats import CheckpointError, load_checkpoint
from gpt2load.formats.tf_bundle import CHECK_CRC_ENV, fast_crc32c, read_index, unmask_crc
from tests.checkpoint_factory import (
    Tensors,
    hf_file_state_dict,
    openai_arrays,
    openai_hparams,
    random_hf_state_dict,
    write_hf_bin,
    write_hf_safetensors,
    write_native,
    write_openai_tf,
)
from tests.conftest import TINY_CONFIGS
from tests.crc32c_reference import crc32c, mask_crc

CONFIG = TINY_CONFIGS["tiny"]


# --- TensorFlow bundles written byte by byte -------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proto_field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(int(payload))
    if wire == 5:
        return key + int(payload).to_bytes(4, "little")
    return key + _varint(len(payload)) + payload  # type: ignore[arg-type]


def _table_block(rows: list[tuple[bytes, bytes]]) -> bytes:
    """An uncompressed LevelDB block, no prefix sharing, one restart point."""
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in rows)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def write_tf_bundle_raw(
    prefix: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    *,
    num_shards: int = 1,
    shard_of: dict[str, int] | None = None,
) -> Path:
    """A TensorFlow checkpoint written byte by byte (float32 arrays only), so tests can claim
    what TensorFlow never writes (10^12 shards) and skip importing TensorFlow (seconds)."""
    from gpt2load.formats.tf_bundle import FOOTER_SIZE, TABLE_MAGIC, fast_crc32c

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shard_of = shard_of or {}
    data: dict[int, bytearray] = {}
    rows = [(b"", _proto_field(1, 0, num_shards) + _proto_field(2, 0, 0))]
    for name in sorted(arrays):
        raw = np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes()
        shard = shard_of.get(name, 0)
        buffer = data.setdefault(shard, bytearray())
        shape = b"".join(
            _proto_field(2, 2, _proto_field(1, 0, d)) for d in np.asarray(arrays[name]).shape
        )
        entry = (
            _proto_field(1, 0, 1)
            + _proto_field(2, 2, shape)
            + (_proto_field(3, 0, shard) if shard else b"")
            + (_proto_field(4, 0, len(buffer)) if buffer else b"")
            + _proto_field(5, 0, len(raw))
            + _proto_field(6, 5, mask_crc(fast_crc32c(raw)))
        )
        rows.append((name.encode(), entry))
        buffer += raw
    for shard, buffer in data.items():
        Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").write_bytes(bytes(buffer))
    out = bytearray()

    def add_block(block: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(block))
        trailer = block + b"\x00"
        out.extend(trailer + mask_crc(fast_crc32c(trailer)).to_bytes(4, "little"))
        return handle

    data_handle = add_block(_table_block(rows))
    meta_handle = add_block(_table_block([]))
    index_handle = add_block(_table_block([(rows[-1][0] + b"\xff", data_handle)]))
    footer = (meta_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\x00")
    out.extend(footer + TABLE_MAGIC.to_bytes(8, "little"))
    Path(f"{prefix}.index").write_bytes(bytes(out))
    return prefix


def write_openai_tf_raw(
    folder: str | os.PathLike[str], hf_state: Tensors, config: GPTConfig
) -> Path:
    """``write_openai_tf`` without TensorFlow (and without tokenizer files)."""
    folder = Path(folder)
    write_tf_bundle_raw(folder / "model.ckpt", openai_arrays(hf_state, config))
    (folder / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    (folder / "hparams.json").write_text(json.dumps(openai_hparams(config), indent=2) + "\n")
    return folder


# --- helpers --------------------------------------------------------------------------------


class Hang(BaseException):
    """Not an OSError or Exception, so no ``except`` in the code under test swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts even a blocking open()."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def run_cli(
    capsys: pytest.CaptureFixture[str], *argv: str, seconds: float = 10
) -> tuple[int, str, str]:
    """The real CLI under a time limit: (exit code, stdout, stderr)."""
    with time_limit(seconds):
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_forked(tmp_path: Path, *argv: str, seconds: float = 5) -> tuple[int, str, str]:
    """The real CLI in a forked child with its memory capped and a deadline: a regression that
    reads ``/dev/zero`` to the end must fail this test, not take the machine's memory."""
    out_file, err_file = tmp_path / "child.out", tmp_path / "child.err"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            with open("/proc/self/status") as status:
                vm = next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmSize:"))
            resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
            sys.stdout = open(out_file, "w")  # noqa: SIM115
            sys.stderr = open(err_file, "w")  # noqa: SIM115
            code = main(list(argv))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            read = lambda f: f.read_text() if f.exists() else ""  # noqa: E731
            return os.waitstatus_to_exitcode(status), read(out_file), read(err_file)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"gpt2load {' '.join(argv)} still running after {seconds} s")


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpt2load {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def state() -> Tensors:
    return random_hf_state_dict(CONFIG)


@pytest.fixture
def openai_folder(tmp_path: Path, state: Tensors) -> Path:
    return write_openai_tf_raw(tmp_path / "openai", state, CONFIG)


def flip_bit_in(prefix: Path, tensor: str) -> Path:
    """Flip one bit in the middle of ``tensor``'s bytes in its data shard."""
    _, entries = read_index(prefix.with_name(prefix.name + ".index"))
    entry = entries[tensor]
    shard = prefix.with_name(f"{prefix.name}.data-00000-of-00001")
    data = bytearray(shard.read_bytes())
    data[entry["offset"] + entry["size"] // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    return shard


# --- CRC-32C of TensorFlow checkpoints ------------------------------------------------------


def test_fast_crc32c_agrees_with_the_reference_and_tensorflows_mask() -> None:
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert fast_crc32c(data) == crc32c(data)
    assert fast_crc32c(b"123456789") == 0xE3069283  # RFC 3720
    crc = fast_crc32c(data)
    assert mask_crc(crc) == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32
    assert unmask_crc(mask_crc(crc)) == crc


def test_bit_flipped_shard_fails_verify_and_load_naming_file_and_tensor(
    openai_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_cli(capsys, "verify", str(openai_folder), "--no-known-answer")
    assert code == 0, out
    assert "ok    crc32c: 28 tensors match the CRC-32C in model.ckpt.index" in out

    tensor = "model/h1/attn/c_attn/w"
    shard = flip_bit_in(openai_folder / "model.ckpt", tensor)
    monkeypatch.setenv(CHECK_CRC_ENV, "0")  # verify checks whatever the environment says
    code, out, _ = run_cli(capsys, "verify", str(openai_folder), "--no-known-answer")
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("  FAIL  crc32c: ")]
    assert len(failed) == 1 and str(shard) in failed[0] and repr(tensor) in failed[0]
    assert "fails its CRC-32C check" in failed[0]

    monkeypatch.delenv(CHECK_CRC_ENV)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(openai_folder)
    message = str(info.value)
    assert "\n" not in message and str(shard) in message and repr(tensor) in message
    code, _, err = run_cli(capsys, "info", str(openai_folder))
    assert code == 0, err  # info reads headers only: no data, no CRC

    monkeypatch.setenv(CHECK_CRC_ENV, "0")  # the opt-out: the damaged weights load as they are
    assert load_checkpoint(openai_folder).config.n_layer == CONFIG.n_layer


def test_truncated_index_is_named_as_truncated(
    openai_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = openai_folder / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-10])
    for target in (openai_folder, index, openai_folder / "model.ckpt"):
        code, _, err = run_cli(capsys, "info", str(target))
        line = one_error_line(err, "info")
        assert code == 2 and f"{index} is truncated or corrupt" in line, line
        assert "no checkpoint found" not in line


def test_a_trillion_shards_are_not_statted(tmp_path: Path, state: Tensors) -> None:
    claim = 10**12
    arrays = openai_arrays(state, CONFIG)
    folder = tmp_path / "openai"
    write_tf_bundle_raw(folder / "model.ckpt", arrays, num_shards=claim)
    (folder / "hparams.json").write_text(json.dumps(openai_hparams(CONFIG)))
    start = time.perf_counter()
    with time_limit(5):
        model = load_checkpoint(folder)
    assert time.perf_counter() - start < 5
    assert torch.equal(model.tok_emb.weight, state["wte.weight"])

    # An entry in a shard past the claimed count is corrupt, said at once.
    write_tf_bundle_raw(folder / "model.ckpt", arrays, num_shards=2, shard_of={"model/wpe": 7})
    with pytest.raises(CheckpointError, match=r"tensor 'model/wpe' is in shard 7 of 2"):
        load_checkpoint(folder / "model.ckpt")


# --- files that are not files ---------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_at_once(device: str, tmp_path: Path) -> None:
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    code, _, err = run_cli_forked(tmp_path, "info", device)
    line = one_error_line(err, "info")
    assert code == 2 and f"{device} is a character device, not a regular file" in line


def test_fifos_are_refused_without_waiting_for_a_writer(
    tmp_path: Path, openai_folder: Path
) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    code, _, err = run_cli_forked(tmp_path, "info", str(fifo))
    assert code == 2 and "is a named pipe (FIFO), not a regular file" in one_error_line(err, "info")
    code, out, _ = run_cli_forked(tmp_path, "verify", str(fifo), "--no-known-answer")
    assert code == 1 and f"FAIL  load: CheckpointError: {fifo} is a named pipe" in out

    # A pipe standing in for a data shard, and a folder holding only a pipe.
    shard = openai_folder / "model.ckpt.data-00000-of-00001"
    shard.unlink()
    os.mkfifo(shard)
    code, _, err = run_cli_forked(tmp_path, "info", str(openai_folder))
    assert code == 2 and f"{shard} is a named pipe" in one_error_line(err, "info")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    os.mkfifo(lonely / "model.safetensors")
    code, _, err = run_cli_forked(tmp_path, "info", str(lonely))
    assert code == 2 and "no checkpoint found" in one_error_line(err, "info")


# --- safetensors: the format's rules, checked against the library ---------------------------


def _safetensors_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _rewrite_header(path: Path, edit: Callable[[dict], object], raw: str | None = None) -> None:
    """Replace the header (``edit`` changes the parsed dict, or ``raw`` is the text), data kept."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    text = (raw or json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


def _library_refuses(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                f.get_tensor(key)
    except Exception:
        return True
    return False


def _set(name: str, key: str, value: object) -> Callable[[dict], None]:
    return lambda h: h[name].__setitem__(key, value)


HOSTILE_HEADERS: dict[str, tuple[Callable[[dict], object], str | None, str]] = {
    "negative offset": (_set("b", "data_offsets", [-8, 8]), None, "not two non-negative"),
    "overlapping tensors": (_set("b", "data_offsets", [8, 24]), None, "overlaps the tensor"),
    "gap between tensors": (_set("a", "data_offsets", [0, 16]), None, "does not fill"),
    "float shape": (_set("b", "shape", [4.0]), None, "not a list of non-negative integers"),
    "bool shape": (_set("b", "shape", [True, 4]), None, "not a list of non-negative integers"),
    "negative shape": (_set("b", "shape", [-4]), None, "not a list of non-negative integers"),
    "offsets reversed": (_set("b", "data_offsets", [40, 24]), None, "before it begins"),
    "size is not numel*itemsize": (_set("b", "shape", [5]), None, "does not fill its 16 bytes"),
    "unknown dtype": (_set("b", "dtype", "F128"), None, "unknown dtype 'F128'"),
    "missing offsets": (lambda h: h["b"].pop("data_offsets"), None, "needs dtype, shape"),
    "metadata not strings": (
        lambda h: h.__setitem__("__metadata__", {"n_layer": 2}),
        None,
        "__metadata__ must map strings to strings",
    ),
    "nested 100k deep": (lambda h: None, "[" * 100_000 + "]" * 100_000, "corrupt safetensors"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_safetensors_rules_match_the_library(tmp_path: Path, case: str) -> None:
    path = _safetensors_file(tmp_path)
    assert not _library_refuses(path)
    load = lambda: __import__(  # noqa: E731
        "gpt2load.formats.safetensors_reader", fromlist=["SafetensorsSource"]
    ).SafetensorsSource((path,))
    assert set(load().entries()) == {"a", "b"}
    edit, raw, expected = HOSTILE_HEADERS[case]
    _rewrite_header(path, edit, raw)
    with pytest.raises(CheckpointError) as info:
        load()
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message
    if case != "metadata not strings":  # the library reads metadata lazily
        assert _library_refuses(path), f"safetensors accepts {case}; so should we"


def test_trailing_bytes_and_a_1e999_shape_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _safetensors_file(tmp_path)
    path.write_bytes(path.read_bytes() + bytes(8))
    assert _library_refuses(path)
    code, _, err = run_cli(capsys, "info", str(path))
    assert code == 2 and "cover 40 data bytes but the file holds 48" in one_error_line(err, "info")

    path = _safetensors_file(tmp_path)
    placeholder = '"HUGE"'
    raw = json.dumps({**_header_of(path), "b": {**_header_of(path)["b"], "shape": "HUGE"}})
    _rewrite_header(path, lambda h: None, raw.replace(placeholder, "[1e999]"))
    assert _library_refuses(path)
    code, _, err = run_cli(capsys, "info", str(path))
    line = one_error_line(err, "info")
    assert code == 2 and "tensor 'b' has shape [inf]" in line and str(path) in line


def _header_of(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def test_overlapping_parameters_can_no_longer_share_memory(tmp_path: Path, state: Tensors) -> None:
    """Two LayerNorm gains pointed at the same bytes once loaded as one shared tensor."""
    path = tmp_path / "model.safetensors"
    save_file(hf_file_state_dict(state, CONFIG), str(path))
    header = _header_of(path)
    _rewrite_header(
        path, _set("h.1.ln_1.weight", "data_offsets", header["h.0.ln_1.weight"]["data_offsets"])
    )
    with pytest.raises(CheckpointError, match="overlaps the tensor before it|leaves a gap"):
        load_checkpoint(path, contiguous=True)


# --- PyTorch pickles ------------------------------------------------------------------------


def test_stride_zero_vocabulary_of_2_33_is_refused_quickly(tmp_path: Path, state: Tensors) -> None:
    files = hf_file_state_dict(state, CONFIG)
    files["wte.weight"] = torch.zeros(1).expand(2**33, CONFIG.n_embd)
    files["lm_head.weight"] = files["wte.weight"]
    path = tmp_path / "pytorch_model.bin"
    torch.save(files, path)
    assert path.stat().st_size < 2_000_000
    start = time.perf_counter()
    code, _, err = run_cli_forked(tmp_path, "info", str(path))
    line = one_error_line(err, "info")
    assert code == 2 and time.perf_counter() - start < 5
    assert f"{path} is corrupt: tensor 'wte.weight' of shape [8589934592, 32]" in line
    assert "stride-0 or overlapping" in line


NOT_PLAIN: dict[str, tuple[Callable[[Tensors], dict], str]] = {
    "a key that is no name": (
        lambda t: {**t, 5: torch.zeros(1)},
        "its state dict has the key 5 (int), not a tensor name",
    ),
    "a sparse tensor": (
        lambda t: {**t, "ln_f.weight": t["ln_f.weight"].to_sparse()},
        "tensor 'ln_f.weight' is a sparse tensor; save it with .to_dense()",
    ),
    "a meta tensor": (
        lambda t: {**t, "ln_f.weight": torch.empty(CONFIG.n_embd, device="meta")},
        "tensor 'ln_f.weight' is a meta tensor, which holds no data",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_PLAIN))
def test_a_pickle_of_what_is_no_plain_state_dict_is_one_line(
    tmp_path: Path, state: Tensors, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pickle may key tensors by integers and hold sparse or meta tensors, whose storage
    torch will not even show: each is named, not a traceback."""
    edit, expected = NOT_PLAIN[case]
    path = tmp_path / "pytorch_model.bin"
    torch.save(edit(hf_file_state_dict(state, CONFIG)), path)
    code, _, err = run_cli(capsys, "info", str(path))
    line = one_error_line(err, "info")
    assert code == 2 and str(path) in line and expected in line, line


def _aliased(files: Tensors) -> dict[str, Tensors]:
    """State dicts in which a parameter shares memory with another, or with itself."""
    wte = files["wte.weight"]
    rows = torch.cat([wte, wte[:1]])  # an embedding and a head one row apart in one storage
    return {
        "one tensor twice": {**files, "h.1.ln_1.weight": files["h.0.ln_1.weight"]},
        "a row of another": {**files, "h.0.ln_2.bias": files["wpe.weight"][3]},
        "a head shifted along the embedding": {
            **files,
            "wte.weight": rows[:-1],
            "lm_head.weight": rows[1:],
        },
        "elements overlapping themselves": {
            **files,
            "h.0.attn.c_attn.weight": torch.randn(4096).as_strided((32, 96), (1, 1)),
        },
    }


def test_parameters_sharing_memory_are_refused_a_tied_head_is_not(
    tmp_path: Path, state: Tensors, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.save keeps aliasing (safetensors cannot hold it): two LayerNorm gains that are one
    tensor would take two updates a step. Only the tied head may be the embedding itself."""
    path = write_hf_bin(tmp_path, state, CONFIG, lm_head=True)  # the head is the embedding
    files = torch.load(path, weights_only=True)
    model = load_checkpoint(path, contiguous=True)
    assert torch.equal(model.out_head.weight, state["wte.weight"])
    expected = {
        "one tensor twice": ("'h.0.ln_1.weight'", "'h.1.ln_1.weight'", "share memory"),
        "a row of another": ("'wpe.weight'", "'h.0.ln_2.bias'", "share memory"),
        "a head shifted along the embedding": ("'wte.weight'", "'lm_head.weight'", "share"),
        "elements overlapping themselves": ("'h.0.attn.c_attn.weight'", "[1, 1]", "overlap"),
    }
    for case, tensors in _aliased(files).items():
        torch.save(tensors, path)
        code, _, err = run_cli(capsys, "info", str(path))
        line = one_error_line(err, "info")
        assert code == 2 and str(path) in line, (case, line)
        assert all(word in line for word in expected[case]), (case, line)
        with pytest.raises(CheckpointError, match="share memory|overlap one another"):
            load_checkpoint(path, contiguous=True)  # as finetune loads


def test_corrupt_pickles_are_called_corrupt_not_code(
    tmp_path: Path, state: Tensors, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.bin"
    torch.save({"wte.weight": state["wte.weight"]}, good, _use_new_zipfile_serialization=False)
    legacy = good.read_bytes()
    zipped = tmp_path / "zipped.bin"
    torch.save({"wte.weight": state["wte.weight"]}, zipped)
    with zipfile.ZipFile(zipped) as archive:
        pkl_name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        pkl = archive.read(pkl_name)
    broken_zip = tmp_path / "broken_zip"
    broken_zip.mkdir()
    with zipfile.ZipFile(broken_zip / "pytorch_model.bin", "w") as archive:
        archive.writestr(pkl_name, pkl[:2] + b"\xff" * 40)
    cases = {
        "garbage after the header": legacy[:2] + bytes(range(256)) * 4,
        "legacy stream cut short": legacy[: len(legacy) // 2],
        "zip cut short": zipped.read_bytes()[:-30],
    }
    paths = [broken_zip / "pytorch_model.bin"]
    for i, data in enumerate(cases.values()):
        path = tmp_path / f"case{i}" / "pytorch_model.bin"
        path.parent.mkdir()
        path.write_bytes(data)
        paths.append(path)
    for path in paths:
        code, _, err = run_cli(capsys, "info", str(path))
        line = one_error_line(err, "info")
        assert code == 2 and f"{path} is truncated or corrupt" in line, line
        assert "import or call code" not in line and "refusing" not in line


# --- what configs and metadata claim ---------------------------------------------------------


def _with_config(edit: Callable[[dict], object]) -> Callable[[Path, Tensors], Path]:
    def write(folder: Path, state: Tensors) -> Path:
        write_hf_safetensors(folder, state, CONFIG)
        config = json.loads((folder / "config.json").read_text())
        edited = edit(config)
        text = edited if isinstance(edited, str) else json.dumps(edited)
        (folder / "config.json").write_text(text)
        return folder

    return write


def _hparams_layers(folder: Path, state: Tensors) -> Path:
    write_openai_tf(folder, state, CONFIG)
    hparams = json.loads((folder / "hparams.json").read_text())
    (folder / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 10**6}))
    return folder


def _hparams_edit(changes: dict) -> Callable[[Path, Tensors], Path]:
    """OpenAI's folder (written without TensorFlow) with ``changes`` in its hparams.json."""

    def write(folder: Path, state: Tensors) -> Path:
        write_openai_tf_raw(folder, state, CONFIG)
        hparams = json.loads((folder / "hparams.json").read_text())
        (folder / "hparams.json").write_text(json.dumps({**hparams, **changes}))
        return folder

    return write


def _native_metadata(config: str) -> Callable[[Path, Tensors], Path]:
    def write(folder: Path, state: Tensors) -> Path:
        path = write_native(folder / "model.safetensors", state, CONFIG)
        with safe_open(str(path), "pt") as stored:
            tensors = {k: stored.get_tensor(k) for k in stored.keys()}  # noqa: SIM118
            metadata = {**stored.metadata(), "config": config}
        save_file(tensors, str(path), metadata=metadata)
        return folder

    return write


NATIVE_CONFIG = json.dumps(
    {
        "n_layer": CONFIG.n_layer,
        "n_head": CONFIG.n_head,
        "n_embd": CONFIG.n_embd,
        "context_length": CONFIG.context_length,
        "vocab_size": CONFIG.vocab_size,
    }
)
CLAIMS = {
    "n_embd an object": (_with_config(lambda c: {**c, "n_embd": {}}), "says n_embd={}"),
    "a million layers": (
        _with_config(lambda c: {**c, "n_layer": 10**6}),
        "says n_layer=1000000, but it stores 2 blocks",
    ),
    "a float of 10^400": (
        _with_config(lambda c: json.dumps(c)[:-1] + ', "layer_norm_epsilon": 1e400}'),
        "layer_norm_eps must be a number in (0, 1), got inf",
    ),
    "nested 100k deep": (
        _with_config(lambda c: '{"n_layer": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "config.json is not valid JSON",
    ),
    "not an object": (_with_config(lambda c: "[1, 2]"), "config.json is not a JSON object"),
    "hparams.json: a million layers": (_hparams_layers, "hparams.json says n_layer=1000000"),
    "hparams.json: a wrong n_ctx": (
        _hparams_edit({"n_ctx": 1024}),
        "hparams.json says n_ctx=1024, but its tensors show n_ctx=64",
    ),
    "n_positions a string": (
        _with_config(lambda c: {**c, "n_positions": "64"}),
        "config.json says n_positions='64', but n_positions must be an integer",
    ),
    "qkv_bias a string": (
        _with_config(lambda c: {**c, "qkv_bias": "yes"}),
        "config.json says qkv_bias='yes', but qkv_bias must be a boolean",
    ),
    "native metadata: bias a string": (
        _native_metadata(NATIVE_CONFIG[:-1] + ', "bias": "false"}'),
        "says bias='false', but bias must be a boolean",
    ),
    "native metadata not an object": (_native_metadata("[1, 2]"), "not a JSON object"),
    "native metadata: a million layers": (
        _native_metadata(NATIVE_CONFIG.replace('"n_layer": 2', '"n_layer": 1000000')),
        "says n_layer=1000000, but it stores 2 blocks",
    ),
}


@pytest.mark.parametrize("case", sorted(CLAIMS))
def test_what_a_config_claims_is_one_line_in_info_and_verify(
    tmp_path: Path, state: Tensors, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write, expected = CLAIMS[case]
    folder = write(tmp_path / "ckpt", state)
    code, _, err = run_cli(capsys, "info", str(folder), seconds=5)
    line = one_error_line(err, "info")
    assert code == 2 and expected in line and str(folder) in line, line
    code, out, err = run_cli(capsys, "verify", str(folder), "--no-known-answer", seconds=5)
    assert code == 1 and "Traceback" not in out + err
    assert expected in next(ln for ln in out.splitlines() if "FAIL  load:" in ln)


# --- float8 ---------------------------------------------------------------------------------


def test_float8_weights_give_one_line_in_verify_and_generate(
    tmp_path: Path, state: Tensors, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.safetensors"
    tensors = hf_file_state_dict(state, CONFIG)
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in tensors.items()}, str(path))
    code, out, err = run_cli(capsys, "verify", str(path), "--no-known-answer")
    assert code == 1 and "Traceback" not in out + err
    load_line = next(line for line in out.splitlines() if "FAIL  load:" in line)
    assert str(path) in load_line and "float8_e4m3fn" in load_line
    assert "convert the checkpoint to bf16, fp16 or fp32" in load_line
    code, _, err = run_cli(capsys, "generate", str(path), "--prompt", "a", "--max-new-tokens", "2")
    line = one_error_line(err, "generate")
    assert code == 2 and "float8" in line, line
