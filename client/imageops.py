"""The image operations the normaliser needs, in numpy and Pillow alone.

Each gives what its SciPy ndimage namesake gives (the tests hold them to it), at the cost of a few
whole-array passes rather than a pass per pixel: the client installs without SciPy and OpenCV, whose
150 to 250 MB would be most of the client's install for five operations on a single small image.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

Extreme = Literal["min", "max"]


def level_counts(levels: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """How many of `levels` (8-bit, or floats in [0, 256) counted by their integer part) fall at each
    of 0-255, only where `where` is set if it is given. Pillow counts 8-bit pixels in C, a tenth of
    np.bincount's time (which first widens every value to 64 bits)."""
    image = Image.fromarray(np.ascontiguousarray(levels, dtype=np.uint8))
    mask = None if where is None else Image.fromarray(np.ascontiguousarray(where, dtype=np.uint8))
    return np.array(image.histogram(mask), dtype=np.int64)


def _grown_by_cross(mask: np.ndarray) -> np.ndarray:
    """`mask` with each set pixel's four neighbours set too, nothing beyond the edge."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def binary_dilation(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """ndimage.binary_dilation(mask, iterations=...): grown by the four-neighbour cross each time."""
    grown = mask.astype(bool)
    for _ in range(iterations):
        grown = _grown_by_cross(grown)
    return grown


def binary_erosion(mask: np.ndarray) -> np.ndarray:
    """ndimage.binary_erosion(mask): the pixels whose four neighbours are all set, paper beyond the
    edge."""
    return ~_grown_by_cross(~np.pad(mask.astype(bool), 1))[1:-1, 1:-1]


def _running_extreme(values: np.ndarray, size: int, before: int, extreme: Extreme) -> np.ndarray:
    """Along axis 0, each value's min or max over the `size` values from `before` rows above it, the
    edge rows repeated beyond the edge; van Herk and Gil-Werman's way, three passes whatever the size:
    within blocks of `size` rows, running extremes from each block's top and from its bottom meet."""
    combine = np.minimum if extreme == "min" else np.maximum
    length, rest = values.shape[0], values.shape[1:]
    blocks = -(-(length + size - 1) // size)
    padded = np.pad(values, [(before, blocks * size - length - before)] + [(0, 0)] * len(rest), mode="edge")
    stacked = padded.reshape((blocks, size) + rest)
    from_top, from_bottom = stacked.copy(), stacked.copy()
    for row in range(1, size):  # a row at a time: numpy's accumulate along this axis takes twice as long
        combine(from_top[:, row - 1], from_top[:, row], out=from_top[:, row])
        combine(
            from_bottom[:, size - row], from_bottom[:, size - 1 - row], out=from_bottom[:, size - 1 - row]
        )
    return combine(
        from_bottom.reshape(padded.shape)[:length],
        from_top.reshape(padded.shape)[size - 1 : size - 1 + length],
    )


def _square_extreme(levels: np.ndarray, side: int, before: int, extreme: Extreme) -> np.ndarray:
    rows = _running_extreme(levels, side, before, extreme)
    return _running_extreme(rows.T, side, before, extreme).T


def grey_opening(levels: np.ndarray, side: int) -> np.ndarray:
    """ndimage.grey_opening(levels, size=side) for integer levels: the minimum over a side x side
    square, then the maximum over the mirrored square. The edge repeated is the edge reflected, for a
    minimum or a maximum."""
    eroded = _square_extreme(levels, side, side // 2, "min")
    return _square_extreme(eroded, side, (side - 1) // 2, "max")


def gaussian_filter(levels: np.ndarray, sigma: float) -> np.ndarray:
    """ndimage.gaussian_filter(levels, sigma) in float32: the same kernel (radius 4 sigma) and border
    (reflected), one axis at a time (each made the rows' axis, for whole-row passes), each tap's mirror
    pair summed before it is weighed."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(radius + 1)
    weights = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    weights = (weights / (2 * weights.sum() - weights[0])).astype(np.float32)
    result = levels.astype(np.float32)
    for _ in range(2):  # along the rows, then (transposed) along the columns, then transposed back
        length = result.shape[0]
        padded = np.pad(result, [(radius, radius), (0, 0)], mode="symmetric")
        total = padded[radius : radius + length] * weights[0]
        pair = np.empty_like(total)
        for offset in range(1, radius + 1):
            before = padded[radius - offset : radius - offset + length]
            np.add(before, padded[radius + offset : radius + offset + length], out=pair)
            pair *= weights[offset]
            total += pair
        result = np.ascontiguousarray(total.T)
    return result


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """ndimage.label(mask): 4-connected regions numbered from 1 in the order a raster scan meets
    them, 0 elsewhere, and their count. Each row's runs of set pixels are joined to the runs they
    overlap in the next row, and the joins resolved by hooking and pointer jumping, a few passes over
    the runs (hundreds to thousands of them) rather than over the pixels."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    run_rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # one past each run, in the same raster order as the starts
    labels = np.zeros((height, width), np.int32)
    if not len(starts):
        return labels, 0
    stride = width + 1
    start_keys, end_keys = run_rows * stride + starts, run_rows * stride + ends
    # For each run, the runs of the row above whose columns overlap its own: a contiguous range.
    first = np.searchsorted(end_keys, (run_rows - 1) * stride + starts, side="right")
    last = np.searchsorted(start_keys, (run_rows - 1) * stride + ends, side="left")
    counts = np.maximum(last - first, 0)
    below = np.repeat(np.arange(len(starts)), counts)
    above = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    parent = np.arange(len(starts))
    while True:
        roots_above, roots_below = parent[above], parent[below]
        if np.array_equal(roots_above, roots_below):
            break
        np.minimum.at(parent, np.maximum(roots_above, roots_below), np.minimum(roots_above, roots_below))
        while not np.array_equal(parent[parent], parent):
            parent = parent[parent]
    roots, numbers = np.unique(parent, return_inverse=True)
    lengths = ends - starts
    run_starts = run_rows * width + starts
    pixels = np.repeat(run_starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    labels.ravel()[pixels] = np.repeat(numbers + 1, lengths)
    return labels, len(roots)
