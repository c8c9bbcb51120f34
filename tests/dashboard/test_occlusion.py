"""dashboard/occlusion.py in process: one request carries every blanked copy, and the heat lies where
the ink that decides the answer is, against a fake model whose answer depends on one stroke only."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.occlusion import PATCH, POSITIONS, heat_map, occluded, overlay

pytestmark = pytest.mark.fast

STROKE = (slice(4, 24), slice(12, 16))  # a vertical bar: what makes this "a one"
BLOB = (slice(0, 4), slice(0, 4))  # ink in a corner that the fake model ignores


def digit_image() -> np.ndarray:
    image = np.zeros((28, 28, 1), np.float32)
    image[STROKE] = 1.0
    image[BLOB] = 1.0
    return image


class OneStrokeModel:
    """P(1) grows with the ink in the stroke's place; everything else goes to 7. Records its calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        ink = images[:, STROKE[0], STROKE[1], 0].sum(axis=(1, 2)) / 80.0
        probabilities = np.zeros((len(images), 10), np.float32)
        probabilities[:, 1] = 0.1 + 0.9 * ink
        probabilities[:, 7] = 1.0 - probabilities[:, 1]
        return probabilities


def test_one_request_carries_the_image_and_every_blanked_copy() -> None:
    model = OneStrokeModel()
    heat_map(digit_image(), model)
    assert model.batches == [1 + len(POSITIONS)]
    batch = occluded(digit_image())
    assert len(batch) <= 64  # TF Serving refuses a request larger than max_batch_size
    np.testing.assert_array_equal(batch[0], digit_image())
    for copy, (y, x) in zip(batch[1:], POSITIONS, strict=True):
        assert not copy[y : y + PATCH, x : x + PATCH].any()  # the patch is blank...
        changed = np.argwhere(copy[..., 0] != batch[0][..., 0])
        assert ((changed >= (y, x)) & (changed < (y + PATCH, x + PATCH))).all()  # ...and nothing else moved


def test_the_heat_is_where_the_deciding_stroke_is() -> None:
    digit, heat = heat_map(digit_image(), OneStrokeModel())
    assert digit == 1
    assert heat.shape == (28, 28) and heat.max() == pytest.approx(1.0)
    assert heat[STROKE].mean() > 0.5
    assert heat[BLOB].max() < 0.1  # ink the answer does not depend on stays cold
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert 4 <= peak[0] < 24 and 10 <= peak[1] < 18


def test_the_overlay_is_a_larger_rgb_image() -> None:
    digit, heat = heat_map(digit_image(), OneStrokeModel())
    picture = overlay(digit_image(), heat)
    assert picture.shape == (112, 112, 3) and picture.dtype == np.uint8
    assert picture[:, :, 0].max() == 255  # the hottest place is full red
