"""Why the model said what it said: an occlusion map, from one batched Predict request.

Square patches of the 28x28 input are blanked one at a time (ink removed, as if never written), every
variant goes to the server in the same request as the input itself, and each pixel's heat is how much
the predicted digit's probability drops, on average, when the patches that cover it are blanked. It
needs no gradient and no extra signature, so it works with any server and runtime.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from contract.signature import IMAGE_SHAPE

# 8-pixel patches every 4 pixels: 36 blanked copies, so the request (37 images) fits a server's batch
# limit (TF Serving refuses a request larger than max_batch_size, 64 in serving/config/batching.config).
PATCH = 8
STRIDE = 4
SIDE = IMAGE_SHAPE[0]
POSITIONS = [(y, x) for y in range(0, SIDE - PATCH + 1, STRIDE) for x in range(0, SIDE - PATCH + 1, STRIDE)]

# probabilities of a batch of [n, 28, 28, 1] images, [n, 10]: one Predict request
Predictor = Callable[[np.ndarray], np.ndarray]


def occluded(image: np.ndarray) -> np.ndarray:
    """The image first, then one copy per patch position with that patch blanked: [1 + positions, ...]."""
    batch = np.repeat(image[None], 1 + len(POSITIONS), axis=0)
    for index, (y, x) in enumerate(POSITIONS, start=1):
        batch[index, y : y + PATCH, x : x + PATCH] = 0.0
    return batch


def heat_map(image: np.ndarray, predict: Predictor) -> tuple[int, np.ndarray]:
    """The predicted digit and a [28, 28] map in [0, 1]: 1 where blanking hurts the answer most."""
    probabilities = predict(occluded(image))
    digit = int(np.argmax(probabilities[0]))
    drops = np.clip(probabilities[0, digit] - probabilities[1:, digit], 0.0, None)
    total, covered = np.zeros((SIDE, SIDE)), np.zeros((SIDE, SIDE))
    for drop, (y, x) in zip(drops, POSITIONS, strict=True):
        total[y : y + PATCH, x : x + PATCH] += drop
        covered[y : y + PATCH, x : x + PATCH] += 1
    heat = total / np.maximum(covered, 1)
    peak = heat.max()
    return digit, heat / peak if peak > 0 else heat


def overlay(image: np.ndarray, heat: np.ndarray, scale: int = 4) -> np.ndarray:
    """RGB uint8, `scale` times larger: the model's view in grey with the heat in red over it."""
    grey = image.reshape(SIDE, SIDE) * 0.6
    rgb = np.stack([np.maximum(grey, heat), grey * (1 - heat), grey * (1 - heat)], axis=-1)
    return np.kron(np.clip(rgb, 0, 1) * 255, np.ones((scale, scale, 1))).astype(np.uint8)
