"""The serving signature every version exports, and how pixels become its input.

`serving_default`: float32 `images` [-1, 28, 28, 1] in [0, 1] (ink 1, paper 0) to float32
`probabilities` [-1, 10] and int64 `classes` [-1]. `classify`: serialized tf.Examples whose `image`
feature holds the 784 pixels, for TF Serving's Classify API.
"""

from __future__ import annotations

import numpy as np

SIGNATURE_NAME = "serving_default"
INPUT = "images"
PROBABILITIES = "probabilities"
CLASSES = "classes"
IMAGE_SHAPE = (28, 28, 1)
DIGITS = tuple(range(10))

CLASSIFY_SIGNATURE_NAME = "classify"
CLASSIFY_INPUT = "inputs"  # TF Serving's Classify API feeds serialized tf.Examples under this name
EXAMPLE_FEATURE = "image"


MAX_PIXEL = 255.0  # uint8 ink at full strength; the signature's input is pixel / MAX_PIXEL


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 MNIST pixels [n, 28, 28] (or one [28, 28]) as the signature's input: float32 in [0, 1]
    with the channel axis, [n, 28, 28, 1]."""
    scaled = np.asarray(images, dtype=np.float32) / MAX_PIXEL
    return scaled[..., None] if scaled.shape[-1] != 1 else scaled
