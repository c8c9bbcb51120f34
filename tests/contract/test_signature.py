"""Pixel scaling as the signature expects it: uint8 MNIST pixels to float32 in [0, 1] with a channel."""

from __future__ import annotations

import numpy as np
import pytest

from contract.signature import IMAGE_SHAPE, scale_pixels

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 28, 28, 1)])
def test_a_batch_becomes_float32_in_unit_range_with_a_channel(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    scaled = scale_pixels(pixels)
    assert scaled.shape == (5, *IMAGE_SHAPE) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.reshape(5, -1), pixels.reshape(5, -1) / 255.0, rtol=1e-6)


def test_full_ink_is_one_and_paper_is_zero() -> None:
    pixels = np.array([[0, 255]], dtype=np.uint8).repeat(14, axis=1).repeat(28, axis=0)
    scaled = scale_pixels(pixels)
    assert scaled.shape == IMAGE_SHAPE
    assert scaled.min() == 0.0 and scaled.max() == 1.0
