"""The two networks: `seed`, the original project's CNN exactly, and `plus`, a stronger one for real uploads.

Both take MNIST-normalised images [-1, 28, 28, 1] in [0, 1] (ink = 1) and end in a 10-way softmax, so the
export, the serving signature and every client are the same whichever is trained.
"""

from __future__ import annotations

import keras
from keras import layers

ARCHITECTURES = ("seed", "plus")


def build_seed() -> keras.Model:
    """Conv32-pool-Conv64-pool-Dense128-Dropout0.5-softmax, as the original project has it."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="images"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ],
        name="seed",
    )


def _batch_norm(synchronized: bool) -> layers.BatchNormalization:
    # Momentum 0.9 rather than 0.99: the moving statistics settle within an epoch even on short runs.
    return layers.BatchNormalization(momentum=0.9, synchronized=synchronized)


def _conv_bn(filters: int, synchronized: bool) -> list[layers.Layer]:
    # The convolution's bias is redundant in front of batch norm.
    return [layers.Conv2D(filters, 3, use_bias=False), _batch_norm(synchronized), layers.ReLU()]


def build_plus(synchronized: bool = False) -> keras.Model:
    """Two blocks of two batch-normalised 3x3 convolutions, sized to train in minutes on two cores.

    Valid padding shrinks the maps (28 -> 24 -> 12 -> 8 -> 4) so the second conv of each block costs a
    fraction of a same-padded one; generalisation comes from the augmentation in `trainer.augment`.
    `synchronized`: across workers, batch norm's moments are the global batch's, so every worker's
    moving statistics stay the same (Keras keeps them per worker otherwise); alone it only costs time
    (a fifth more a step here).
    """
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="images"),
            *_conv_bn(32, synchronized),
            *_conv_bn(32, synchronized),
            layers.MaxPooling2D(2),
            layers.Dropout(0.1),
            *_conv_bn(64, synchronized),
            *_conv_bn(64, synchronized),
            layers.MaxPooling2D(2),
            layers.Dropout(0.1),
            layers.Flatten(),
            layers.Dense(128, use_bias=False),
            _batch_norm(synchronized),
            layers.ReLU(),
            layers.Dropout(0.4),
            layers.Dense(10, activation="softmax"),
        ],
        name="plus",
    )


def build_model(arch: str, synchronized: bool = False) -> keras.Model:
    """`synchronized`: for training across workers (see build_plus)."""
    if arch == "seed":
        return build_seed()
    if arch == "plus":
        return build_plus(synchronized)
    raise ValueError(f"unknown architecture {arch!r}, expected one of {', '.join(ARCHITECTURES)}")
