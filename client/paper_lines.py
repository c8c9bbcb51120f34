"""The printed lines of ruled and squared paper, taken out of the ink before the digit is looked for.

A line fainter than about a third of the pen's ink, or thinner than its strokes, fades in the blur and
the threshold that find the strokes (client/normalise.py's ink_regions). A darker or wider one stays,
and a digit it crosses or touches becomes one region with it, which the rules on regions
(client/regions.py) can only keep or drop whole: on squared paper the grid was read as the digit.

A line here is ink in a thin straight band across most of the image, at a slant of up to
MAX_SLANT_DEG (a photo taken at an angle), one of an evenly spaced family of at least MIN_LINES
with paper beside them: a digit cropped tight to its own bar (a 7's top) has one. Each line's pixels take
the lower of the levels just beyond its two edges, paired across the line as a stroke would cross
it, so a stroke that crossed it is whole again while paper stays paper. A line alone (a form's
underline) is taken out when it reaches far past the rest of the ink (see _lone_line).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ink for finding lines: at least this share of the level that splits ink from paper (Otsu's).
LINE_INK_SHARE = 0.5
MAX_SLANT_DEG = 6.0
SLANT_STEP_DEG = 0.25
SEARCH_SIDE = 256  # the slant is looked for in the ink reduced to about this size: a line survives it
FINE_SEARCH_PIXELS = 20_000  # ... then finely, in at most about this many of the ink's pixels
# A line's band: neighbouring offsets each holding ink over at least BAND_SHARE of the image's width
# (more than a digit's rows hold), together over at least LINE_REACH of it, and no thicker than
# MAX_THICKNESS of the image's height. Paper's lines, blurred, are under 2.5%; the cap also bounds
# the work an upload can ask for (filling a band costs its thickness squared: at most about 0.4 s).
BAND_SHARE = 0.5
LINE_REACH = 0.8
MAX_THICKNESS = 0.03
# Paper's lines come in evenly spaced families, at least this many of them on paper: a straight band
# across the image may be the digit's own bar (a 7 cropped tight to it), or a row of a large digit.
MIN_LINES = 3
# On paper, a line has paper just beyond its edges, on one side at least, in all but this share of
# its columns (where it crosses another line); rows inside a digit have ink there too.
INK_BESIDE = 0.3
# Ink over more than this share of the image is noise or a texture, not paper's lines: two families
# of lines at least MIN_SPACING times their width apart cover at most 1 - (2/3)^2, about 56%.
NOISE_SHARE = 0.6
# A family's lines are further apart than this many times their thickness.
MIN_SPACING = 3
# A line alone (no family beside it) reaches at least this many times as far across as the rest of
# the ink, the digit.
REACH_PAST = 2.0


@dataclass(frozen=True)
class Band:
    """A line running across the image: its pixels are those whose row less the column times `slope`
    lies in [first, last]."""

    slope: float
    first: int
    last: int

    @property
    def margin(self) -> int:
        """Rows beyond the band's ink that its soft edges (blur, JPEG) still darken."""
        return max(1, (self.last - self.first + 1) // 2)

    @property
    def centre(self) -> float:
        return (self.first + self.last) / 2

    def edges(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The band's first and last row in each of `cols`, with its margin."""
        top = np.round(self.first + cols * self.slope).astype(np.int64) - self.margin
        bottom = np.round(self.last + cols * self.slope).astype(np.int64) + self.margin
        return top, bottom

    def beside(self, values: np.ndarray, outside: int) -> tuple[np.ndarray, np.ndarray]:
        """`values` in the rows just above and below the band and its margin, in each column;
        `outside` where that row is beyond the image."""
        height, width = values.shape
        cols = np.arange(width)
        top, bottom = self.edges(cols)
        above = np.where(top >= 1, values[np.clip(top - 1, 0, height - 1), cols], outside)
        below = np.where(bottom + 1 < height, values[np.clip(bottom + 1, 0, height - 1), cols], outside)
        return above, below


def without_paper_lines(levels: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """`levels` (ink levels, paper at 0) with the lines of ruled or squared paper taken out, or
    `levels` itself when it has none; `ink` is where a blurred copy of it is ink (LINE_INK_SHARE of
    the way to the strokes' level: a line a third as dark as the pen is found, and noise is not)."""
    if np.count_nonzero(ink) > NOISE_SHARE * ink.size:
        return levels  # noise or a texture: its rows line up by chance
    bands_across, bands_down = _bands(ink), _bands(ink.T)
    across, down = _family(ink, bands_across), _family(ink.T, bands_down)
    strokes = ink & ~(_pixels(across, ink.shape) | _pixels(down, ink.T.shape).T)
    across = across or _lone_line(strokes, bands_across)
    down = down or _lone_line(strokes.T, bands_down)
    if not across and not down:
        return levels
    strokes = ink & ~(_pixels(across, ink.shape) | _pixels(down, ink.T.shape).T)
    if not strokes.any():  # only lines: client/regions.py refuses such a page
        return levels
    cleaned = levels.copy()
    for band in across:
        _fill(cleaned, strokes, band)
    cleaned, strokes = cleaned.T.copy(), strokes.T
    for band in down:
        _fill(cleaned, strokes, band)
    return cleaned.T


def _family(ink: np.ndarray, bands: list[Band]) -> list[Band]:
    """The lines of the paper among the bands running across `ink`: an evenly spaced family, at least
    MIN_LINES of which have paper beside them (see INK_BESIDE). A band of the family through the
    digit counts as a line too, trimmed to the family's thickness where a stroke runs along it."""
    on_paper = [band for band in bands if _ink_beside(ink, band) <= INK_BESIDE]
    if len(on_paper) < MIN_LINES:
        return []
    centres = np.array([band.centre for band in on_paper])
    gaps = np.diff(centres)
    spacing = float(np.median(gaps))
    spacing = float(np.median(gaps / np.maximum(np.round(gaps / spacing), 1)))  # a line on the digit skipped
    thickness = int(np.median([band.last - band.first + 1 for band in on_paper]))
    if spacing < MIN_SPACING * thickness:
        return []
    anchor = centres[0]
    lines = []
    for band in bands:
        expected = anchor + round((band.centre - anchor) / spacing) * spacing
        first = int(round(expected - (thickness - 1) / 2))
        if not (band.first - 2 <= first and first + thickness - 1 <= band.last + 2):
            continue  # the family has no line here
        if band.last - band.first + 1 > thickness + 2:  # a stroke along the line: only the line's rows
            band = Band(band.slope, first, first + thickness - 1)
        lines.append(band)
    fitting = sum(1 for band in on_paper if band in lines)
    return lines if fitting >= MIN_LINES else []


def _lone_line(ink: np.ndarray, bands: list[Band]) -> list[Band]:
    """One of the bands running across `ink`, where no family of lines does, as a line alone (an
    underline, a form's line, the one ruled line in a crop): on paper, clear of the image's edges,
    reaching at least REACH_PAST times as far across as the rest of the ink. A digit's own bar (a 7's,
    a 1's foot) is about as wide as the rest of the digit, and one cropped tight lies at the edge."""
    height, width = ink.shape
    for band in bands:
        top, bottom = band.edges(np.arange(width))
        if top.min() < 1 or bottom.max() >= height - 1 or _ink_beside(ink, band) > INK_BESIDE:
            continue
        line = _pixels([band], ink.shape)
        rest = np.flatnonzero((ink & ~line).any(axis=0))
        reach = np.flatnonzero((ink & line).any(axis=0))
        if rest.size and np.ptp(reach) + 1 >= REACH_PAST * (np.ptp(rest) + 1):
            return [band]
    return []


def _bands(ink: np.ndarray) -> list[Band]:
    """The bands of ink running across `ink` (rows, at a slant), at the slant that lines up most."""
    if np.count_nonzero(ink.any(axis=0)) < LINE_REACH * ink.shape[1]:
        return []  # no ink across most of the image: no line (most pages; the rest cost a few ms)
    coarse = _slope(_reduced(ink))
    if coarse is None:
        return []
    height, width = ink.shape
    rows, cols = np.nonzero(ink)
    fine = np.tan(np.radians(np.degrees(np.arctan(coarse)) + np.linspace(-1, 1, 21) * SLANT_STEP_DEG))
    every = -(-rows.size // FINE_SEARCH_PIXELS)  # a sample of the ink finds the slant as well
    slope = max((float(s) for s in fine), key=lambda s: _lined_up(rows[::every], cols[::every], s))
    offsets = np.round(rows - cols * slope).astype(np.int64)
    low = int(offsets.min())
    counts = np.bincount(offsets - low)
    dense = np.concatenate([[False], counts >= BAND_SHARE * width, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(dense))
    bands = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start > MAX_THICKNESS * height:
            continue
        if counts[start:end].max() < LINE_REACH * width:
            continue  # no row of it runs across the image: noise, or a digit's rows
        inside = (offsets - low >= start - 1) & (offsets - low <= end)  # and a bin either side
        if np.unique(cols[inside]).size >= LINE_REACH * width:
            bands.append(Band(slope, low + int(start), low + int(end) - 1))
    return bands


def _ink_beside(ink: np.ndarray, band: Band) -> float:
    """The share of columns with ink just beyond the band's margin on both of its sides."""
    above, below = band.beside(ink, outside=False)
    return float(np.mean(above & below))


def _lined_up(rows: np.ndarray, cols: np.ndarray, slope: float) -> float:
    """How well the ink lines up in rows at `slope`: the sum of its rows' squared counts (a slant a
    little off merges a thick line's rows, so the largest count alone would prefer it)."""
    offsets = np.round(rows - cols * slope).astype(np.int64)
    counts = np.bincount(offsets - offsets.min())
    return float(np.dot(counts, counts))


def _reduced(ink: np.ndarray) -> np.ndarray:
    """`ink` reduced to about SEARCH_SIDE, a pixel set where any of its block is (a line survives)."""
    step = max(1, -(-max(ink.shape) // SEARCH_SIDE))
    height, width = -(-ink.shape[0] // step), -(-ink.shape[1] // step)
    padded = np.zeros((height * step, width * step), dtype=np.uint8)
    padded[: ink.shape[0], : ink.shape[1]] = ink
    rows = np.bitwise_or.reduce(padded.reshape(height, step, width * step), axis=1)
    return np.bitwise_or.reduce(rows.reshape(height, width, step), axis=2).astype(bool)


def _slope(ink: np.ndarray) -> float | None:
    """The slant (rows per column, in steps of SLANT_STEP_DEG) at which the ink's rows line up best,
    when some row of ink then spans most of the image; None when none does."""
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        return None
    slopes = np.tan(np.radians(np.arange(-MAX_SLANT_DEG, MAX_SLANT_DEG + SLANT_STEP_DEG / 2, SLANT_STEP_DEG)))
    best = max((float(s) for s in slopes), key=lambda s: _lined_up(rows, cols, s))
    offsets = np.round(rows - cols * best).astype(np.int64)
    return best if np.bincount(offsets - offsets.min()).max() >= LINE_REACH * ink.shape[1] else None


def _pixels(bands: list[Band], shape: tuple[int, ...]) -> np.ndarray:
    """Where the bands (all at one slope) lie, with their margins, as a mask of `shape`."""
    if not bands:
        return np.zeros(shape, dtype=bool)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    offsets = np.round(rows - cols * bands[0].slope).astype(np.int64)
    low = int(offsets.min())
    inside = np.zeros(int(offsets.max()) - low + 1, dtype=bool)
    for band in bands:
        first, last = band.first - band.margin, band.last + band.margin
        inside[max(0, first - low) : max(0, last - low + 1)] = True
    return inside[offsets - low]


def _fill(levels: np.ndarray, strokes: np.ndarray, band: Band) -> None:
    """Give the band's pixels, and its margin, what a stroke crossing it would: the lower of the two
    levels just beyond its edges, paired along any line through the pixel up to 45 degrees from
    square across the band (a slanted stroke leaves the band further along than it entered), where
    `strokes` (ink on neither family of lines) lie on both sides. Where the band meets the image's
    edge, the level on its other side."""
    height, width = levels.shape
    cols = np.arange(width)
    top, bottom = band.edges(cols)
    above, below = (side.astype(np.int16) for side in band.beside(levels, outside=255))
    thickness = int((bottom - top).max()) + 1
    # Pairs are looked for only where strokes lie on both sides within reach; elsewhere the lower
    # level across (paper, or the other family's line, taken out after) is what a pair would give.
    inked_above, inked_below = band.beside(strokes, outside=False)
    reach = np.ones(2 * thickness + 1)
    near = (np.convolve(inked_above, reach, "same") > 0) & (np.convolve(inked_below, reach, "same") > 0)
    crossing = np.flatnonzero(near)
    shifts = np.arange(-thickness, thickness + 1)[:, None]
    straight = np.minimum(above, below)
    for row in range(thickness):
        along = (row + 1) / (thickness + 1)  # how far across the band, from its top edge
        entered = crossing[None, :] - np.round(along * shifts).astype(np.int64)
        left = crossing[None, :] + np.round((1 - along) * shifts).astype(np.int64)
        inside = (entered >= 0) & (entered < width) & (left >= 0) & (left < width)
        paired = np.minimum(above[np.clip(entered, 0, width - 1)], below[np.clip(left, 0, width - 1)])
        fill = straight.copy()
        fill[crossing] = np.where(inside, paired, 0).max(axis=0)
        fill = np.where(fill == 255, 0, fill)  # no level on either side: the band spans the image
        rows = top + row
        kept = (rows >= 0) & (rows < height) & (rows <= bottom)
        levels[rows[kept], cols[kept]] = fill[kept]
