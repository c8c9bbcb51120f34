"""Images as people make them, built from real MNIST strokes (so the right answer is known)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, fmt)
    return buffer.getvalue()


def photo_of(
    digit: np.ndarray,
    size: tuple[int, int] = (480, 640),
    scale: int = 10,
    at: tuple[int, int] = (60, 90),
    paper: float = 225,
    ink: float = 0.75,
    light_slope: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A 28x28 MNIST digit written dark on light paper, scaled, placed off-centre, lit and noisy."""
    big = np.asarray(
        Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR), float
    )
    canvas = np.zeros(size)
    canvas[at[0] : at[0] + big.shape[0], at[1] : at[1] + big.shape[1]] = big
    light = paper + light_slope * np.linspace(-0.5, 0.5, size[1])[None, :]
    noisy = light - canvas * ink + np.random.default_rng(seed).normal(0, noise, size)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture
def make_photo() -> Callable[..., np.ndarray]:
    return photo_of
