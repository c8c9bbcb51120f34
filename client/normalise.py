"""Turn an image a person made (photo, scan, canvas export) into what the model was trained on.

MNIST's own recipe: grey ink as high values on a zero background, cropped to the ink, the longer side
scaled to 20 px with anti-aliasing, placed in a 28x28 field with the centre of mass at pixel (14, 14).
Before that, what MNIST never had: colour, transparency, light or dark paper, uneven light and sensor
noise, which a background estimate and an Otsu threshold (with hysteresis) take away.

The uploaded bytes are decoded, within limits on bytes and pixels, by client/decode.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from client.decode import MIN_DIGIT_SIDE, ImageError, Limits, decode
from client.imageops import binary_dilation, binary_erosion, gaussian_filter, grey_opening, level_counts
from client.paper_lines import LINE_INK_SHARE, without_paper_lines
from client.regions import (
    digits_side_by_side,
    extent,
    hysteresis_regions,
    without_stray_marks,
    without_the_frame,
    without_the_lines,
    without_the_ring,
)
from contract.signature import IMAGE_SHAPE

WORKING_SIDE = 1024  # larger images are reduced to this before the ink is found: plenty for a 20 px digit
DIGIT_SIDE = 20
FIELD_SIDE = IMAGE_SHAPE[0]
MNIST_CENTRE = np.array([14.0, 14.0])  # the mean centre of mass of MNIST digits, (row, column)
# Faint ink, down to this share of the Otsu level, counts when it touches ink above the level. Lower
# lets the lines of squared paper in along the strokes (0.6 did, at a third of the ink's contrast).
FAINT_INK_SHARE = 0.7
# Kept ink covering more of the image than this is no digit on paper: noise and textures come out as
# one region over 75-100% of it (90% of noise images tried), digits under 21% on paper and at most
# 62% cropped tight to their bounding box (MNIST's test digits).
MAX_INK_SHARE = 0.75
# Kept ink covering this much of the image or more is a digit cropped tight, whose strokes may be as
# wide as the window the paper's level is taken over locally (a quarter of the image's side).
DENSE_INK_SHARE = 0.1
# Halos (see without_halos): the paper's level is taken from the image's means over squares this many
# pixels a side, wider than the halos a phone's sharpening draws along strokes (a pixel or two each
# side); a pixel is a halo's when it is lighter than that by more than this many times the noise's
# sigma (noise reaches about 4.2 of its sigmas below its mean within an opening's window, 5 in a
# megapixel).
HALO_BLOCK = 2
HALO_NOISE_MARGIN = 6.0
NOISE_PER_MEDIAN_STEP = 1.0484  # a Gaussian's sigma over the median difference of two of its draws
HOLLOW_GAIN = 1.3  # how much more ink one paper level must find for the strokes to count as hollowed
FLAT_INK_SHARE = 0.65  # at most this much of the image may be ink over one paper level
EXIF_ORIENTATION = 0x0112  # the EXIF tag saying which way up the sensor's rows are


@dataclass(frozen=True)
class Normalised:
    image: np.ndarray  # uint8 [28, 28], ink = 255: what the model sees, for showing to people
    tensor: np.ndarray  # float32 [28, 28, 1] in [0, 1]: the serving signature's input


# A canvas export is mostly see-through around opaque strokes; a picture with a few see-through
# pixels (rounded corners, a cut-out border) is paper with ink on it.
CANVAS_MIN_TRANSPARENT_SHARE = 0.3
# ... and its strokes are at least this much more opaque than the rest (a faint brush is a quarter).
CANVAS_MIN_ALPHA_RANGE = 32


def ink_map(image: Image.Image) -> np.ndarray:
    """8-bit levels [h, w] with ink high: alpha for transparent canvases, else inverted grey when the
    paper is light."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        # One opacity throughout (a layer exported at 80%) draws nothing: the picture is in its colours.
        see_through = (alpha < 250) & (np.ptp(alpha) >= CANVAS_MIN_ALPHA_RANGE)
        if see_through.mean() >= CANVAS_MIN_TRANSPARENT_SHARE:  # the strokes are the opaque part
            return alpha
        grey = np.array(image.convert("L"))
        if see_through.any():  # whatever colour hides under them, the see-through pixels are paper
            grey[see_through] = round(median_level(grey, ~see_through))
    else:
        grey = np.asarray(image.convert("L"))
    return 255 - grey if paper_is_light(grey) else grey


