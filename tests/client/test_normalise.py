"""Normalisation lands uploads in MNIST's layout; every kind of bad upload gets its own error."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

from client import imageops
from client.decode import ImageError
from client.normalise import (
    centre_of_mass,
    hysteresis_regions,
    median_level,
    normalise_bytes,
    normalise_image,
    stroke_width,
    to_mnist_layout,
)
from tests.client.conftest import encode, photo_of
from trainer.data import Split


def assert_mnist_layout(
    image: np.ndarray, original: np.ndarray | None = None, min_correlation: float = 0.8
) -> None:
    """Centre of mass within a pixel of (14, 14), longer side of the ink 19-20 px, like MNIST's."""
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() == 255
    row, col = ndimage.center_of_mass(image.astype(float))
    assert abs(row - 14) <= 1.0 and abs(col - 14) <= 1.0, (row, col)
    rows, cols = np.nonzero(image > 30)
    assert 18 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 21
    if original is not None:  # the same strokes, give or take a pixel of placement
        shifted = (np.roll(original, (dr, dc), axis=(0, 1)) for dr in (-1, 0, 1) for dc in (-1, 0, 1))
        assert max(np.corrcoef(image.ravel(), s.ravel())[0, 1] for s in shifted) > min_correlation


KINDS: dict[str, dict[str, Any]] = {
    "dark ink on light paper, off-centre": dict(at=(40, 300)),
    "small and far off-centre": dict(scale=4, at=(350, 20)),
    "uneven light": dict(light_slope=120),
    "sensor noise": dict(noise=18),
    "faint pencil": dict(ink=0.35),
}


@pytest.mark.parametrize("kind", KINDS)
def test_photos_of_digits_land_in_the_mnist_layout(kind: str, mnist_test: Split) -> None:
    for index in range(8):
        digit = mnist_test.images[index]
        normalised = normalise_bytes(encode(photo_of(digit, **KINDS[kind]), "JPEG"))
        assert_mnist_layout(normalised.image, digit)
        assert normalised.tensor.shape == (28, 28, 1) and normalised.tensor.dtype == np.float32
        assert normalised.tensor.max() == pytest.approx(1.0)


def test_a_stroke_that_fades_stays_whole(mnist_test: Split) -> None:
    """Pencil pressed hard at the top and lightly at the bottom: the faint end is part of the same
    stroke, not paper (a single threshold cut it off, or broke it into specks)."""
    for index in range(8):
        fading = np.linspace(1.0, 0.3, 28)[:, None]
        digit = (mnist_test.images[index] * fading).astype(np.uint8)
        normalised = normalise_bytes(encode(photo_of(digit, noise=6), "JPEG"))
        assert_mnist_layout(normalised.image, digit)


def test_digit_on_squared_paper(mnist_test: Split) -> None:
    """Squared paper's lines touch every stroke, a third as dark as the ink and twice that where they
    cross: they are paper, and the digit comes out as it does from plain paper."""
    for index in range(8):
        photo = photo_of(mnist_test.images[index], noise=4, seed=index)
        rows, cols = (np.arange(side) % 60 < 2 for side in photo.shape)
        squared = np.clip(photo - 60.0 * rows[:, None] - 60.0 * cols[None, :], 0, 255).astype(np.uint8)
        plain = normalise_bytes(encode(photo, "JPEG")).image
        assert_mnist_layout(normalise_bytes(encode(squared, "JPEG")).image, plain, min_correlation=0.9)


def test_light_ink_on_dark_board(mnist_test: Split) -> None:
    board = 255 - photo_of(mnist_test.images[0])
    assert_mnist_layout(normalise_bytes(encode(board)).image, mnist_test.images[0])


def test_rgba_canvas_export_reads_ink_from_alpha(mnist_test: Split) -> None:
    canvas = np.zeros((400, 400, 4), np.uint8)
    canvas[..., :3] = 20  # black strokes: only the alpha channel tells ink from background
    canvas[80:360, 50:330, 3] = np.asarray(Image.fromarray(mnist_test.images[3]).resize((280, 280)))
    assert_mnist_layout(normalise_bytes(encode(canvas, "PNG", "RGBA")).image, mnist_test.images[3])


