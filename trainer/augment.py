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
    # Simard et al. 2003: a random displacement field, uniform in [-1, 1] per pixel, smoothed by a
    # Gaussian of sigma pixels and scaled by alpha: the wobble of a real hand, which no affine map gives.
    elastic_prob: float = 0.0  # 0.5 when the handwriting set is mixed in (see train.make_dataset)
    elastic_alpha: tuple[float, float] = (34.0, 38.0)
    elastic_sigma: tuple[float, float] = (4.0, 6.0)


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


ELASTIC_RADIUS = 13  # taps each side of the smoothing kernel: all of a 28-pixel image


def _elastic(images: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """Each image resampled (bilinear) along its own smoothed random displacement field."""
    batch = tf.shape(images)[0]
    sigma = tf.random.uniform([], *aug.elastic_sigma)
    taps = tf.range(-ELASTIC_RADIUS, ELASTIC_RADIUS + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= tf.reduce_sum(kernel)
    field = tf.random.uniform([batch, 28, 28, 2], -1.0, 1.0)
    for shape in ([1, -1, 1, 1], [-1, 1, 1, 1]):  # separable: along rows, then columns
        field = tf.nn.depthwise_conv2d(
            field, tf.tile(tf.reshape(kernel, shape), [1, 1, 2, 1]), [1] * 4, "SAME"
        )
    field *= tf.random.uniform([batch, 1, 1, 1], *aug.elastic_alpha)
    rows, columns = tf.meshgrid(tf.range(28.0), tf.range(28.0), indexing="ij")
    return _bilinear(images[..., 0], columns + field[..., 0], rows + field[..., 1])[..., None]


def _bilinear(images: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """images [b, h, w] read at (x, y) [b, h, w], between pixels by bilinear weights; 0 outside."""
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    left, top = tf.floor(x), tf.floor(y)
    across, down = x - left, y - top

    def pixel(column: tf.Tensor, row: tf.Tensor) -> tf.Tensor:
        inside = (
            (column >= 0)
            & (row >= 0)
            & (column < tf.cast(width, tf.float32))
            & (row < tf.cast(height, tf.float32))
        )
        index = tf.stack(
            [
                tf.broadcast_to(tf.range(batch)[:, None, None], tf.shape(column)),
                tf.clip_by_value(tf.cast(row, tf.int32), 0, height - 1),
                tf.clip_by_value(tf.cast(column, tf.int32), 0, width - 1),
            ],
            axis=-1,
        )
        return tf.where(inside, tf.gather_nd(images, index), 0.0)

    return (
        (1 - across) * (1 - down) * pixel(left, top)
        + across * (1 - down) * pixel(left + 1, top)
        + (1 - across) * down * pixel(left, top + 1)
        + across * down * pixel(left + 1, top + 1)
    )


def augment_batch(images: tf.Tensor, aug: Augmentation = Augmentation()) -> tf.Tensor:
    """Randomly warp (affine, and for some images elastically) and re-stroke a float32 batch
    [b, 28, 28, 1] in [0, 1]."""
    batch = tf.shape(images)[0]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=_affine_transforms(batch, aug),
        output_shape=tf.constant([28, 28]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    if aug.elastic_prob > 0:  # else skipped whole: the field costs 6 of a 96-image batch's 7 ms
        elastic = tf.random.uniform([batch, 1, 1, 1]) < aug.elastic_prob
        warped = tf.where(elastic, _elastic(warped, aug), warped)
    return _change_stroke_width(warped, aug)