def paper_is_light(grey: np.ndarray) -> bool:
    """Whether the paper is lighter than the ink: when the median is in the light half; or when the
    levels darker than it reach twice as far from it as the lighter ones or more, since a photo taken
    in dim light has grey paper (at 100 of 255, say) under ink darker still. (Light ink on a dark
    board reaches far the other way: MNIST's own pictures are black paper under white ink.)"""
    at_most = np.cumsum(level_counts(grey))
    low, median, high = np.searchsorted(at_most, np.array([0.005, 0.5, 0.995]) * at_most[-1])
    return bool(median > 127 or median - low > 2 * (high - median))


def median_level(levels: np.ndarray, where: np.ndarray | None = None) -> float:
    """np.median of 8-bit levels (those where `where` is set), read off their counts: no sorting."""
    at_most = np.cumsum(level_counts(levels, where))
    middle = np.searchsorted(at_most, [(at_most[-1] - 1) // 2, at_most[-1] // 2], side="right")
    return float(middle.mean())


def _reduce(image: Image.Image) -> Image.Image:
    longer = max(image.size)
    if longer <= WORKING_SIDE:
        return image
    scale = WORKING_SIDE / longer
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB").resize(
        size, Image.Resampling.BOX
    )


def otsu_threshold(values: np.ndarray) -> float:
    """The level that best splits `values` (0-255) into two classes (Otsu, 1979)."""
    histogram = level_counts(values)
    levels = np.arange(256.0)
    weights = np.cumsum(histogram).astype(np.float64)
    means = np.cumsum(histogram * levels)
    total_weight, total_mean = weights[-1], means[-1]
    background, foreground = weights, total_weight - weights
    valid = (background > 0) & (foreground > 0)
    between = np.zeros(256)
    between[valid] = (total_mean * background[valid] - means[valid] * total_weight) ** 2 / (
        background[valid] * foreground[valid]
    )
    return float(levels[int(np.argmax(between))])


def stroke_width(mask: np.ndarray) -> float:
    """The mean width of the strokes in `mask`, in pixels: a ribbon's area over half its outline."""
    # The outline: ink with paper, or the image's edge, among its four neighbours (what an erosion
    # with paper beyond the edge takes away).
    return 2 * float(mask.sum()) / max(int(np.count_nonzero(mask & ~binary_erosion(mask))), 1)


def ink_regions(ink: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice] | None]:
    """Where the strokes are in ink levels with the paper at 0: blurred, thresholded (Otsu, with
    hysteresis), specks dropped. Also, when a frame round the image was dropped (without_the_frame),
    a crop round the rest with some paper, to be cleaned on its own; else None."""
    side = max(ink.shape)
    sigma = max(0.5, side / 400)
    smooth = gaussian_filter(ink, sigma)
    if float(smooth.max()) - float(smooth.min()) < 24:  # under ~10% contrast: paper, not a digit
        raise ImageError("no ink found: the image looks blank")
    level = otsu_threshold(smooth)
    # Dark lines of ruled or squared paper join every stroke they cross: taken out first.
    paper_only = without_paper_lines(ink, smooth > LINE_INK_SHARE * level)
    if paper_only is not ink:
        ink, smooth = paper_only, gaussian_filter(paper_only, sigma)
        level = otsu_threshold(smooth)
    # Blurred again in proportion to the strokes: thick strokes keep their strength while lines
    # thinner than them (ruled or squared paper) fade, and a stroke broken into fragments joins up.
    stroke_sigma = stroke_width(smooth > level) / 4
    if stroke_sigma > sigma:  # else the first blur already is the one wanted
        smooth = gaussian_filter(ink, stroke_sigma)
        level = otsu_threshold(smooth)
    labels, sizes = hysteresis_regions(smooth > level, smooth > FAINT_INK_SHARE * level)
    if not sizes.any():
        raise ImageError("no ink found: the image looks blank")
    unframed = without_the_frame(labels, sizes)
    kept = np.where(unframed >= 0.05 * unframed.max(), unframed, 0)  # drop specks of noise
    unlined = without_the_lines(labels, kept)
    if unlined is None:
        raise ImageError("no digit found: only straight lines across the image (ruled paper?)")
    kept = without_stray_marks(labels, without_the_ring(labels, unlined))
    keep = (kept >= 0.05 * kept.max())[labels]  # specks next to the digit, once lines dwarfed them
    if unframed is sizes:
        return keep, None
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    margin = max(rows[-1] - rows[0], cols[-1] - cols[0]) // 8 + 2
    top, left = max(0, rows[0] - margin), max(0, cols[0] - margin)
    return keep, (slice(top, rows[-1] + 1 + margin), slice(left, cols[-1] + 1 + margin))