def test_opaque_picture_with_transparent_corners_is_paper_not_a_canvas(mnist_test: Split) -> None:
    photo = photo_of(mnist_test.images[5], size=(320, 320), at=(20, 20))
    rgba = np.zeros((320, 320, 4), np.uint8)  # see-through corners hide black, as many exporters do
    rgba[..., :3] = photo[..., None]
    rows, cols = np.ogrid[:320, :320]
    corners = np.minimum(np.hypot(np.minimum(rows, 319 - rows) - 40, np.minimum(cols, 319 - cols) - 40), 99)
    inside = (np.minimum(rows, 319 - rows) >= 40) | (np.minimum(cols, 319 - cols) >= 40) | (corners <= 40)
    rgba[..., 3] = np.where(inside, 255, 0)
    assert 0 < (rgba[..., 3] == 0).mean() < 0.05
    assert_mnist_layout(normalise_bytes(encode(rgba, "PNG", "RGBA")).image, mnist_test.images[5])


def test_a_picture_at_one_opacity_is_read_from_its_colours(mnist_test: Split) -> None:
    """A layer exported at 80% opacity is see-through everywhere alike: no canvas, whose strokes are
    the opaque part (it was read from its flat alpha: "the image looks blank")."""
    rgba = np.empty((320, 320, 4), np.uint8)
    rgba[..., :3] = photo_of(mnist_test.images[5], size=(320, 320), at=(20, 20))[..., None]
    rgba[..., 3] = 204
    assert_mnist_layout(normalise_bytes(encode(rgba, "PNG", "RGBA")).image, mnist_test.images[5])


def test_a_photo_opened_by_the_caller_is_turned_by_its_exif_orientation(mnist_test: Split) -> None:
    """normalise_image(Image.open(path)), the library's own way in, turns a phone photo stored on its
    side the right way up, as normalise_bytes does."""
    upright = photo_of(mnist_test.images[7], size=(300, 300), scale=8, at=(20, 30))
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as the sensor held it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif.tobytes())
    opened = normalise_image(Image.open(io.BytesIO(buffer.getvalue()))).image
    assert_mnist_layout(opened, mnist_test.images[7])
    assert np.array_equal(opened, normalise_bytes(buffer.getvalue()).image)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_colour_and_palette(fmt: str, mnist_test: Split) -> None:
    grey = photo_of(mnist_test.images[1], size=(300, 300), scale=8, at=(20, 30))
    rgb = np.stack([grey, (grey * 0.9).astype(np.uint8), grey], axis=-1)  # tinted paper
    image = Image.fromarray(rgb)
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    assert_mnist_layout(normalise_bytes(buffer.getvalue()).image, mnist_test.images[1])


def test_animated_gif_uses_its_first_frame(mnist_test: Split) -> None:
    frames = [Image.fromarray(photo_of(mnist_test.images[2], size=(300, 300), scale=8, at=(20, 30)))]
    frames.append(Image.new("L", (300, 300), 225))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert_mnist_layout(normalise_bytes(buffer.getvalue()).image, mnist_test.images[2])


def test_a_photo_with_the_table_round_the_sheet(mnist_test: Split) -> None:
    """The sheet turned and not filling the frame: the dark table along the sides is not the digit."""
    photo = Image.fromarray(photo_of(mnist_test.images[0], at=(100, 180))).rotate(
        5, resample=Image.Resampling.BICUBIC, fillcolor=60
    )
    normalised = normalise_bytes(encode(np.asarray(photo), "JPEG"))
    assert_mnist_layout(normalised.image, mnist_test.images[0], min_correlation=0.7)


@pytest.mark.parametrize("darkening", [0.2, 0.35])
def test_a_small_digit_in_a_photo_with_darkened_corners(darkening: float, mnist_test: Split) -> None:
    """A lens darkens a photo's corners: all round the edge, that reads as a frame of ink that dwarfs a
    small digit in the middle (1-2% of it), and it had set the threshold (the digit came out as a
    disc, or the frame itself was taken for the digit)."""
    height, width = 1200, 1600
    photo = photo_of(mnist_test.images[0], size=(height, width), scale=5, at=(530, 730)).astype(float)
    rows, cols = np.ogrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    photo *= 1 - darkening * (rows**2 + cols**2) / 2
    normalised = normalise_bytes(encode(photo.astype(np.uint8), "JPEG"))
    assert_mnist_layout(normalised.image, mnist_test.images[0])


