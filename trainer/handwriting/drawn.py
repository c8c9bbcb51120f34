"""Writing styles fonts lack, drawn on purpose as pen strokes in a unit box (x right, y down): the
European 1 with its flag (and foot), the crossed 7, the 9 with a flat closed top or a hooked tail, the
open 4; and the plain 1, 7, 4 and 3 beside them, so that each stays told apart from its neighbour.
Each drawing jitters its control points, so no two samples share a shape.
"""

from __future__ import annotations

import numpy as np

from trainer.handwriting.render import Polyline

DIGIT = {
    "flagged-1": 1,
    "flagged-footed-1": 1,
    "plain-1": 1,
    "crossed-7": 7,
    "plain-7": 7,
    "flat-top-9": 9,
    "hooked-9": 9,
    "open-4": 4,
    "plain-4": 4,
    "plain-3": 3,
}


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> list[tuple[float, float]]:
    """Points on an ellipse from angle `start` to `end` (degrees, clockwise on the page from 3 o'clock)."""
    angles = np.deg2rad(np.linspace(start, end, 24))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def strokes(style: str, rng: np.random.Generator) -> list[Polyline]:
    """The style's strokes, each control point moved by up to 3% of the box."""

    def jitter(points: list[tuple[float, float]]) -> Polyline:
        return np.asarray(points) + rng.uniform(-0.03, 0.03, (len(points), 2))

    flag_start = (rng.uniform(0.22, 0.35), rng.uniform(0.22, 0.4))
    shapes: dict[str, list[list[tuple[float, float]]]] = {
        "plain-1": [[(0.5, 0.05), (0.5, 0.95)]],
        "flagged-1": [[flag_start, (0.55, 0.05), (0.55, 0.95)]],
        "flagged-footed-1": [[flag_start, (0.55, 0.05), (0.55, 0.95)], [(0.3, 0.95), (0.8, 0.95)]],
        "plain-7": [[(0.2, 0.08), (0.8, 0.08), (0.45, 0.95)]],
        "crossed-7": [[(0.2, 0.08), (0.8, 0.08), (0.45, 0.95)], [(0.38, 0.5), (0.82, 0.5)]],
        "flat-top-9": [
            [(0.72, 0.12), (0.3, 0.12), (0.22, 0.3), (0.3, 0.46), (0.72, 0.46)],
            [(0.72, 0.12), (0.72, 0.55), (0.68, 0.95)],
        ],
        "hooked-9": [
            _arc(0.5, 0.28, 0.24, 0.2, 0, 360),
            [(0.74, 0.28), (0.72, 0.7), *_arc(0.52, 0.78, 0.2, 0.14, 0, 150)],
        ],
        "open-4": [[(0.3, 0.05), (0.2, 0.6), (0.82, 0.6)], [(0.66, 0.25), (0.66, 0.95)]],
        "plain-4": [[(0.62, 0.95), (0.62, 0.05), (0.15, 0.65), (0.85, 0.65)]],
        "plain-3": [
            [*_arc(0.48, 0.28, 0.24, 0.2, 200, 450)],
            [*_arc(0.46, 0.7, 0.28, 0.24, 270, 520)],
        ],
    }
    return [jitter(points) for points in shapes[style]]
