"""The `plus` network's augmentation: what it must keep (shape, dtype, range, the digit inside the frame),
what it must change, and that each of its knobs does what its name says, checked on images whose result
can be worked out by hand (a single pixel, a centred square) and on real MNIST digits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from contract.signature import scale_pixels
from tests.conftest import DATA_DIR
from trainer.augment import Augmentation, augment_batch
from trainer.data import load_pair

pytestmark = pytest.mark.fast

# Every random knob at zero: the map is the identity and no stroke is changed.
NOTHING = Augmentation(
    max_rotation_deg=0.0,
    max_shear=0.0,
    scale_range=(1.0, 1.0),
    max_aspect_change=0.0,
    max_shift_px=0.0,
    thicken_prob=0.0,
    thin_prob=0.0,
    elastic_prob=0.0,
)
DEFAULT = Augmentation()  # as training draws them
CENTRE = 13.5  # the centre of a 28-pixel axis, in pixel-index coordinates


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """The first 256 MNIST test digits as the pipeline feeds them: float32 [256, 28, 28, 1] in [0, 1]."""
    test = load_pair(DATA_DIR, "t10k", verify=False)
    return scale_pixels(test.images[:256])


def augmented(images: np.ndarray, aug: Augmentation = DEFAULT, seed: int = 0) -> np.ndarray:
    """One seeded augmentation of a batch, so a failure here reproduces on rerun."""
    tf.random.set_seed(seed)
    return augment_batch(tf.constant(images), aug).numpy()


def square(top: int, side: int) -> np.ndarray:
    """float32 [1, 28, 28, 1], a filled square of `side` pixels with its top-left corner at (top, top)."""
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    image[0, top : top + side, top : top + side, 0] = 1.0
    return image


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """[b, 2] (row, column) of each image's ink."""
    rows, cols = np.indices((28, 28))
    mass = images[..., 0].sum(axis=(1, 2))
    return np.stack(
        [(images[..., 0] * rows).sum(axis=(1, 2)) / mass, (images[..., 0] * cols).sum(axis=(1, 2)) / mass],
        axis=1,
    )


def test_shape_dtype_and_range_are_kept(digits: np.ndarray) -> None:
    """The model's input contract: float32 [b, 28, 28, 1] in [0, 1] (bilinear resampling and max/min
    filters cannot leave it, but a wrong fill value or output shape would)."""
    out = augmented(digits)
    assert out.shape == digits.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.9  # strokes stay ink, not a faded copy


def test_values_stay_in_range_on_noise_too() -> None:
    """Full-range noise reaches the frame's edge everywhere, where the fill value comes in."""
    noise = np.random.default_rng(0).uniform(0.0, 1.0, (64, 28, 28, 1)).astype(np.float32)
    out = augmented(noise)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_every_digit_is_changed(digits: np.ndarray) -> None:
    """With the default knobs no image comes through untouched (a no-op augmentation would pass every
    other check here)."""
    out = augmented(digits)
    changed = np.abs(out - digits).max(axis=(1, 2, 3)) > 0.1
    assert changed.all(), f"{(~changed).sum()} of {len(digits)} digits unchanged"


