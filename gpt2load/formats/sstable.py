"""A reader for the sorted-string table that TensorFlow writes as ``*.index``.

TensorFlow's checkpoint index is a LevelDB-style table: data blocks of
prefix-compressed key/value entries, an index block pointing at them, and a
48-byte footer ending in a magic number. Each block carries a one-byte
compression type and a masked CRC-32C, which is checked here (with
``google-crc32c``; the pure-Python ``crc32c`` below is its reference and fallback).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION = 0


class TableError(Exception):
    """The bytes are not a well-formed table (the caller adds which file)."""


def has_table_magic(tail: bytes) -> bool:
    return len(tail) >= 8 and struct.unpack("<Q", tail[-8:])[0] == TABLE_MAGIC


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise TableError("varint runs past the end of its buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TableError("varint longer than 10 bytes")


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C in pure Python: the reference the fast implementation is tested against."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def fast_crc32c(data: bytes) -> int:
    """CRC-32C with ``google-crc32c`` (hardware-accelerated C) when it is installed."""
    try:
        import google_crc32c
    except ImportError:  # pragma: no cover - it is a dependency
        return crc32c(data)
    return google_crc32c.value(bytes(data))


def mask_crc(crc: int) -> int:
    """TensorFlow's (LevelDB's) mask, so a CRC stored beside its data is not a CRC of it."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = varint(handle, 0)
    size, _ = varint(handle, pos)
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise TableError(f"block at {offset}+{size} lies past the end of the table")
    contents = data[offset:end]
    kind = data[end]
    (stored_crc,) = struct.unpack("<I", data[end + 1 : end + 5])
    if fast_crc32c(data[offset : end + 1]) != unmask_crc(stored_crc):
        raise TableError(f"block at {offset}+{size} fails its CRC-32C check")
    if kind != NO_COMPRESSION:
        raise TableError(f"block at {offset} uses compression type {kind}, which is not supported")
    return contents


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TableError("block too short")
    (restarts,) = struct.unpack("<I", block[-4:])
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise TableError("block restart array is larger than the block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        value_len, pos = varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise TableError("block entry runs past the end of its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_len]
        pos += value_len


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table, in key order."""
    if len(data) < FOOTER_SIZE or not has_table_magic(data):
        raise TableError("it ends without the table footer (truncated, or not a TensorFlow index)")
    footer = data[-FOOTER_SIZE:]
    _, pos = varint(footer, 0)  # metaindex offset
    _, pos = varint(footer, pos)  # metaindex size
    index_offset, pos = varint(footer, pos)
    index_size, _ = varint(footer, pos)
    index_handle = _encode_handle(index_offset, index_size)
    for _, handle in _entries(_block(data, index_handle)):
        yield from _entries(_block(data, handle))


def _encode_handle(offset: int, size: int) -> bytes:
    out = bytearray()
    for value in (offset, size):
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)
