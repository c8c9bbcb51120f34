"""Decoding refuses what is no image, or too large a one, from its header: each with its own error."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from client.decode import ImageError, Limits
from client.normalise import normalise_bytes
from tests.client.conftest import encode, photo_of
from trainer.data import Split


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"just some text, not pixels", "not an image file"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC is not supported: convert to PNG or JPEG"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", "AVIF is not supported: convert to PNG or JPEG"),
    ],
)
def test_bad_uploads_get_specific_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        normalise_bytes(data)


def test_truncated_file(mnist_test: Split) -> None:
    data = encode(photo_of(mnist_test.images[0]))
    with pytest.raises(ImageError, match="truncated or corrupt"):
        normalise_bytes(data[: len(data) // 2])


def test_byte_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match="over the limit of 1,000 bytes: resize or crop it"):
        noise = np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8)
        normalise_bytes(encode(noise), Limits(max_bytes=1000))


def test_decompression_bomb_is_refused_in_milliseconds() -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 400 megapixels in ~60 kB
    started = time.perf_counter()
    with pytest.raises(ImageError, match="pixels"):
        normalise_bytes(buffer.getvalue())
    assert time.perf_counter() - started < 0.5
    with pytest.raises(ImageError, match="over the limit of 1,000,000: resize or crop it"):
        normalise_bytes(encode(np.zeros((1001, 1000), np.uint8)), Limits(max_pixels=1_000_000))


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ((1, 25_000_000), "a side over the limit"),
        ((20_000, 10), "a side over the limit"),
        ((10, 1200), "100 times"),
    ],
)
def test_thin_or_long_images_are_refused_from_their_header(size: tuple[int, int], why: str) -> None:
    """A few kilobytes of PNG can claim a picture 1 x 25,000,000 pixels (under the pixel limit), which
    took seconds and gigabytes to normalise: its header is enough to refuse it."""
    buffer = io.BytesIO()
    Image.new("1", size).save(buffer, "PNG")
    with pytest.raises(ImageError, match=why):
        normalise_bytes(buffer.getvalue())
