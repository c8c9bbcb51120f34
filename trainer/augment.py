"""Augmentation for the `plus` network: the ways a person's digit differs from an MNIST one.

Normalisation (DESIGN.md, "Images from people") already scales and centres uploads like MNIST, so what is
left is what it cannot undo: slant, slightly different size and aspect, a pixel or two of offset, and pens
thinner or thicker than MNIST's. One random affine map per image (a single resampling, so no compounding
blur) and a random stroke-width change do that on whole batches inside the tf.data pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    max_rotation_deg: float = 12.0
    max_shear: float = 0.15
    scale_range: tuple[float, float] = (0.85, 1.12)
    max_aspect_change: float = 0.1
    max_shift_px: float = 2.0
    thicken_prob: float = 0.15
    thin_prob: float = 0.15
    elastic_alpha: float = 34.0  # Simard et al. (2003): random displacements smoothed by a Gaussian
    elastic_sigma: float = 4.0
    elastic_prob: float = 0.5
    low_resolution_prob: float = 0.15
    low_resolution_sides: tuple[int, int] = (9, 14)  # the coarse grid's side, for the whole 28x28 field


def _affine_transforms(batch: int, aug: Augmentation) -> tf.Tensor:
    """Per-image [a0 a1 a2 b0 b1 b2 0 0] maps from output to input pixel, about the image centre."""
    angle = tf.random.uniform([batch], -1.0, 1.0) * math.radians(aug.max_rotation_deg)
    shear = tf.random.uniform([batch], -aug.max_shear, aug.max_shear)
    scale = tf.random.uniform([batch], *aug.scale_range)
    aspect = 1.0 + tf.random.uniform([batch], -aug.max_aspect_change, aug.max_aspect_change)
    shift = tf.random.uniform([batch, 2], -aug.max_shift_px, aug.max_shift_px)
    # The transform reads input pixels from output positions, so it holds the inverse of the drawn
    # geometry: dividing by the scale makes the digit grow by `scale`.
    sx, sy = 1.0 / (scale * aspect), aspect / scale
    cos, sin = tf.cos(angle), tf.sin(angle)
    a0, a1 = sx * cos, sx * (-sin + shear)
    b0, b1 = sy * sin, sy * cos
    centre = 13.5
    a2 = centre - a0 * centre - a1 * centre - shift[:, 0]
    b2 = centre - b0 * centre - b1 * centre - shift[:, 1]
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _change_stroke_width(images: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """Dilate or erode some images by a 2x2 grey-scale max/min filter."""
    thicker = tf.nn.max_pool2d(images, 2, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-images, 2, 1, "SAME")
    draw = tf.random.uniform([tf.shape(images)[0], 1, 1, 1])
    images = tf.where(draw < aug.thicken_prob, thicker, images)
    return tf.where(draw > 1.0 - aug.thin_prob, thinner, images)


def _elastic_displacements(batch: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """[b, 28, 28, 2] smooth random displacements (rows, columns) in pixels, zero for some images."""
    radius = int(2 * aug.elastic_sigma)
    taps = tf.exp(-tf.square(tf.range(-radius, radius + 1, dtype=tf.float32)) / (2 * aug.elastic_sigma**2))
    taps /= tf.reduce_sum(taps)
    noise = tf.random.uniform([batch, 28, 28, 2], -1.0, 1.0)
    rows = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, 2, 1])
    cols = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), [1, 1, 2, 1])
    smooth = tf.nn.depthwise_conv2d(noise, rows, [1, 1, 1, 1], "SAME")
    smooth = tf.nn.depthwise_conv2d(smooth, cols, [1, 1, 1, 1], "SAME")
    on = tf.cast(tf.random.uniform([batch, 1, 1, 1]) < aug.elastic_prob, tf.float32)
    return smooth * aug.elastic_alpha * on


def _sample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Bilinear samples of [b, 28, 28, 1] images at source positions [b, 28, 28]; zero outside."""
    padded = tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]])
    batch_index = tf.broadcast_to(tf.range(tf.shape(images)[0])[:, None, None], tf.shape(rows))
    top, left = tf.floor(rows), tf.floor(cols)
    down, right = rows - top, cols - left

    def at(row: tf.Tensor, col: tf.Tensor) -> tf.Tensor:
        row = tf.clip_by_value(tf.cast(row, tf.int32) + 1, 0, 29)
        col = tf.clip_by_value(tf.cast(col, tf.int32) + 1, 0, 29)
        return tf.gather_nd(padded, tf.stack([batch_index, row, col], axis=-1))

    sampled = (
        at(top, left) * (1 - down) * (1 - right)
        + at(top, left + 1) * (1 - down) * right
        + at(top + 1, left) * down * (1 - right)
        + at(top + 1, left + 1) * down * right
    )
    return sampled[..., None]


def _lower_resolution(images: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """Some images shrunk to a coarse grid (one side per batch) and scaled back up, as normalisation
    does with a small upload: soft, blurred strokes, their strongest pixel at full ink again."""
    side = tf.random.uniform([], aug.low_resolution_sides[0], aug.low_resolution_sides[1] + 1, tf.int32)
    coarse = tf.image.resize(images, tf.stack([side, side]), method="area")
    blurred = tf.clip_by_value(tf.image.resize(coarse, [28, 28], method="bicubic"), 0.0, 1.0)
    blurred /= tf.maximum(tf.reduce_max(blurred, axis=[1, 2, 3], keepdims=True), 1e-6)
    draw = tf.random.uniform([tf.shape(images)[0], 1, 1, 1])
    return tf.where(draw < aug.low_resolution_prob, blurred, images)


def augment_batch(images: tf.Tensor, aug: Augmentation = Augmentation()) -> tf.Tensor:
    """Randomly warp and re-stroke a float32 batch [b, 28, 28, 1] in [0, 1]."""
    batch = tf.shape(images)[0]
    t = _affine_transforms(batch, aug)
    ys, xs = tf.meshgrid(tf.range(28, dtype=tf.float32), tf.range(28, dtype=tf.float32), indexing="ij")
    xs, ys = xs[None], ys[None]
    coef = [t[:, i, None, None] for i in range(6)]
    source_cols = coef[0] * xs + coef[1] * ys + coef[2]
    source_rows = coef[3] * xs + coef[4] * ys + coef[5]
    shift = _elastic_displacements(batch, aug)
    warped = _sample(images, source_rows + shift[..., 0], source_cols + shift[..., 1])
    return _lower_resolution(_change_stroke_width(warped, aug), aug)