def test_the_same_seed_gives_the_same_batch_and_another_seed_another(digits: np.ndarray) -> None:
    """Training seeds TensorFlow (keras.utils.set_random_seed); a rerun must draw the same warps."""
    first, again, other = augmented(digits, seed=7), augmented(digits, seed=7), augmented(digits, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_it_runs_traced_with_an_unknown_batch_size(digits: np.ndarray) -> None:
    """tf.data's map traces it with batch size None (the last batch of an epoch is smaller)."""
    traced = tf.function(augment_batch, input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    for batch in (digits[:5], digits[:1]):
        out = traced(tf.constant(batch)).numpy()
        assert out.shape == batch.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_with_every_knob_at_zero_the_image_is_returned_exactly(digits: np.ndarray) -> None:
    """The map is built about the image centre: with no rotation, shear, scale or shift it reads each
    output pixel from the same input pixel, so nothing moves or blurs."""
    np.testing.assert_array_equal(augmented(digits, NOTHING), digits)


@pytest.mark.parametrize(("scale", "expected_side"), [(1.5, 12), (0.5, 4)])
def test_scale_grows_the_digit_by_the_drawn_factor(scale: float, expected_side: int) -> None:
    """An 8-pixel square centred in the frame comes out `scale` times as wide: 12 pixels at 1.5, 4 at 0.5
    (the transform maps output to input, so getting the direction wrong would swap the two)."""
    image = square(10, 8)
    out = augmented(image, dataclasses.replace(NOTHING, scale_range=(scale, scale)))
    width = (out[0, 14, :, 0] > 0.5).sum()  # ink along a row through the centre
    assert width == expected_side
    assert out.sum() == pytest.approx(image.sum() * scale**2, rel=0.1)


def test_rotation_shear_and_aspect_turn_about_the_centre() -> None:
    """A square centred in the frame stays centred whatever angle, shear and aspect are drawn, so only
    the shift knob ever moves a digit."""
    batch = np.repeat(square(12, 4), 64, axis=0)
    aug = dataclasses.replace(NOTHING, max_rotation_deg=12.0, max_shear=0.15, max_aspect_change=0.1)
    out = augmented(batch, aug)
    assert not np.array_equal(out, batch)
    np.testing.assert_allclose(centre_of_mass(out), CENTRE, atol=1e-3)


def test_the_shift_moves_a_digit_by_at_most_its_bound() -> None:
    aug = dataclasses.replace(NOTHING, max_shift_px=2.0)
    out = augmented(np.repeat(square(12, 4), 256, axis=0), aug)
    offsets = centre_of_mass(out) - CENTRE
    assert np.abs(offsets).max() <= 2.0 + 1e-3
    assert np.abs(offsets).max() > 1.0  # 256 draws of up to 2 px: some shift is large


def test_thickening_dilates_one_pixel_into_a_2x2_block() -> None:
    """The 2x2 max filter (SAME padding, stride 1) writes each pixel's ink up and to the left."""
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    image[0, 10, 10, 0] = 1.0
    out = augmented(image, dataclasses.replace(NOTHING, thicken_prob=1.0))
    np.testing.assert_array_equal(out[0, ..., 0], square(9, 2)[0, ..., 0])


def test_thinning_erodes_a_2x2_block_to_one_pixel() -> None:
    image = square(9, 2)
    out = augmented(image, dataclasses.replace(NOTHING, thin_prob=1.0))
    expected = np.zeros((28, 28), dtype=np.float32)
    expected[9, 9] = 1.0
    np.testing.assert_array_equal(out[0, ..., 0], expected)


def test_stroke_changes_hit_about_their_probability(digits: np.ndarray) -> None:
    """thicken_prob/thin_prob are per image: with the defaults (0.15 each) about 70% of strokes are left
    as they are; 256 images put a miscounted share (all or none) far outside these bounds."""
    out = augmented(digits, dataclasses.replace(NOTHING, thicken_prob=0.15, thin_prob=0.15))
    ratio = out.sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    thicker, thinner = (ratio > 1.0 + 1e-6).mean(), (ratio < 1.0 - 1e-6).mean()
    assert 0.05 < thicker < 0.3 and 0.05 < thinner < 0.3


def test_a_digit_stays_inside_the_frame_even_at_the_largest_scale(digits: np.ndarray) -> None:
    """At scale 1.12 (the top of the range) with the largest shifts, rotation and shear, a digit's ink
    grows by 1.12^2 if none of it is pushed out of the 28x28 frame. Measured against that, every digit
    keeps at least 85% of its ink and the typical one nearly all: a label stays readable."""
    aug = dataclasses.replace(
        Augmentation(), scale_range=(1.12, 1.12), thicken_prob=0.0, thin_prob=0.0, elastic_prob=0.0
    )
    kept = augmented(digits, aug).sum(axis=(1, 2, 3)) / (digits.sum(axis=(1, 2, 3)) * 1.12**2)
    assert kept.min() >= 0.85, f"digit {kept.argmin()} keeps only {kept.min():.0%} of its ink"
    assert np.median(kept) >= 0.97


ELASTIC_ONLY = dataclasses.replace(NOTHING, elastic_prob=1.0)


def test_an_elastic_field_of_no_strength_leaves_every_pixel_where_it_was(digits: np.ndarray) -> None:
    still = dataclasses.replace(ELASTIC_ONLY, elastic_alpha=(0.0, 0.0))
    np.testing.assert_allclose(augmented(digits[:32], still), digits[:32], atol=1e-6)


def test_elastic_distortion_bends_strokes_by_a_pixel_or_two_and_keeps_the_ink(digits: np.ndarray) -> None:
    """Simard's field (alpha 34-38, sigma 4-6) moves pixels a pixel or two: every digit changes, none
    moves as a whole by more than a few pixels, and the ink is neither lost nor doubled."""
    bent = augmented(digits, ELASTIC_ONLY)
    assert (np.abs(bent - digits).sum(axis=(1, 2, 3)) > 1.0).all()
    moved = np.linalg.norm(centre_of_mass(bent) - centre_of_mass(digits), axis=1)
    assert moved.max() < 4 and np.median(moved) < 2
    ink = bent.sum(axis=(1, 2, 3)) / digits.sum(axis=(1, 2, 3))
    assert ink.min() > 0.5 and ink.max() < 1.6 and 0.9 < np.median(ink) < 1.1


@pytest.mark.parametrize(("elastic_prob", "drawn"), [(0.0, False), (0.5, True)])
def test_the_elastic_field_is_built_only_where_it_may_be_used(elastic_prob: float, drawn: bool) -> None:
    """MNIST's part of a `plus` batch has no elastic wobble: its graph has no field to smooth, which
    would cost most of the batch's augmentation time only to be thrown away."""
    aug = dataclasses.replace(DEFAULT, elastic_prob=elastic_prob)
    graph = (
        tf.function(lambda images: augment_batch(images, aug))
        .get_concrete_function(tf.TensorSpec([None, 28, 28, 1], tf.float32))
        .graph
    )
    assert any(op.type == "DepthwiseConv2dNative" for op in graph.get_operations()) == drawn
