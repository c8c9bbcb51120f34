"""A digit as a person might write it on paper: from a font file, or as pen strokes (polylines) drawn
with a pen of varying width and pressure, a wobbling hand, and strokes started and ended a little off.
Every sample varies in size, slant, rotation, stroke width, ink and paper, then is photographed (uneven
light, noise). All randomness comes from the generator passed in, so a seed gives the same pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Polyline = np.ndarray  # float [n, 2], x right and y down, in a unit box around the digit
CANVAS = 160  # pixels a side of the page a digit is drawn on, before the normaliser shrinks it
DIGIT_HEIGHT = 65  # about how tall a digit is drawn on it, in pixels
# Samples captured coarsely (a thumbnail, a far-off photo, a low-resolution scan), and how many pixels
# tall the digit then is: strokes merge and blur in ways no pen width gives.
COARSE_SHARE = 0.25
COARSE_HEIGHT = (7.0, 16.0)


def render_font(font_file: Path, digit: int, rng: np.random.Generator) -> Image.Image:
    """The digit typed in `font_file` (a handwriting font), written onto a page."""
    size = int(rng.integers(70, 110))
    font = ImageFont.truetype(str(font_file), size)
    ink = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    ImageDraw.Draw(ink).text((CANVAS, CANVAS), str(digit), fill=255, font=font, anchor="mm")
    ink = _thicken(ink, rng)
    return _on_paper(_coarse(_transform(ink, rng), rng), rng)


def render_strokes(strokes: list[Polyline], rng: np.random.Generator) -> Image.Image:
    """Strokes (in a unit box) drawn by a hand with a pen: wobble, pressure, starts and ends a bit off."""
    scale = rng.uniform(55, 85)
    ink = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    draw = ImageDraw.Draw(ink)
    width = rng.uniform(3.0, 9.0)
    for stroke in strokes:
        points = _wobbled(_trimmed(_resampled(stroke), rng), rng) * scale + CANVAS - scale / 2
        pressure = 1 + 0.35 * np.sin(
            np.linspace(0, rng.uniform(1, 4) * np.pi, len(points)) + rng.uniform(0, 6)
        )
        for start, end, weight in zip(points[:-1], points[1:], pressure[:-1], strict=True):
            radius = max(1.0, width * weight / 2)
            draw.line([tuple(start), tuple(end)], fill=255, width=int(round(2 * radius)))
            draw.ellipse([*(end - radius), *(end + radius)], fill=255)
    return _on_paper(_coarse(_transform(ink, rng), rng), rng)


def svg_font_digits(font: Path) -> dict[int, list[Polyline]]:
    """An SVG font's digit glyphs as polylines in a unit box (single-stroke fonts: M and L only)."""
    text = font.read_text(errors="replace")
    digits: dict[int, list[Polyline]] = {}
    for digit in range(10):
        match = re.search(rf'<glyph unicode="{digit}"[^>]*\sd="([^"]*)"', text)
        if match is None:
            continue
        strokes: list[list[tuple[float, float]]] = []
        current: list[tuple[float, float]] = []
        for command, x, y in re.findall(r"([ML])\s*(-?[\d.]+)\s+(-?[\d.]+)", match[1]):
            if command == "M" and current:
                strokes.append(current)
                current = []
            current.append((float(x), -float(y)))  # font units run up; the page's run down
        strokes.append(current)
        digits[digit] = _unit_box([np.asarray(s, dtype=np.float64) for s in strokes if len(s) > 1])
    return digits


def _unit_box(strokes: list[Polyline]) -> list[Polyline]:
    """Strokes moved and scaled together so that the taller side spans 1, centred on (0.5, 0.5)."""
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    span = max(float((high - low).max()), 1e-6)
    middle = (low + high) / 2
    return [(s - middle) / span + 0.5 for s in strokes]


