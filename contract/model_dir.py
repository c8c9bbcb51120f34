"""The model directory: numbered versions beside the trainer's staging and progress files.

`<base>/<N>/` is version N, holding the SavedModel, `model.tflite` and `assets.extra/`. The trainer
names its versions 1, 2, 3, ...; every name TF Serving reads as a number counts (`007`, `+5`, `0`).
A version is written under a dot-named staging directory and renamed into place when complete, so a
reader never sees half of one. `<base>/.runs/<run-id>/` holds a run's live progress; dot-names are
never versions.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

ASSETS_EXTRA = "assets.extra"
HISTORY, METRICS, MODEL_CARD = "history", "metrics", "model_card"  # assets.extra/<name>.json
# assets.extra/uploads.json: written later by `make bench-uploads`, each outside source's accuracy
# through the whole upload path (files, CLI, server) for the version it served.
UPLOADS = "uploads"
SOURCE_MISSES = 20  # misses drawn per source on the Evaluation page
WARMUP_FILE = "tf_serving_warmup_requests"  # in assets.extra, replayed by the server before traffic
TFLITE_FILE = "model.tflite"  # serving_default for LiteRT, read by --prefer_tflite_model
# model.tflite's metadata entry holding its SignatureDefs: all TF Serving's TFLite path serves.
TFLITE_SIGNATURES = "signature_defs_metadata"
SAVED_MODEL_FILE = "saved_model.pb"
MAX_VERSION = 2**63 - 1  # TF Serving reads a version as an int64
STALE_STAGING_S = 3600.0
RUNS = ".runs"
PROGRESS_FILE = "progress.json"
# A multi-worker run's last epoch checkpoint, written by worker 0, read by every worker to resume;
# removed once the run has exported its version.
BACKUP = ".backup"


# What absl::SimpleAtoi takes for an int: ASCII space around, a sign, digits.
_SIMPLE_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")


class NoVersionLeft(ValueError):
    """The model directory holds the highest version number already."""


def simple_atoi(text: str, bits: int) -> int | None:
    """The signed int of `bits` that absl::SimpleAtoi reads in `text`, or None."""
    match = _SIMPLE_ATOI.fullmatch(text)
    if match is None:
        return None
    number = int(match[1])
    return number if -(2 ** (bits - 1)) <= number < 2 ** (bits - 1) else None


def version_number(name: str) -> int | None:
    """The version a child of a base path names, or None, as TF Serving reads it (ParseVersionNumber,
    sources/storage_path/file_system_storage_path_source.cc:86-88): `7`, `007`, `0`, `-1` and `+5`
    are versions; a number past int64 is not."""
    return simple_atoi(name, 64)


def versions(base_path: Path) -> list[int]:
    """The versions present, oldest first, as the trainer names them (`7`, never `007` or `+7`, so
    that `base_path / str(version)` is the directory), each holding a SavedModel (an empty `1/` is no
    model to serve); none when the base path does not exist yet."""
    if not base_path.is_dir():
        return []
    named = [
        (n, p) for p in base_path.iterdir() if (n := version_number(p.name)) is not None and p.name == str(n)
    ]
    return sorted(n for n, path in named if _holds_a_saved_model(path))


def _holds_a_saved_model(path: Path) -> bool:
    try:
        return (path / SAVED_MODEL_FILE).is_file()
    except OSError:  # unreadable: nothing this process can serve or show
        return False


def artefact_path(base_path: Path, version: int, name: str) -> Path:
    """assets.extra/<name>.json of a version (HISTORY, METRICS, MODEL_CARD or UPLOADS)."""
    return base_path / str(version) / ASSETS_EXTRA / f"{name}.json"


def progress_path(base_path: Path, run_id: str) -> Path:
    return base_path / RUNS / run_id / PROGRESS_FILE


def remove_stale_staging(base_path: Path, older_than_s: float = STALE_STAGING_S) -> None:
    """Remove staging directories a killed trainer left behind: an export writes its staging directory
    within minutes, so one untouched for longer than `older_than_s` has nobody writing it."""
    if not base_path.is_dir():
        return
    cutoff = time.time() - older_than_s
    for path in base_path.glob(".staging-*"):
        with contextlib.suppress(OSError):  # another trainer removed it first, or it is not ours to remove
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path)


@contextlib.contextmanager
def staging(base_path: Path, name: str) -> Iterator[Path]:
    """A fresh staging directory for one version; removed on the way out, whatever happened (after a
    publish there is nothing left to remove)."""
    path = base_path / f".staging-{name}"
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def next_version(base_path: Path) -> int:
    """The number a version published now takes: one past every name a server reads as a version
    (`+12` too: a lower number would never be served as the latest), files too (a rename onto one
    would fail again and again). NoVersionLeft when that is past what a server reads."""
    taken = [version_number(p.name) for p in base_path.iterdir()]
    version = max([0, *(n for n in taken if n is not None)]) + 1
    if version > MAX_VERSION:
        raise NoVersionLeft(
            f"{base_path} holds version {MAX_VERSION}, the highest a server reads: no next version"
        )
    return version


def publish(staged: Path, base_path: Path) -> tuple[int, Path]:
    """Rename a complete staging directory to the next version number: (version, its directory).
    Another trainer may take a number at the same moment; then the next one is tried. `staged` must
    not be empty (a version never is): rename(2) refuses a non-empty target but replaces an empty one.
    Its files reach the disk before the rename, and the rename before this returns: after a host's
    crash the version is whole or absent, never a directory of empty files."""
    _synced(staged)
    while True:
        version = next_version(base_path)
        target = base_path / str(version)
        try:
            os.rename(staged, target)  # fails if `target` appeared since we looked
        except OSError:
            if target.exists():
                continue
            raise
        _sync(base_path)
        return version, target


def _synced(tree: Path) -> None:
    """Every file and directory under `tree` flushed to the disk, the directories last."""
    for folder, _, files in os.walk(tree, topdown=False):
        for name in files:
            _sync(Path(folder) / name)
        _sync(Path(folder))


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
