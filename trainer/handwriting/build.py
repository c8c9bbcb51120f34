"""Build the handwriting set: every source's digits rendered, normalised as the client normalises an
upload, and written to one compact file with its SHA-256 and the sources' licences beside it.

The same seed gives the same bytes: each sample draws from a generator seeded by (seed, source, digit,
sample), whatever order or process renders it, and the archive's entries carry fixed timestamps.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.decode import ImageError
from client.normalise import normalise_image
from trainer.handwriting import drawn
from trainer.handwriting.fetch import Fetched, fetch
from trainer.handwriting.render import render_font, render_strokes, svg_font_digits
from trainer.handwriting.sources import SOURCES, Source, is_dev

DATA_FILE = "handwriting.npz"
# Samples per source and digit (a drawn style is one digit): about 27,000 in all, 6 MB compressed.
PER_DIGIT = {"fontsource": 40, "ems": 100, "debian": 40, "drawn": 400}
# A sample whose normalised ink covers less or more than this share of the 28x28 is drawn again (up to
# ATTEMPTS times): the normaliser took paper for ink, or a stroke vanished. MNIST's digits cover 8-30%.
INK_SHARE = (0.03, 0.4)
SMUDGE_SHARE = 0.32  # faint ink over as much of it: a page's shading taken for a stroke
ATTEMPTS = 4


@dataclass(frozen=True)
class Built:
    path: Path
    sha256: str
    counts: dict[str, int]  # samples per source


def render_source(
    index: int, source: Source, fetched: Fetched, seed: int, per_digit: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """One source's samples: uint8 [n, 28, 28] as the model sees them (ink 255), and their digits."""
    images, labels = [], []
    count = per_digit[source.kind]
    if source.kind == "drawn":
        style = source.name.split(":", 1)[1]
        jobs = [(drawn.DIGIT[style], i) for i in range(count)]
    else:
        jobs = [(digit, i) for digit in range(10) for i in range(count)]
    glyphs = svg_font_digits(fetched.files[0]) if source.kind == "ems" else {}
    for digit, sample in jobs:
        if source.kind == "ems" and digit not in glyphs:
            continue
        for attempt in range(ATTEMPTS):
            rng = np.random.default_rng([seed, index, digit, sample, attempt])
            if source.kind == "drawn":
                page = render_strokes(drawn.strokes(source.name.split(":", 1)[1], rng), rng)
            elif source.kind == "ems":
                page = render_strokes(glyphs[digit], rng)
            else:
                page = render_font(fetched.files[int(rng.integers(len(fetched.files)))], digit, rng)
            try:
                seen = normalise_image(page).image
            except ImageError:  # the page read as no digit at all (a glyph lost in its paper): again
                continue
            strokes, smudge = float((seen > 127).mean()), float((seen > 31).mean())
            if INK_SHARE[0] <= strokes <= INK_SHARE[1] and smudge <= SMUDGE_SHARE:
                images.append(seen)
                labels.append(digit)
                break
    return np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(labels, dtype=np.uint8)


def build(
    out: Path, cache: Path, seed: int = 0, per_digit: Mapping[str, int] = PER_DIGIT, workers: int = 2
) -> Built:
    """Render every source into out/handwriting.npz (images, labels, source index, source names, which
    sources are the dev set), with its .sha256 and LICENSES.md."""
    fetched = [fetch(source, cache) for source in SOURCES]
    for source, files in zip(SOURCES, fetched, strict=True):
        if source.kind != "drawn" and not files.files:
            raise FileNotFoundError(f"{source.name}: {source.package} holds no font files")
    with ProcessPoolExecutor(workers) as pool:
        parts = list(
            pool.map(
                render_source,
                range(len(SOURCES)),
                SOURCES,
                fetched,
                [seed] * len(SOURCES),
                [dict(per_digit)] * len(SOURCES),
            )
        )
    arrays = {
        "images": np.concatenate([images for images, _ in parts]),
        "labels": np.concatenate([labels for _, labels in parts]),
        "source": np.concatenate([np.full(len(labels), i, np.uint8) for i, (_, labels) in enumerate(parts)]),
        "source_names": np.asarray([s.name for s in SOURCES]),
        "dev": np.asarray([is_dev(s) for s in SOURCES]),
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / DATA_FILE
    path.write_bytes(_npz_bytes(arrays))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / f"{DATA_FILE}.sha256").write_text(f"{sha256}  {DATA_FILE}\n")
    (out / "LICENSES.md").write_text(_licences(fetched))
    return Built(path, sha256, {s.name: len(labels) for s, (_, labels) in zip(SOURCES, parts, strict=True)})


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """numpy's .npz format, written with fixed timestamps (np.savez stamps each entry with the time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _licences(fetched: list[Fetched]) -> str:
    lines = ["# The handwriting set's sources and their licences", ""]
    lines += [
        "Written by `make handwriting-data` from these packages; dev sources are kept out of training.",
        "",
    ]
    lines += ["| source | package | licence | dev |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {s.name} | {s.package or '-'} | {s.licence} | {'yes' if is_dev(s) else ''} |" for s in SOURCES
    ]
    lines += ["", "## Licence texts, as the packages ship them", ""]
    shown: set[str] = set()
    for source, files in zip(SOURCES, fetched, strict=True):
        if files.licence_text and files.licence_text not in shown:
            shown.add(files.licence_text)
            lines += [f"### {source.package}", "", "```", files.licence_text.strip(), "```", ""]
    return "\n".join(lines) + "\n"
