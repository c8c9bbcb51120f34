"""MNIST from its IDX files, verified, split and fed to Keras.

The IDX files are read with numpy only (no TensorFlow), so a bad data file is reported before the
slow TensorFlow import. Each file is checked against the SHA-256 of its *decompressed* bytes, which is
stable whatever gzip produced it (see data/mnist/README.md).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801

# SHA-256 of the decompressed bytes of each file of the published dataset.
EXPECTED_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


class DataError(Exception):
    """A data file is missing, unreadable, truncated or not the published one."""


@dataclass(frozen=True)
class Split:
    """Images as uint8 [n, 28, 28] (0 = background, 255 = ink) and int labels [n]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Handwriting:
    """The handwriting set (data/handwriting, `make handwriting-data`): its training sources' samples,
    and its dev sources', which are never trained on."""

    train: Split
    dev: Split
    counts: dict[str, int]  # samples per source
    sha256: str


@dataclass(frozen=True)
class Mnist:
    train: Split
    val: Split
    test: Split
    checksums: dict[str, str]
    handwriting: Handwriting | None = None  # mixed into training batches when the recipe asks for it


def load_handwriting(path: Path) -> Handwriting:
    """The handwriting set, checked against the SHA-256 written beside it."""
    stated = path.with_name(path.name + ".sha256")
    if not path.is_file():
        raise DataError(f"{path}: the handwriting set is missing (make handwriting-data writes it)")
    if not stated.is_file():
        raise DataError(
            f"{stated}: the handwriting set's checksum is missing (make handwriting-data writes it)"
        )
    raw = path.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != (stated.read_text(errors="replace").split() or [""])[0]:
        raise DataError(f"{path}: SHA-256 {actual[:12]}... is not the one in {stated.name} (rebuild it)")
    try:
        with np.load(io.BytesIO(raw)) as arrays:
            images, labels, source = arrays["images"], arrays["labels"], arrays["source"]
            names, dev = [str(n) for n in arrays["source_names"]], arrays["dev"]
        held_out = dev[source]
    except (OSError, ValueError, KeyError, IndexError, EOFError) as err:
        raise DataError(f"{path}: not a handwriting set ({err}; make handwriting-data rebuilds it)") from None
    return Handwriting(
        train=Split(images[~held_out], labels[~held_out]),
        dev=Split(images[held_out], labels[held_out]),
        counts={name: int((source == i).sum()) for i, name in enumerate(names)},
        sha256=actual,
    )


MAX_IDX_BYTES = 64 << 20  # MNIST's largest file unpacks to 47,040,016 bytes


def _gunzipped(path: Path) -> bytes:
    """A gzip file's content, each member in turn, refused once past MAX_IDX_BYTES: 14 MB of gzip may
    hold gigabytes, which were all unpacked (6.3 GB of memory) before the checksum refused them."""
    data, parts, size = path.read_bytes(), [], 0
    try:
        while data:
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            part = member.decompress(data, MAX_IDX_BYTES + 1 - size)
            size += len(part)
            if size > MAX_IDX_BYTES:
                raise DataError(
                    f"{path}: unpacks to more than {MAX_IDX_BYTES >> 20} MB, more than any MNIST file "
                    "(a damaged or different file: copy the four MNIST IDX files again)"
                )
            if not member.eof:
                raise DataError(f"{path}: not a complete gzip file (it ends before its data does)")
            parts.append(part)
            data = member.unused_data
    except zlib.error as err:
        raise DataError(f"{path}: not a complete gzip file ({err})") from None
    return b"".join(parts)


def read_idx(path: Path, magic: int, expected_sha256: str | None = None) -> np.ndarray:
    """Read one gzip-compressed IDX file into a uint8 array shaped by its header."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found (copy the four MNIST IDX files into {path.parent})")
    raw = _gunzipped(path)
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise DataError(
                f"{path}: SHA-256 of the decompressed data is {actual[:12]}..., expected "
                f"{expected_sha256[:12]}... (a damaged or different file)"
            )
    if len(raw) < 8:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DataError(f"{path}: IDX magic is 0x{found_magic:08x}, expected 0x{magic:08x}")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + int(np.prod(shape))
    if len(raw) != expected_len:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected_len} for shape {shape} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def load_pair(data_dir: Path, prefix: str, verify: bool = True) -> Split:
    """Load `<prefix>-images` and `<prefix>-labels` and check that they belong together."""
    names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    images = read_idx(data_dir / names[0], IMAGE_MAGIC, EXPECTED_SHA256[names[0]] if verify else None)
    labels = read_idx(data_dir / names[1], LABEL_MAGIC, EXPECTED_SHA256[names[1]] if verify else None)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{data_dir / names[0]}: images of shape {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} {prefix} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{data_dir / names[1]}: label {labels.max()} outside 0-9")
    return Split(images, labels)


def stratified_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Carve a validation set holding `val_fraction` of every class, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for digit in range(10):
        members = np.flatnonzero(split.labels == digit)
        take = int(round(len(members) * val_fraction))
        val_idx.append(rng.permutation(members)[:take])
    val_mask = np.zeros(len(split), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    train_idx = np.flatnonzero(~val_mask)
    val_only = np.flatnonzero(val_mask)
    return (
        Split(split.images[train_idx], split.labels[train_idx]),
        Split(split.images[val_only], split.labels[val_only]),
    )


def load_mnist(
    data_dir: Path,
    val_fraction: float,
    seed: int,
    limit: int | None = None,
    handwriting: Path | None = None,
) -> Mnist:
    """The train/validation/test splits; `limit` keeps the first N training images for quick runs;
    `handwriting`: the handwriting set to load beside them."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a folder (the data folder holds the four MNIST IDX files)")
    full_train = load_pair(data_dir, "train")
    test = load_pair(data_dir, "t10k")
    if limit is not None:
        full_train = Split(full_train.images[:limit], full_train.labels[:limit])
    train, val = stratified_split(full_train, val_fraction, seed)
    if len(val) == 0 or len(train) == 0:
        raise DataError(f"{len(full_train)} training images leave nothing for validation at {val_fraction}")
    extra = None if handwriting is None else load_handwriting(handwriting)
    return Mnist(train, val, test, checksums=dict(EXPECTED_SHA256), handwriting=extra)
