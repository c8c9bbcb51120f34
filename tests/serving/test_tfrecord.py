"""Warm-up files are read without TensorFlow, record for record as TensorFlow writes them, and a damaged
one is refused with where the damage is."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import tensorflow as tf

from serving import tfrecord


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[bytes]]:
    records = [b"", b"one", bytes(range(256)) * 40]
    path = tmp_path / "warmup"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path, records


@pytest.mark.fast
def test_records_read_as_tensorflow_wrote_them(written: tuple[Path, list[bytes]]) -> None:
    path, records = written
    assert list(tfrecord.records(path)) == records


@pytest.mark.fast
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-3], "truncated record at byte 35"),
        (lambda data: data[:5], "truncated record header at byte 0"),
        (lambda data: data[:30] + bytes([data[30] ^ 1]) + data[31:], "corrupted record at byte 16"),
        (lambda data: data[:2] + b"\xff" + data[3:], "corrupted record length at byte 0"),
        (
            lambda data: (
                struct.pack("<Q", 1 << 60)
                + tfrecord.masked_crc(struct.pack("<Q", 1 << 60)).to_bytes(4, "little")
            ),
            "truncated record at byte 0",
        ),
    ],
)
def test_a_damaged_file_is_refused_where_it_is_damaged(
    written: tuple[Path, list[bytes]], damage: object, message: str
) -> None:
    path, _ = written
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(tfrecord.RecordError, match=message):
        list(tfrecord.records(path))
