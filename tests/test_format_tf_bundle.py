"""The pure-Python TensorFlow checkpoint reader returns exactly TensorFlow's bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2load.formats.tf_bundle import TFBundleSource, read_index, unmask_crc
from tests.checkpoint_factory import openai_arrays, random_hf_state_dict, write_tf_bundle
from tests.conftest import TINY_CONFIGS
from tests.crc32c_reference import crc32c

tf = pytest.importorskip("tensorflow", reason="TensorFlow is the reference for the TF reader")


def _tensorflow_reads(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _assert_same_bytes(prefix: Path) -> int:
    ours = TFBundleSource(prefix)
    theirs = _tensorflow_reads(prefix)
    assert set(ours.entries()) == set(theirs)
    for name, expected in theirs.items():
        tensor = ours.tensor(name)
        assert tuple(tensor.shape) == expected.shape, name
        got = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        assert got == np.ascontiguousarray(expected).tobytes(), name
    return len(theirs)


def test_gpt2_variables_are_byte_identical(tmp_path: Path) -> None:
    config = TINY_CONFIGS["odd"]
    prefix = write_tf_bundle(
        tmp_path / "model.ckpt", openai_arrays(random_hf_state_dict(config), config)
    )
    assert _assert_same_bytes(prefix) == 4 + 12 * config.n_layer


def test_every_numeric_dtype_scalars_and_empty_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((2, 2, 2)).astype(np.float16),
        "i32": rng.integers(-5, 5, 9).astype(np.int32),
        "i64": np.array([-(2**40), 2**40], dtype=np.int64),
        "i16": np.array([-3, 4], dtype=np.int16),
        "i8": np.array([-1, 1, 3], dtype=np.int8),
        "u8": np.array([0, 255], dtype=np.uint8),
        "flag": np.array([True, False, True]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "odd/offset": np.array([1.0, 2.0], dtype=np.float32),  # follows 1-byte data: misaligned
    }
    prefix = write_tf_bundle(tmp_path / "mixed", arrays)
    _assert_same_bytes(prefix)
    bf16 = tf.constant([1.5, -2.25, 3.0], dtype=tf.bfloat16)
    tf.raw_ops.SaveV2(
        prefix=str(tmp_path / "bf16"), tensor_names=["b"], shape_and_slices=[""], tensors=[bf16]
    )
    got = TFBundleSource(tmp_path / "bf16").tensor("b")
    assert got.dtype == torch.bfloat16 and got.tolist() == [1.5, -2.25, 3.0]


def test_index_spread_over_many_blocks(tmp_path: Path) -> None:
    """Thousands of long names push the index past one table block (and its restart points)."""
    arrays = {
        f"scope_{i:05d}/" + "x" * 120 + f"/v{i}": np.array([i], dtype=np.float32)
        for i in range(3000)
    }
    prefix = write_tf_bundle(tmp_path / "many", arrays)
    assert (tmp_path / "many.index").stat().st_size > 300_000
    assert _assert_same_bytes(prefix) == 3000


def test_entry_crcs_agree_with_the_data(tmp_path: Path) -> None:
    """The index's per-tensor CRC-32C (masked) is of the raw bytes the reader returns."""
    arrays = {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 3), dtype=np.float64)}
    prefix = write_tf_bundle(tmp_path / "crc", arrays)
    _, entries = read_index(tmp_path / "crc.index")
    source = TFBundleSource(prefix)
    for name, entry in entries.items():
        raw = source.tensor(name).reshape(-1).view(torch.uint8).numpy().tobytes()
        assert crc32c(raw) == unmask_crc(entry["crc32c"])


def test_crc32c_known_answer() -> None:
    # RFC 3720 test vector: 32 bytes of zeros.
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"123456789") == 0xE3069283