def test_a_photo_taken_in_dim_light_has_grey_paper_under_darker_ink(mnist_test: Split) -> None:
    """Paper at 90 of 255 is in the dark half, yet it is the paper: the ink reaches far darker."""
    photo = photo_of(mnist_test.images[1], paper=90, ink=0.25, noise=4)
    assert_mnist_layout(normalise_bytes(encode(photo, "JPEG")).image, mnist_test.images[1])


@pytest.mark.parametrize("index", [17, 91, 291])
def test_a_small_digit_cropped_tight_keeps_its_wide_strokes_whole(index: int, mnist_test: Split) -> None:
    """Cropped to its ink and 12 px tall, a digit's strokes are as wide as the window the paper's level
    is taken over (a quarter of the image): that level took them for paper, and left their edges
    (correlations of 0.06-0.31 with the digit). One level for the whole image finds them whole."""
    pixels = mnist_test.images[index]
    rows, cols = np.nonzero(pixels)
    digit = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    width = max(1, round(digit.shape[1] * 12 / digit.shape[0]))
    small = np.asarray(Image.fromarray(digit).resize((width, 12), Image.Resampling.BILINEAR))
    image = normalise_bytes(encode(255 - small)).image
    expected = to_mnist_layout(small / 255.0) * 255
    assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.95


def _drawn_on(photo: np.ndarray, shapes: list[tuple[str, tuple[int, int, int, int]]]) -> np.ndarray:
    """The photo with dark rectangles ("box") or lines ("line") drawn over it, 5 px wide."""
    page = Image.fromarray(photo)
    draw = ImageDraw.Draw(page)
    for kind, (x0, y0, x1, y1) in shapes:
        if kind == "box":
            draw.rectangle((x0, y0, x1, y1), outline=40, width=5)
        else:
            draw.line((x0, y0, x1, y1), fill=40, width=5)
    return np.asarray(page)


@pytest.mark.parametrize(
    "shapes",
    [[("box", (40, 30, 360, 360))], [("line", (30, 340, 420, 340))], [("line", (0, 20, 639, 20))]],
    ids=["a-box-round-it", "an-underline", "a-rule-across-the-page"],
)
def test_lines_drawn_round_the_digit_are_not_ink(shapes: list[Any], mnist_test: Split) -> None:
    """A box round the digit (a form's), an underline, a ruled line: straight lines past the digit."""
    photo = _drawn_on(photo_of(mnist_test.images[0], at=(60, 90), scale=9), shapes)
    assert_mnist_layout(normalise_bytes(encode(photo)).image, mnist_test.images[0])


def test_a_dot_or_a_tiny_image_is_no_digit() -> None:
    """A speck of ink on a page was blown up to a 20 px blob and answered as a digit."""
    page = np.full((200, 200), 230, np.uint8)
    page[98:102, 98:102] = 20
    with pytest.raises(ImageError, match=r"the ink is a speck of \d+x\d+ pixels"):
        normalise_bytes(encode(page))
    with pytest.raises(ImageError, match="the image is 2x2 pixels: too small to hold a digit"):
        normalise_bytes(encode(np.array([[20, 230], [230, 230]], np.uint8)))


def test_ruled_paper_alone_is_no_digit_but_a_1_with_a_foot_is_one(mnist_test: Split) -> None:
    rules = [("line", (0, y, 639, y)) for y in range(40, 480, 60)]
    with pytest.raises(ImageError, match="only straight lines across the image"):
        normalise_bytes(encode(_drawn_on(np.full((480, 640), 225, np.uint8), rules)))
    one = _drawn_on(
        np.full((300, 200), 225, np.uint8), [("line", (100, 40, 100, 250)), ("line", (60, 262, 140, 262))]
    )
    inked = normalise_bytes(encode(one)).image > 64
    rows = np.flatnonzero(inked.any(axis=1))
    assert len(rows) >= 18 and np.count_nonzero(inked[rows[-3:]].any(axis=0)) >= 6  # the stem, the foot


