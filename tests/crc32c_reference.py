"""CRC-32C and TensorFlow's mask written out in pure Python: the reference our fast CRC (the C
of google-crc32c) and our unmasking are tested against, and how tests write TF bundles."""

from __future__ import annotations

import functools

# CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table row per byte value.
_CRC_TABLE = [
    functools.reduce(lambda c, _: (c >> 1) ^ (0x82F63B78 if c & 1 else 0), range(8), i)
    for i in range(256)
]


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """TensorFlow's (LevelDB's) mask of a CRC stored beside its data."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