def _resampled(stroke: Polyline, step: float = 0.01) -> Polyline:
    """Points every `step` along the stroke, so wobble and pressure vary smoothly along it."""
    lengths = np.r_[0, np.cumsum(np.linalg.norm(np.diff(stroke, axis=0), axis=1))]
    if lengths[-1] == 0:
        return stroke
    along = np.linspace(0, lengths[-1], max(2, int(lengths[-1] / step)))
    return np.stack([np.interp(along, lengths, stroke[:, i]) for i in range(2)], axis=1)


def _trimmed(stroke: Polyline, rng: np.random.Generator) -> Polyline:
    """A pen set down late or lifted early: up to 4% of the stroke's points off each end."""
    cut = int(len(stroke) * 0.04)
    start, end = int(rng.integers(0, cut + 1)), len(stroke) - int(rng.integers(0, cut + 1))
    return stroke[start:end] if end - start >= 2 else stroke


def _wobbled(stroke: Polyline, rng: np.random.Generator) -> Polyline:
    """A hand's tremor and drift: smooth random offsets along the stroke."""
    amount = rng.uniform(0.0, 0.02)
    noise = rng.normal(0, 1, stroke.shape)
    kernel = np.hanning(15)
    smooth = np.stack(
        [np.convolve(noise[:, i], kernel / kernel.sum(), mode="same") for i in range(2)], axis=1
    )
    return stroke + amount * smooth / max(float(np.abs(smooth).max()), 1e-6)


def _thicken(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A broader or finer pen than the font's: dilate or erode by a pixel or two."""
    change = int(rng.integers(-1, 3))
    if change > 0:
        return ink.filter(ImageFilter.MaxFilter(2 * change + 1))
    thinner = ink.filter(ImageFilter.MinFilter(3)) if change < 0 else ink
    # A thin font's strokes would vanish: keep them when a finer pen leaves under half the ink.
    kept = np.asarray(thinner, dtype=np.float32).sum() / max(
        float(np.asarray(ink, dtype=np.float32).sum()), 1.0
    )
    return thinner if kept >= 0.5 else ink


def _transform(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Slant, rotation and aspect, as a writer's hand and the camera's angle give them."""
    # Forward-leaning writing is x falling as y (down the page) grows: a negative shear, mostly.
    slant, angle = rng.uniform(-0.35, 0.15), np.deg2rad(rng.uniform(-10, 10))
    aspect = rng.uniform(0.8, 1.2)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[aspect, slant], [0, 1]])
    inverse = np.linalg.inv(matrix)
    centre = np.array(ink.size) / 2
    offset = centre - inverse @ centre
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return ink.transform(ink.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR)


def _coarse(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """For COARSE_SHARE of the samples, the ink as a coarse capture sees it: each pixel the mean of
    what it covers, with the digit COARSE_HEIGHT pixels tall, enlarged again (bicubic) and softened, as
    an upload of such a capture arrives."""
    if rng.random() >= COARSE_SHARE:
        return ink
    factor = rng.uniform(*COARSE_HEIGHT) / DIGIT_HEIGHT
    small = ink.resize((round(ink.width * factor), round(ink.height * factor)), Image.Resampling.BOX)
    enlarged = small.resize(ink.size, Image.Resampling.BICUBIC)
    return enlarged.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.4) / factor))


def _on_paper(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The ink on paper of some colour, lit unevenly, with a little sensor noise."""
    coverage = np.asarray(ink, dtype=np.float32) / 255
    paper, pen = rng.uniform(170, 250), rng.uniform(0, 90)
    if rng.random() < 0.1:  # chalk on a dark board
        paper, pen = rng.uniform(20, 70), rng.uniform(190, 250)
    height, width = coverage.shape
    light = rng.uniform(-40, 40) * np.linspace(-0.5, 0.5, width)[None, :]
    page = paper + (pen - paper) * coverage * rng.uniform(0.75, 1.0) + light
    page += rng.normal(0, rng.uniform(0, 8), page.shape)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