def hollowed(keep: np.ndarray, flat_keep: np.ndarray) -> bool:
    """Whether the strokes found over a local paper level (`keep`) are what is left of strokes wider
    than its window, which one paper level for the whole image finds whole (`flat_keep`): those hold
    30% more ink or more, and most of the local strokes, and still leave paper round the digit.
    (Thin strokes come out the same either way: on 2,280 typeset and MNIST renders, at most 17% more
    over one level; digits drawn with a wide marker and cropped tight, a median of 96% more. Uneven
    light over one level is ink over most of the image.)"""
    kept, flat_kept = np.count_nonzero(keep), np.count_nonzero(flat_keep)
    return bool(
        flat_kept >= HOLLOW_GAIN * kept
        and np.count_nonzero(keep & flat_keep) >= 0.9 * kept
        and flat_kept <= FLAT_INK_SHARE * flat_keep.size
    )


def without_halos(ink: np.ndarray) -> np.ndarray:
    """`ink` with its halos filled in: pixels lighter than the paper nearby by more than the noise
    makes any, lifted to that bound.

    A phone's sharpening draws a halo lighter than the paper along each stroke; so does resampling
    (Lanczos, bicubic) and JPEG. The paper's level is a grey opening (the lowest level nearby), which
    inside every loop a halo rings would take from the halo: the loop then read as ink (an 8 written
    with a thin pen came out as a solid blob). Averaged over a few pixels a halo is gone, as it is
    light beside a dark stroke: the paper's level here is the opening of the image's means over
    HALO_BLOCK-pixel squares, blurred over their neighbours. Noise is not lifted: its lowest tail
    stays within the bound (HALO_NOISE_MARGIN). An image without halos comes out as it would without
    this, or within a few grey levels (of 1,960 typeset and MNIST renders, 599 moved, by a median of
    4 levels at the most-moved pixel, and a model read every one the same)."""
    height, width = ink.shape
    block = HALO_BLOCK if min(height, width) >= 4 * HALO_BLOCK else 1
    # Pillow reduces and blurs in C: a Gaussian of sigma 2 at full size cost six times as much.
    means = np.asarray(Image.fromarray(ink).reduce(block).filter(ImageFilter.GaussianBlur(1)))
    paper = grey_opening(means, max(3, max(means.shape) // 4))
    paper = np.repeat(np.repeat(paper, block, axis=0), block, axis=1)[:height, :width]
    # Neighbours differ by the noise times the square root of 2: their median difference gives its
    # sigma, strokes being too few to move it.
    steps = np.abs(np.diff(ink.astype(np.int16), axis=1))
    noise = NOISE_PER_MEDIAN_STEP * median_level(np.minimum(steps, 255))
    bound = paper.astype(np.float32) - HALO_NOISE_MARGIN * max(noise, 1.0)
    return np.maximum(ink, np.clip(np.ceil(bound), 0, 255).astype(np.uint8))


def clean_ink(ink: np.ndarray) -> np.ndarray:
    """Background and noise removed: ink where there is a stroke, exactly 0 elsewhere, in the
    strokes' bounding box. An image with a frame round it (see without_the_frame) is cleaned again in
    a crop round what the frame held: the frame, not the strokes, set the threshold the first time (a
    small digit in a photo with darkened corners kept a disc of paper round it)."""
    side = max(ink.shape)
    # The paper's own brightness, wherever it varies slowly: what a grey opening wider than any
    # stroke leaves of the image. Taken away, uneven light is gone.
    lifted = without_halos(ink)
    levels = lifted - grey_opening(lifted, max(3, side // 4))  # an opening never exceeds what it opens
    keep, framed = ink_regions(levels)
    if framed is not None and ink[framed].size < 0.9 * ink.size:  # smaller each time: no frame left
        return clean_ink(ink[framed])
    if np.count_nonzero(keep) >= DENSE_INK_SHARE * keep.size:  # cropped tight: strokes may be wide
        flat = ink - ink.min()  # one level for the paper, wherever it is
        try:
            flat_keep, _ = ink_regions(flat)
        except ImageError:
            flat_keep = keep
        if hollowed(keep, flat_keep):
            levels, keep = flat, flat_keep
    covered = np.count_nonzero(keep) / keep.size
    if covered > MAX_INK_SHARE:
        raise ImageError(
            f"no digit found: ink covers {covered:.0%} of the image (noise, a texture, or no paper round "
            "the digit): crop to the digit with some paper around it"
        )
    top, bottom, left, right = extent(keep)
    # Ink whose longer side is under MIN_DIGIT_SIDE (in pixels of the image as reduced to WORKING_SIDE),
    # on a page four times its size or more, is a speck or a dot, not a digit.
    if max(bottom - top, right - left) < min(MIN_DIGIT_SIDE, side / 4):
        raise ImageError(
            f"no digit found: the ink is a speck of {bottom - top}x{right - left} pixels: crop closer to "
            "the digit, or use a sharper picture"
        )
    digits = digits_side_by_side(keep)
    if digits > 1:
        raise ImageError(f"{digits} digits side by side: each image is read as one digit, so crop to one")
    ink = levels
    # With their soft edges: a ring as wide as the image's blur, but no wider than a twentieth of the
    # digit (a small digit in a large photo took a ring of noise 5 px wide into its box, a third of it).
    ring = max(1, min(side // 200, max(bottom - top, right - left) // 20))
    strokes = binary_dilation(keep, ring)
    # The grey opening sits below the paper's mean by the noise's lower tail, so noise leaves a
    # residue everywhere; kept in the soft edges, it draws a grey halo round a small digit in a large
    # photo. The edges lose the paper's median residue.
    residue = median_level(ink, ~strokes) if not strokes.all() else 0.0
    rows, cols = np.flatnonzero(strokes.any(axis=1)), np.flatnonzero(strokes.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)  # all there is from here on
    keep, strokes, levels = keep[box], strokes[box], ink[box].astype(np.float32)
    cleaned = np.where(keep, levels, np.where(strokes, np.clip(levels - residue, 0, None), 0.0))
    peak = np.percentile(cleaned[keep], 90)
    return np.clip(cleaned / max(peak, 1e-6), 0.0, 1.0)


def centre_of_mass(field: np.ndarray) -> np.ndarray:
    """(row, column) of the ink's centre of mass, summed as ndimage.center_of_mass sums it."""
    rows, cols = np.ogrid[: field.shape[0], : field.shape[1]]
    mass = field.sum()
    return np.array([(field * rows.astype(float)).sum() / mass, (field * cols.astype(float)).sum() / mass])


def to_mnist_layout(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, longer side to 20 px, centre of mass to (14, 14) of a 28x28 field."""
    inked = ink > 0
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = DIGIT_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(
        Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    )
    digit = np.clip(digit / max(float(digit.max()), 1e-6), 0.0, 1.0)  # the strongest stroke at full ink
    field = np.zeros((FIELD_SIDE, FIELD_SIDE), dtype=np.float32)
    top, left = (FIELD_SIDE - size[1]) // 2, (FIELD_SIDE - size[0]) // 2
    field[top : top + size[1], left : left + size[0]] = digit
    shift = np.round(MNIST_CENTRE - centre_of_mass(field)).astype(int)
    # Never shift ink out of the field: the digit is at most 20 px, so 4 px of margin remain each side.
    rows, cols = np.nonzero(field)
    shift[0] = np.clip(shift[0], -rows.min(), FIELD_SIDE - 1 - rows.max())
    shift[1] = np.clip(shift[1], -cols.min(), FIELD_SIDE - 1 - cols.max())
    return np.roll(field, tuple(shift), axis=(0, 1))


def normalise_image(image: Image.Image) -> Normalised:
    """A picture, as Pillow opened it, to the model's input; ImageError says why it cannot be one. A
    phone's photo is turned the right way up first, by its EXIF orientation, as `decode` turns files
    (Pillow opens it as the sensor stored it: a 6 on its side is no 6)."""
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        try:
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(f"the image is truncated or corrupt ({err})") from None
    field = to_mnist_layout(clean_ink(ink_map(_reduce(image))))
    return Normalised(
        image=np.round(field * 255).astype(np.uint8), tensor=field[..., None].astype(np.float32)
    )


def normalise_bytes(data: bytes, limits: Limits = Limits()) -> Normalised:  # noqa: B008 (Limits is frozen)
    """An uploaded file's bytes to the model's input; ImageError says what is wrong with a bad one."""
    return normalise_image(decode(data, limits))