def test_a_small_digit_in_a_large_photo_fills_the_mnist_box(mnist_test: Split) -> None:
    """The soft edges kept round the strokes were a ring sized by the image (5 px at 1024): round a
    40 px digit it took noise into the box, and the digit came out 16 px tall of MNIST's 20."""
    for index in range(8):
        digit = mnist_test.images[index]
        photo = photo_of(digit, size=(768, 1024), scale=2, at=(300, 400), noise=3)
        inked = normalise_bytes(encode(photo, "JPEG")).image > 30
        rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
        assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 18, index


def test_small_marks_far_from_the_digit_are_not_part_of_it(mnist_test: Split) -> None:
    """A word printed in a corner of the page (a letterhead, a logo) or a page number stretched the
    digit's box, and the digit came out a fraction of MNIST's 20 px; a mark the size of a digit
    beside it is still a second digit, refused."""
    for index in range(6):
        digit = mnist_test.images[index]
        page = Image.fromarray(photo_of(digit, size=(600, 800), at=(150, 250), noise=4))
        if index % 2:
            ImageDraw.Draw(page).text((620, 20), "ACME", fill=40, font=ImageFont.load_default(size=40))
        else:
            ImageDraw.Draw(page).text((700, 540), "12", fill=50, font=ImageFont.load_default(size=30))
        assert_mnist_layout(normalise_bytes(encode(np.asarray(page), "JPEG")).image, digit)
    two = Image.fromarray(photo_of(mnist_test.images[0], size=(600, 1000), at=(150, 100), noise=4))
    ImageDraw.Draw(two).text((700, 150), "4", fill=40, font=ImageFont.load_default(size=300))
    with pytest.raises(ImageError, match="2 digits side by side"):
        normalise_bytes(encode(np.asarray(two)))


@pytest.mark.parametrize("ring", ["a heavy box", "a circle"])
def test_a_box_or_circle_round_the_digit_is_not_ink(ring: str, mnist_test: Split) -> None:
    """A form's box drawn as heavily as the pen holds most of the ink, so it was no line round a
    fragment (without_the_lines kept it); a circle round the answer is no straight line at all. Either
    was read with the digit inside it, as a 0 or an 8."""
    for index in range(6):
        digit = mnist_test.images[index]
        page = Image.fromarray(photo_of(digit, size=(600, 600), scale=8, at=(188, 188), noise=3))
        if ring == "a heavy box":
            ImageDraw.Draw(page).rectangle((128, 128, 472, 472), outline=40, width=14)
        else:
            ImageDraw.Draw(page).ellipse((110, 90, 490, 510), outline=40, width=12)
        assert_mnist_layout(normalise_bytes(encode(np.asarray(page), "JPEG")).image, digit)


def _an_8_in_thin_pen(side: int, pen: int, sharpening: int) -> np.ndarray:
    """Two loops 30% of the page tall, drawn `pen` px wide on grey paper with a little noise, then
    sharpened as phones sharpen (an unsharp mask, `sharpening` percent)."""
    page = Image.new("L", (side, side), 225)
    loop = np.linspace(0, 2 * np.pi, 200)
    radius, middle = side * 0.075, side / 2
    for centre, width in ((middle - radius, 0.8), (middle + radius, 0.9)):
        points = np.stack([middle + radius * width * np.sin(loop), centre + radius * np.cos(loop)], 1)
        ImageDraw.Draw(page).line([tuple(p) for p in points], fill=90, width=pen)
    if sharpening:
        page = page.filter(ImageFilter.UnsharpMask(radius=2, percent=sharpening, threshold=0))
    noisy = np.asarray(page, np.float32) + np.random.default_rng(0).normal(0, 3, (side, side))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("side", "pen", "sharpening"),
    [(1000, 2, 150), (3000, 3, 0)],
    ids=["a sharpened photo", "a large photo reduced"],
)
def test_an_8_in_thin_pen_keeps_its_loops_open(side: int, pen: int, sharpening: int) -> None:
    """A halo lighter than the paper along thin strokes (a phone's sharpening; Lanczos when a large
    picture was reduced) was taken for the paper inside the loops, which then read as ink: the 8
    came out a solid blob, with no hole in it."""
    image = normalise_bytes(encode(_an_8_in_thin_pen(side, pen, sharpening))).image
    paper = image < 32
    _, holes = ndimage.label(paper & ndimage.binary_fill_holes(~paper))
    assert holes == 2 and np.count_nonzero(image > 127) < 0.15 * image.size


