"""Which regions of ink are the digit: those the thresholds found, less what frames the image (a
desk, darkened corners) and the straight lines drawn round the digit (a box, an underline, a rule).

The rules look at each region's size, place and shape alone; client/normalise.py finds the regions
and cleans what is kept.
"""

from __future__ import annotations

import numpy as np

from client.imageops import label

Box = tuple[int, int, int, int]  # top, bottom, left and right (one past) of a region's pixels

# A region this much in straight runs over most of its width or height is a line or a box (whose
# corners the blur rounds: a drawn box's share was 0.85); digits other than a 1 are far from it.
STRAIGHT_SHARE = 0.8


# A number written out is digits side by side: groups of columns with ink, parted by columns of none,
# each at least DIGIT_HEIGHT of the ink's height and DIGIT_MASS of the biggest group's ink, in a whole
# at least WIDE times as wide as it is tall. A digit drawn in pieces is narrower, or its pieces
# smaller: of 10,000 MNIST test digits, 3,500 of the handwriting set and 2,280 typeset and MNIST
# renders, one was taken for two, an MNIST 4 with a 1-like mark beside it; of 300 pairs of MNIST
# digits, set apart by -4 to 7 px, 296 were found.
DIGIT_HEIGHT = 0.5
DIGIT_MASS = 0.3
WIDE = 0.8
# What a ring round the digit (see without_the_ring) holds is a digit when it is at least this share of
# the ring's height: a box or a circle drawn round a digit is seldom twice its size.
RING_CONTENT = 0.3
# A region farther from the digit than this share of the digit's longer side is no piece of it (see
# without_stray_marks).
STRAY_GAP = 0.5


def digits_side_by_side(keep: np.ndarray) -> int:
    """How many digits the kept ink holds side by side (see DIGIT_HEIGHT), at least 1."""
    rows = np.flatnonzero(keep.any(axis=1))
    height = rows[-1] - rows[0] + 1
    columns = keep.any(axis=0).astype(np.int8)
    bounds = np.flatnonzero(np.diff(columns, prepend=0, append=0))
    starts, ends = bounds[::2], bounds[1::2]
    if len(starts) < 2 or ends[-1] - starts[0] < WIDE * height:
        return 1
    heights = np.array(
        [np.ptp(np.flatnonzero(keep[:, a:b].any(axis=1))) + 1 for a, b in zip(starts, ends, strict=True)]
    )
    masses = np.add.reduceat(keep.sum(axis=0), starts)
    digit_like = (heights >= DIGIT_HEIGHT * height) & (masses >= DIGIT_MASS * masses.max())
    return max(1, int(np.count_nonzero(digit_like)))


