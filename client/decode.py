"""Uploaded bytes to a picture, or an ImageError saying why not.

Its own module because it is the part that meets hostile bytes: whatever a client sends is checked
here against limits on bytes and pixels and against the formats allowed, before anything else runs.
The byte count and the pixel count (read from the header) are checked before a single pixel is
decoded, so a decompression bomb costs milliseconds. client/normalise.py finds the digit in what
comes out.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# Phones' photos in HEIF containers, told apart by their ISO media brand: named, since Pillow decodes
# none of them (no HEIC decoder; AVIF is left out of FORMATS).
HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF"}
# An image whose longer side is under this is too small to hold a digit: MNIST's are 20 px, and 8 px
# hold too little to read (client/normalise.py takes ink that small for a speck, too).
MIN_DIGIT_SIDE = 8

# Pillow warns of images over its own pixel limit; ours (Limits.max_pixels) refuses them anyway, so the
# warning is noise; so are its other warnings (corrupt EXIF, palette transparency), printed on stderr
# beside the command's one line. Filtered once here: warnings.catch_warnings() per call is not
# thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class ImageError(ValueError):
    """An upload that cannot become a digit, with what is wrong with it."""


SHRINK = "resize or crop it to the digit"  # what a user can do about a file too large


@dataclass(frozen=True)
class Limits:
    """What an upload may be, checked on its header before any pixel is decoded: a small file can
    claim a huge or absurdly thin picture (1 x 25,000,000 pixels in 48 KB of PNG)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_side: int = 16_384  # past any camera's side: the pixel count is the bound that bites
    max_aspect: float = 100.0  # longer side over shorter: far past any digit, however tightly cropped


def decode(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """The first frame of an image file, refused before decoding if it is too big."""
    if not data:
        raise ImageError("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(
            f"the file is {len(data):,} bytes, over the limit of {limits.max_bytes:,} bytes: {SHRINK}"
        )
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own limit, far past ours
        raise ImageError(f"the image is over the limit of {limits.max_pixels:,} pixels: {SHRINK}") from None
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
            raise ImageError(f"{HEIF_BRANDS[data[8:12]]} is not supported: convert to PNG or JPEG") from None
        raise ImageError("not an image file (expected PNG, JPEG, WebP, GIF, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"the image header is damaged ({err})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageError(
            f"the image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {limits.max_pixels:,}: {SHRINK}"
        )
    if max(width, height) < MIN_DIGIT_SIDE:
        raise ImageError(f"the image is {width}x{height} pixels: too small to hold a digit")
    if max(width, height) > limits.max_side:
        raise ImageError(
            f"the image is {width}x{height} pixels, a side over the limit of {limits.max_side:,}: {SHRINK}"
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise ImageError(
            f"the image is {width}x{height} pixels, one side over {limits.max_aspect:g} times the other: "
            "crop it to the digit"
        )
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # a phone photo the right way up
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"the image is truncated or corrupt ({err})") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float scans: stretch to 8 bits
        values = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            raise ImageError("the image holds no finite pixel values")
        # A float scan's missing pixels (NaN, infinities) are taken for paper: its median level.
        values = np.where(finite, values, np.median(values[finite]))
        # Stretched between its 0.1st and 99.9th percentiles, not its extremes: one hot or dead pixel
        # squeezed a scan held in 10 bits into a few grey levels, and its digit into a speck.
        low, high = (float(v) for v in np.percentile(values, [0.1, 99.9]))
        stretched = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0)
        image = Image.fromarray(np.uint8(np.round(stretched * 255)))
    return image