def test_digits_side_by_side_are_refused_but_a_digit_in_pieces_is_read(mnist_test: Split) -> None:
    """A number written out was squeezed into one 20 px "digit" and answered with confidence; a 4 whose
    bar stops short of its stem is one digit in two pieces."""
    pair = np.hstack([mnist_test.images[0], mnist_test.images[1], mnist_test.images[2]])
    big = Image.fromarray(pair).resize((pair.shape[1] * 6, pair.shape[0] * 6), Image.Resampling.BILINEAR)
    page = np.full((260, big.size[0] + 80), 225.0)
    page[40 : 40 + big.size[1], 40 : 40 + big.size[0]] -= 0.75 * np.asarray(big, float)
    with pytest.raises(ImageError, match="3 digits side by side: each image is read as one digit"):
        normalise_bytes(encode(page.astype(np.uint8)))
    four = [("line", (60, 40, 50, 160)), ("line", (50, 160, 130, 160)), ("line", (145, 60, 145, 260))]
    inked = normalise_bytes(encode(_drawn_on(np.full((300, 200), 225, np.uint8), four))).image > 64
    assert np.ptp(np.flatnonzero(inked.any(axis=1))) + 1 >= 19  # the whole 4, stem and all


def test_a_digit_cropped_tight_keeps_the_strokes_along_the_edge() -> None:
    """A seven cropped to its ink: the top bar runs along the whole top edge and stays, though a
    fragment of ink lies clear of the edge (as in a photo with the table round the sheet)."""
    seven = np.full((60, 40), 250, np.uint8)
    seven[:4, :] = 10  # the bar, along the top edge
    for row in range(4, 60):  # the stem, down to the bottom edge
        seven[row, max(0, 30 - row // 2) : max(5, 35 - row // 2)] = 10
    seven[28:34, 32:38] = 60  # a fragment, clear of the edge
    inked = normalise_bytes(encode(seven, "PNG")).image > 128
    rows = np.flatnonzero(inked.any(axis=1))
    assert rows[-1] - rows[0] >= 17  # the whole seven, 20 px tall, not the fragment
    assert inked[rows[0] : rows[0] + 2].any(axis=0).sum() >= 10  # its bar, 13 px wide at the top
    assert inked[rows[-1] - 1 : rows[-1] + 1].any(axis=0).sum() <= 6  # its stem's foot


def test_typeset_digit(mnist_test: Split) -> None:
    from PIL import ImageDraw, ImageFont

    page = Image.new("L", (300, 200), 240)
    ImageDraw.Draw(page).text((100, 20), "4", fill=30, font=ImageFont.load_default(size=140))
    assert_mnist_layout(normalise_bytes(encode(np.asarray(page))).image)


def test_small_digit_in_a_noisy_photo_gets_black_paper_around_it() -> None:
    """As in MNIST, where every pixel two or more away from the strokes is 0: the sensor noise around
    a small digit in a large photo does not come out as a grey halo."""
    from PIL import ImageDraw, ImageFont

    for digit in "2357":
        page = Image.new("L", (1024, 768), 220)
        ImageDraw.Draw(page).text((400, 300), digit, fill=40, font=ImageFont.load_default(size=60))
        noise = np.random.default_rng(int(digit)).normal(0, 15, page.size[::-1])
        photo = np.clip(np.asarray(page) + noise, 0, 255).astype(np.uint8)
        image = normalise_bytes(encode(photo, "JPEG")).image
        around = ndimage.distance_transform_edt(image < 128) >= 2
        assert image[around].mean() < 2.5, digit


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode(np.full((60, 60), 230, np.uint8)), "no ink found"),
        (
            encode(np.random.default_rng(0).normal(230, 3, (60, 60)).clip(0, 255).astype(np.uint8), "JPEG"),
            "no ink found",
        ),
    ],
)
def test_bad_uploads_get_specific_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        normalise_bytes(data)


def test_noise_is_no_digit_but_a_digit_cropped_tight_is_one(mnist_test: Split) -> None:
    """Noise comes out as ink over most of the image, which no digit on paper covers: a specific error,
    not a confident answer. A digit cropped to its bounding box (a "1" is mostly ink) still reads."""
    rng = np.random.default_rng(3)
    for side, sigma in ((300, 255), (120, 80), (500, 40)):
        noise = np.clip(128 + rng.normal(0, sigma, (side, side)), 0, 255).astype(np.uint8)
        with pytest.raises(ImageError, match="no digit found: ink covers"):
            normalise_bytes(encode(noise))
    for image in mnist_test.images[:100]:
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        normalise_bytes(encode(255 - image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]))