def hysteresis_regions(strong: np.ndarray, weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hysteresis, as edge detectors threshold: the regions of `weak` that touch `strong`. A stroke
    that fades (pencil pressed lightly, a scan's faint end) stays whole instead of breaking into
    specks, while faint smudges away from the strokes stay out. The regions' labels [h, w] and each
    label's size in pixels, 0 for the regions that do not touch `strong`."""
    labels, count = label(weak)
    touched = np.zeros(count + 1, dtype=bool)
    touched[labels[strong]] = True
    touched[0] = False
    return labels, np.where(touched, np.bincount(labels.ravel(), minlength=count + 1), 0)


def without_the_frame(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`sizes` with the regions that frame the image set to 0, when a digit lies clear of the edge
    (`sizes` itself, the same object, when nothing frames it).

    A photo whose sheet does not fill the frame has the table, or the sheet's shadowed edge, along its
    sides; a lens darkens a photo's corners; darker than the paper, either reads as ink, and as the
    biggest ink at that. Such a region touches the edge over a quarter of a side or more and lies in a
    band along it (an eighth of the shorter side). It is dropped only when a region of real size
    touches no edge: a digit cropped tight touches the edge too and reaches in from it, and then stays.
    Real size is the speck rule's, a twentieth of the biggest region; a frame that runs round three
    quarters of the edge or more, which no digit does (cropped tight, it touches each side along a
    stroke), dwarfs the digit inside it, and there a hundredth will do (a 3 of 120 px in a 4000 px
    photo with darkened corners was 1.2% of its frame)."""
    shorter = min(labels.shape)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    contact = np.bincount(edge, minlength=len(sizes))
    inner = max(1, shorter // 8)
    middle = labels[inner:-inner, inner:-inner]
    in_middle = np.bincount(middle.ravel(), minlength=len(sizes))
    framing = (contact >= shorter / 4) & (sizes > 0) & (sizes - in_middle >= 0.9 * sizes)
    framing[0] = False
    share = 0.01 if (framing & (contact >= 0.75 * edge.size)).any() else 0.05
    if not framing.any() or not ((contact == 0) & (sizes > 0) & (sizes >= share * sizes.max())).any():
        return sizes
    return np.where(framing, 0, sizes)


def without_the_lines(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray | None:
    """`sizes` with the straight lines round the digit set to 0: a box drawn round it, an underline, a
    ruled line as dark as the pen. A region is a line when most of it (STRAIGHT_SHARE) lies in
    straight runs, across or down, over most of its own width or height. It goes when ink that is no
    line (the digit, a third of the ink or more) remains and the line reaches past that ink: half as
    far again across or down, or round it, a little wider and taller. So a 1, which is a line too,
    stays, and so does a 5's flag, as wide as its body. None when the image holds rules across it and
    nothing else: no digit."""
    regions = [int(region) for region in np.flatnonzero(sizes)]
    if len(regions) < 2:
        return sizes
    bounds = region_bounds(labels, regions)
    lines = [
        region for region in regions if _straight_share(labels, region, bounds[region]) >= STRAIGHT_SHARE
    ]
    if not lines:
        return sizes
    digit = (sizes[labels] > 0) & ~np.isin(labels, lines)
    if not digit.any():
        return None if sum(_spans(bounds[region], labels.shape) for region in lines) >= 2 else sizes
    if np.count_nonzero(digit) < 0.3 * np.count_nonzero(sizes[labels]):  # a fragment is no digit
        return sizes
    top, bottom, left, right = extent(digit)
    height, width = bottom - top, right - left
    sizes = sizes.copy()
    for region in lines:
        r_top, r_bottom, r_left, r_right = bounds[region]
        r_height, r_width = r_bottom - r_top, r_right - r_left
        around = r_top <= top and r_bottom >= bottom and r_left <= left and r_right >= right
        if (
            r_width >= 1.5 * width
            or r_height >= 1.5 * height
            or (around and r_width >= 1.15 * width and r_height >= 1.15 * height)
        ):
            sizes[region] = 0
    return sizes


def without_the_ring(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`sizes` with a ring round the digit set to 0: a form's box, however heavy its line (a box with
    most of the ink is no line round a fragment to without_the_lines), or a circle drawn round the
    answer, which is no straight line at all. A region is such a ring when the holes it closes hold
    all the other ink, and that ink is a digit's worth: at least RING_CONTENT of the ring's height.
    (A 0 with a speck in it keeps its loop: the speck is too small.)"""
    regions = [int(region) for region in np.flatnonzero(sizes)]
    if len(regions) < 2:
        return sizes
    inked = sizes[labels] > 0
    bounds = region_bounds(labels, regions)
    for ring in regions:
        others = inked & (labels != ring)
        top, bottom, left, right = bounds[ring]
        o_top, o_bottom, o_left, o_right = extent(others)
        if not (top < o_top and o_bottom < bottom and left < o_left and o_right < right):
            continue  # the rest is not within the ring's box, let alone its holes
        if o_bottom - o_top < RING_CONTENT * (bottom - top):
            continue
        box = slice(top, bottom), slice(left, right)
        around, count = label(labels[box] != ring)
        outside = np.unique(np.concatenate([around[0], around[-1], around[:, 0], around[:, -1]]))
        holes = ~np.isin(around, outside) & (around > 0)
        if count and np.count_nonzero(others[box] & holes) == np.count_nonzero(others):
            sizes = sizes.copy()
            sizes[ring] = 0
            return sizes
    return sizes


def without_stray_marks(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`sizes` with the small marks far from the digit set to 0: a word or a logo printed on the
    page, a page number, a dot of the pen. Their ink stretched the digit's box, and the digit came
    out a fraction of MNIST's 20 px.

    The digit is the biggest region and every region within STRAY_GAP of the digit's longer side of
    it (a digit's own pieces are close: a 5's flag, a 4's bar, a stroke broken by a light touch),
    gathered until no other is that close. A region farther off goes when it is smaller than a
    digit as digits_side_by_side counts them (under DIGIT_HEIGHT of the digit's height, or under
    DIGIT_MASS of its biggest region's ink); one the size of a digit stays, for that to find."""
    regions = [int(region) for region in np.flatnonzero(sizes)]
    if len(regions) < 2:
        return sizes
    bounds = region_bounds(labels, regions)
    biggest = max(regions, key=lambda region: int(sizes[region]))
    top, bottom, left, right = bounds[biggest]
    digit, others = {biggest}, set(regions) - {biggest}
    while near := {
        region
        for region in others
        if _gap(bounds[region], (top, bottom, left, right)) <= STRAY_GAP * max(bottom - top, right - left)
    }:
        digit |= near
        others -= near
        top = min(top, *(bounds[region][0] for region in near))
        bottom = max(bottom, *(bounds[region][1] for region in near))
        left = min(left, *(bounds[region][2] for region in near))
        right = max(right, *(bounds[region][3] for region in near))
    stray = [
        region
        for region in others
        if bounds[region][1] - bounds[region][0] < DIGIT_HEIGHT * (bottom - top)
        or sizes[region] < DIGIT_MASS * sizes[biggest]
    ]
    if not stray:
        return sizes
    sizes = sizes.copy()
    sizes[stray] = 0
    return sizes


def _gap(one: Box, other: Box) -> int:
    """How far apart two boxes (top, bottom, left, right; one past) are: the wider of the gaps across
    and down, 0 where they overlap."""
    across = max(one[2] - other[3], other[2] - one[3], 0)
    down = max(one[0] - other[1], other[0] - one[1], 0)
    return max(across, down)


def _straight_share(labels: np.ndarray, region: int, bounds: Box) -> float:
    """How much of a region lies in straight runs across or down over 60% of its width or height."""
    top, bottom, left, right = bounds
    mask = labels[top:bottom, left:right] == region
    across = long_runs(mask, max(2, round(0.6 * (right - left))))
    down = long_runs(mask.T, max(2, round(0.6 * (bottom - top)))).T
    return np.count_nonzero(across | down) / max(1, int(np.count_nonzero(mask)))


def long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """The pixels of `mask` in a run of `length` or more along its rows."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # in the same raster order as the starts
    long = ends - starts >= length
    marks = np.zeros((height, width + 1), np.int32)
    marks[rows[long], starts[long]] += 1
    marks[rows[long], ends[long]] -= 1
    return np.cumsum(marks, axis=1)[:, :width] > 0


def extent(mask: np.ndarray) -> Box:
    """Top, bottom, left and right (one past) of the set pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def region_bounds(labels: np.ndarray, regions: list[int]) -> dict[int, Box]:
    """Each of `regions`' box, as extent(labels == region) gives it (what ndimage.find_objects
    finds), from one pass over the labels rather than one a region."""
    wanted = np.zeros(int(labels.max()) + 1, dtype=bool)
    wanted[regions] = True
    rows, cols = np.nonzero(wanted[labels])
    found = labels[rows, cols]
    first_row, first_col = np.full(len(wanted), labels.shape[0]), np.full(len(wanted), labels.shape[1])
    last_row, last_col = np.full(len(wanted), -1), np.full(len(wanted), -1)
    np.minimum.at(first_row, found, rows)
    np.maximum.at(last_row, found, rows)
    np.minimum.at(first_col, found, cols)
    np.maximum.at(last_col, found, cols)
    return {
        region: (
            int(first_row[region]),
            int(last_row[region]) + 1,
            int(first_col[region]),
            int(last_col[region]) + 1,
        )
        for region in regions
    }


def _spans(bounds: Box, shape: tuple[int, ...]) -> bool:
    """Whether a region is a rule across the image: from one side to the opposite one, and thin (a
    tenth of the image the other way at most; a 1 cropped tight spans it too, but is no thin line)."""
    top, bottom, left, right = bounds
    across = left == 0 and right == shape[1] and bottom - top <= 0.1 * shape[0]
    down = top == 0 and bottom == shape[0] and right - left <= 0.1 * shape[1]
    return across or down
