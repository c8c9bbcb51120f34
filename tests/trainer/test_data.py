"""The IDX loader on the real files and on broken ones, and the stratified validation split."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA_DIR
from trainer.data import IMAGE_MAGIC, DataError, Split, load_mnist, load_pair, read_idx, stratified_split

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def write_idx(path: Path, magic: int, shape: tuple[int, ...], payload: bytes) -> Path:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
    path.write_bytes(gzip.compress(header + payload))
    return path


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "mnist"
    shutil.copytree(DATA_DIR, copy)
    return copy


def test_published_files_load_with_their_documented_shapes_and_counts() -> None:
    train = load_pair(DATA_DIR, "train")
    test = load_pair(DATA_DIR, "t10k")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert train.images.dtype == np.uint8 and train.images.max() == 255


def test_missing_file_is_named(data_copy: Path) -> None:
    (data_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: data file not found"):
        load_pair(data_copy, "t10k")


def test_truncated_gzip_is_refused(data_copy: Path) -> None:
    path = data_copy / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: not a complete gzip file"):
        load_pair(data_copy, "train")


def test_wrong_checksum_is_refused(data_copy: Path) -> None:
    path = data_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still a well-formed IDX file
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: SHA-256 .* expected ff7bcfd416de"):
        load_pair(data_copy, "t10k")


def test_wrong_magic_and_short_payload_are_refused(tmp_path: Path) -> None:
    labels_as_images = write_idx(tmp_path / "a.gz", 0x00000801, (3,), bytes(3))
    with pytest.raises(DataError, match="IDX magic is 0x00000801, expected 0x00000803"):
        read_idx(labels_as_images, IMAGE_MAGIC)
    short = write_idx(tmp_path / "b.gz", IMAGE_MAGIC, (2, 28, 28), bytes(28 * 28))
    with pytest.raises(DataError, match=r"expected 1584 for shape \(2, 28, 28\)"):
        read_idx(short, IMAGE_MAGIC)


def test_well_formed_idx_reads_into_its_shape(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "ok.gz", IMAGE_MAGIC, (2, 28, 28), bytes(range(256)) * 6 + bytes(32))
    images = read_idx(path, IMAGE_MAGIC)
    assert images.shape == (2, 28, 28) and images[0, 0, 5] == 5


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(10), [100 + 10 * d for d in range(10)])
    split = Split(np.arange(len(labels))[:, None, None].astype(np.int64), labels)
    train, val = stratified_split(split, 0.2, seed=1)
    assert np.bincount(val.labels).tolist() == [round((100 + 10 * d) * 0.2) for d in range(10)]
    assert not set(train.images.ravel()) & set(val.images.ravel())
    assert len(train) + len(val) == len(split)
    again, _ = stratified_split(split, 0.2, seed=1)
    other, _ = stratified_split(split, 0.2, seed=2)
    assert np.array_equal(train.images, again.images) and not np.array_equal(train.images, other.images)


def test_limit_takes_the_first_images_and_keeps_the_full_test_set() -> None:
    data = load_mnist(DATA_DIR, 0.1, seed=0, limit=1000)
    assert len(data.train) + len(data.val) == 1000 and len(data.val) == 100
    assert len(data.test) == 10000


@pytest.mark.parametrize(
    ("content", "checksum", "words"),
    [
        (b"PK", None, "the handwriting set's checksum is missing"),
        (b"PK", "", "is not the one in"),
        (b"\x93NUMPY garbage", "match", "not a handwriting set"),
    ],
    ids=["no-checksum", "empty-checksum", "not-an-archive"],
)
def test_a_damaged_handwriting_set_is_one_line(
    tmp_path: Path, content: bytes, checksum: str | None, words: str
) -> None:
    """Not an IndexError, KeyError or numpy's pickle refusal from deep in the load."""
    import hashlib

    from trainer.data import load_handwriting

    path = tmp_path / "handwriting.npz"
    path.write_bytes(content)
    if checksum is not None:
        stated = hashlib.sha256(content).hexdigest() if checksum == "match" else checksum
        path.with_name("handwriting.npz.sha256").write_text(stated)
    with pytest.raises(DataError, match=words):
        load_handwriting(path)


def test_a_file_unpacking_past_any_mnist_file_is_refused_as_it_unpacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not unpacked whole first (3 GB of zeros in 14 MB of gzip took 6.3 GB before the checksum)."""
    from trainer import data

    monkeypatch.setattr(data, "MAX_IDX_BYTES", 1 << 20)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes(2 << 20)) + gzip.compress(b"more"))
    with pytest.raises(DataError, match="unpacks to more than 1 MB, more than any MNIST file"):
        read_idx(bomb, IMAGE_MAGIC)
    two_members = tmp_path / "two.gz"  # a file compressed in two parts reads as one
    two_members.write_bytes(gzip.compress(bytes(100)) + gzip.compress(bytes(28)))
    assert data._gunzipped(two_members) == bytes(128)