@pytest.mark.parametrize("hot_pixel", [False, True], ids=["whole-range", "ten-bits-and-a-hot-pixel"])
def test_sixteen_bit_scan(mnist_test: Split, hot_pixel: bool) -> None:
    """A 16-bit scan reads as its 8-bit twin; one held in 10 bits with a single hot pixel too (stretched
    from its extremes, it was a speck of a few grey levels)."""
    scan = photo_of(mnist_test.images[5]).astype(np.uint16) * (4 if hot_pixel else 257)
    if hot_pixel:
        scan[0, 0] = 65535
    buffer = io.BytesIO()
    Image.fromarray(scan).save(buffer, "PNG")
    assert_mnist_layout(normalise_bytes(buffer.getvalue()).image, mnist_test.images[5])


def test_a_float_scan_with_missing_pixels_reads_them_as_paper(mnist_test: Split) -> None:
    """NaN and infinite pixels (a float TIFF from a scanner's software) are paper, read silently."""
    scan = photo_of(mnist_test.images[7]).astype(np.float32) / 255
    scan[:3, :3], scan[-1, -1] = np.nan, np.inf

    def tiff(values: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(values, mode="F").save(buffer, "TIFF")
        return buffer.getvalue()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy warning would print beside the command's one line
        image = normalise_bytes(tiff(scan)).image
    assert_mnist_layout(image, mnist_test.images[7])
    with pytest.raises(ImageError, match="no finite pixel values"):
        normalise_bytes(tiff(np.full((40, 40), np.nan, np.float32)))


@pytest.mark.fast
@pytest.mark.parametrize("seed", range(24))
def test_image_steps_give_what_numpy_and_ndimage_give(seed: int) -> None:
    """The numpy and Pillow steps that stand in for np.median, np.bincount and ndimage's morphology,
    filters and labelling (the client installs without SciPy) give the same answers, on random
    shapes, masks and levels: exactly, but for the Gaussian blur, which sums in float32 where ndimage
    sums in float64."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(side) for side in rng.integers(1, 90, 2))
    mask = rng.random(shape) < rng.uniform(0.2, 0.9)
    for steps in (1, 2, 5):
        expected = ndimage.binary_dilation(mask, iterations=steps)
        assert np.array_equal(imageops.binary_dilation(mask, steps), expected)
    assert np.array_equal(imageops.binary_erosion(mask), ndimage.binary_erosion(mask))
    outline = mask & ~ndimage.binary_erosion(mask)
    assert stroke_width(mask) == 2 * float(mask.sum()) / max(int(outline.sum()), 1)
    labels, count = imageops.label(mask)
    expected_labels, expected_count = ndimage.label(mask)
    assert count == expected_count and np.array_equal(labels, expected_labels)

    levels = rng.integers(0, 256, shape).astype(np.uint8)
    assert median_level(levels) == np.median(levels)
    if mask.any():
        assert median_level(levels, mask) == np.median(levels[mask])
    smooth = (rng.random(shape) * 255.99).astype(np.float32)
    counts = np.bincount(smooth.astype(np.intp).ravel(), minlength=256)
    assert np.array_equal(imageops.level_counts(smooth), counts)

    for side in (3, 4, int(rng.integers(5, 100))):  # odd and even windows, some wider than the image
        assert np.array_equal(imageops.grey_opening(levels, side), ndimage.grey_opening(levels, size=side))
    for sigma in (0.5, float(rng.uniform(0.6, 20))):  # kernels up to 160 taps, most wider than the image
        np.testing.assert_allclose(
            imageops.gaussian_filter(levels, sigma),
            ndimage.gaussian_filter(levels.astype(np.float32), sigma),
            atol=1e-3,
        )

    strong = mask & (rng.random(shape) < 0.05)
    labels, sizes = hysteresis_regions(strong, mask)
    expected, count = ndimage.label(mask)
    touched = np.unique(expected[strong])
    expected_sizes = np.where(np.isin(expected, touched[touched > 0]), expected, 0)
    kept = sizes[labels] > 0  # the same pixels kept, each with its own region's size
    assert np.array_equal(kept, expected_sizes > 0)
    assert np.array_equal(sizes[labels][kept], np.bincount(expected.ravel())[expected][kept])

    field = rng.random((28, 28)).astype(np.float32) * (rng.random((28, 28)) < 0.3)
    if field.any():
        assert np.array_equal(centre_of_mass(field), ndimage.center_of_mass(field))


def _squared(photo: np.ndarray, spacing: int, width: int, darkness: float, slant: float) -> np.ndarray:
    """`photo` on squared paper: lines `width` px wide every `spacing` px, `darkness` times as dark as
    the ink at full strength, turned by `slant` degrees (a photo taken at an angle)."""
    rows, cols = np.indices(photo.shape).astype(float)
    turn = np.tan(np.radians(slant))
    lines = ((rows - cols * turn) % spacing < width) | ((cols + rows * turn) % spacing < width)
    return np.clip(photo - darkness * 0.75 * 255 * lines, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("darkness, width, slant", [(0.5, 4, 0.0), (0.7, 3, 2.0), (1.0, 2, -3.0)])
def test_digit_on_dark_squared_paper(darkness: float, width: int, slant: float, mnist_test: Split) -> None:
    """Lines half as dark as the ink or darker, or as wide as a fine pen, survive the blur that fades
    fainter ones and join every stroke they cross: the grid was read as the digit (a correlation of
    0.2-0.5 with the digit on plain paper). Taken out, at a slant too, the digit comes out whole."""
    for index in range(6):
        photo = photo_of(mnist_test.images[index], noise=4, seed=index)
        plain = normalise_bytes(encode(photo, "JPEG")).image
        lined = normalise_bytes(encode(_squared(photo, 40, width, darkness, slant), "JPEG")).image
        assert_mnist_layout(lined, plain, min_correlation=0.85)


def test_digit_written_across_dark_ruled_lines(mnist_test: Split) -> None:
    """Ruled lines as dark as the ink, one under the digit's foot and two through it: they were read
    as part of the digit, or the page refused as lines alone."""
    for index in range(6):
        photo = photo_of(mnist_test.images[index], noise=4, seed=index)
        rows = np.arange(photo.shape[0])
        ruled = (rows - (60 + 10 * 24)) % 90 < 3  # a line under row 24 of the digit's 28, scaled by 10
        lined = np.clip(photo - 0.75 * 255 * ruled[:, None], 0, 255).astype(np.uint8)
        plain = normalise_bytes(encode(photo, "JPEG")).image
        assert_mnist_layout(normalise_bytes(encode(lined, "JPEG")).image, plain, min_correlation=0.85)


@pytest.mark.parametrize(
    "width, row", [(3, 24), (8, 22), (4, 14)], ids=["under-it", "thick-at-its-foot", "through-it"]
)
def test_a_line_as_dark_as_the_pen_touching_the_digit(width: int, row: int, mnist_test: Split) -> None:
    """A form's line, alone, under or through the digit and far past it: it was read with the digit
    (a correlation of 0.07-0.55 with the digit without it)."""
    for index in range(6):
        photo = photo_of(mnist_test.images[index], noise=4, seed=index)
        lined = photo.astype(float)
        top = 60 + 10 * row  # the digit's row, scaled by 10 and placed 60 px down
        lined[top : top + width, 40:600] -= 0.75 * 255
        plain = normalise_bytes(encode(photo, "JPEG")).image
        image = normalise_bytes(encode(np.clip(lined, 0, 255).astype(np.uint8), "JPEG")).image
        assert_mnist_layout(image, plain, min_correlation=0.85)


def test_a_digit_cropped_tight_to_its_bar_keeps_it() -> None:
    """A 7 cropped tight has one straight band across the image, its bar: no paper's line."""
    drawn = _drawn_on(
        np.full((120, 100), 230, np.uint8), [("line", (0, 6, 99, 6)), ("line", (99, 6, 40, 119))]
    )
    inked = normalise_bytes(encode(drawn)).image > 64
    rows = np.flatnonzero(inked.any(axis=1))
    assert np.count_nonzero(inked[rows[0] : rows[0] + 3].any(axis=0)) >= 10  # the bar, still there
