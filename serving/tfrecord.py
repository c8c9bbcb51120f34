"""TFRecord files (a warm-up file's format) read without TensorFlow, their checksums checked as
TensorFlow's reader checks them.

Each record: its length (8 bytes, little-endian), the length's masked CRC-32C (4), the data, the
data's masked CRC-32C (4). TensorFlow's record_reader.cc and crc32c.h define the format and the mask.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """CRC-32C rotated right by 15 bits plus a constant: a CRC of data holding CRCs stays useful."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordError(ValueError):
    """A TFRecord file that is truncated or corrupt, and where."""


def records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file (uncompressed), read one at a time, each checked against its
    checksums; a length past the file's end is refused before anything is read for it."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        offset = 0
        while offset < size:
            header = file.read(12)
            if len(header) < 12:
                raise RecordError(f"{path}: truncated record header at byte {offset}")
            (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc(header[:8]) != length_crc:
                raise RecordError(f"{path}: corrupted record length at byte {offset}")
            if offset + 12 + length + 4 > size:
                raise RecordError(f"{path}: truncated record at byte {offset}")
            record, footer = file.read(length), file.read(4)
            if masked_crc(record) != struct.unpack("<I", footer)[0]:
                raise RecordError(f"{path}: corrupted record at byte {offset}")
            yield record
            offset += 12 + length + 4
