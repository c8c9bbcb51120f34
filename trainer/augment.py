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


def augment_batch(images: tf.Tensor, aug: Augmentation = Augmentation()) -> tf.Tensor:
    """Randomly warp and re-stroke a float32 batch [b, 28, 28, 1] in [0, 1]."""
    batch = tf.shape(images)[0]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=_affine_transforms(batch, aug),
        output_shape=tf.constant([28, 28]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return _change_stroke_width(warped, aug)
