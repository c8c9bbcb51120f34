"""The handwriting set (trainer/handwriting): its sources stay clear of the held-out ones, and the
committed data is what `make handwriting-data` makes from them, byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.decode import ImageError
from client.normalise import Normalised, normalise_image
from tests.conftest import ROOT, run_trainer
from trainer.handwriting import build, sources
from trainer.handwriting.fetch import Fetched, fetch

DATA = ROOT / "data" / "handwriting"


@pytest.mark.fast
def test_no_source_is_one_the_held_out_checks_use() -> None:
    for source in sources.SOURCES:
        named = f"{source.name} {source.package}".lower().replace(sources.HERSHEYTEXT, "")
        assert not [term for term in sources.OFF_LIMITS if term in named], source
    assert set(sources.DEV) <= {s.name for s in sources.SOURCES}
    assert len({s.name for s in sources.SOURCES} - set(sources.DEV)) > 20  # most of it trains


def test_of_hersheytext_only_the_ems_fonts_are_read(tmp_path: Path) -> None:
    for source in (s for s in sources.SOURCES if s.kind == "ems"):
        (font,) = fetch(source, tmp_path).files
        assert (
            font.parent.name == "svg_fonts"
            and font.name.startswith("EMS")
            and "hershey" not in font.name.lower()
        )


@pytest.mark.fast
def test_the_committed_set_is_whole_and_labelled() -> None:
    data = DATA / build.DATA_FILE
    stated = (DATA / f"{build.DATA_FILE}.sha256").read_text().split()[0]
    assert hashlib.sha256(data.read_bytes()).hexdigest() == stated
    assert data.stat().st_size < 20 << 20
    arrays = np.load(data)
    images, labels, source = arrays["images"], arrays["labels"], arrays["source"]
    assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
    assert list(arrays["source_names"]) == [s.name for s in sources.SOURCES]
    assert set(np.unique(source)) == set(range(len(sources.SOURCES)))  # every source gave samples
    assert np.bincount(labels, minlength=10).min() > 1000
    assert [bool(d) for d in arrays["dev"]] == [sources.is_dev(s) for s in sources.SOURCES]


@pytest.mark.fast
def test_a_seed_gives_the_same_samples_as_the_committed_ones() -> None:
    """A drawn style rendered again from seed 0 is the committed set's, pixel for pixel; another seed
    gives other samples."""
    index = next(i for i, s in enumerate(sources.SOURCES) if s.name == "drawn:crossed-7")
    arrays = np.load(DATA / build.DATA_FILE)
    committed = arrays["images"][arrays["source"] == index]
    count = {"drawn": 40}
    again, labels = build.render_source(index, sources.SOURCES[index], Fetched((), ""), 0, count)
    assert np.array_equal(again, committed[:40]) and set(labels) == {7}
    other, _ = build.render_source(index, sources.SOURCES[index], Fetched((), ""), 1, count)
    assert not np.array_equal(other, again)
    assert build._npz_bytes({"a": again}) == build._npz_bytes({"a": again.copy()})


@pytest.mark.fast
def test_a_render_the_normaliser_refuses_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page the normaliser finds no digit on (a glyph lost in its paper) is one failed attempt, as
    too little ink is: the build goes on, never ends in a traceback."""
    index = next(i for i, s in enumerate(sources.SOURCES) if s.name == "drawn:crossed-7")
    calls = 0

    def refuse_every_other(page: Image.Image) -> Normalised:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise ImageError("no digit found")
        return normalise_image(page)

    monkeypatch.setattr(build, "normalise_image", refuse_every_other)
    images, labels = build.render_source(index, sources.SOURCES[index], Fetched((), ""), 0, {"drawn": 5})
    assert len(images) == 5 and set(labels) == {7} and calls == 10


def test_plus_trains_on_mnist_and_the_set_and_reports_each_source(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    """With --handwriting-share 0.25, `plus` takes a quarter of each batch from the set's training
    sources, says so in its model card, and reports its accuracy on MNIST's test set and on the set's
    dev sources apart; `seed` (the session's quick model) stays the original recipe, MNIST alone."""
    result = run_trainer(
        "--arch",
        "plus",
        "--limit",
        "1000",
        "--epochs",
        "1",
        "--handwriting-share",
        "0.25",
        "--model-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    extra = tmp_path / "mnist" / "1" / "assets.extra"
    card = json.loads((extra / "model_card.json").read_text())
    stated = (DATA / f"{build.DATA_FILE}.sha256").read_text().split()[0]
    assert card["handwriting"]["sha256"] == stated and card["handwriting"]["share_of_batches"] == 0.25
    dev = sum(n for name, n in card["handwriting"]["samples_per_source"].items() if name in sources.DEV)
    assert card["handwriting"]["dev_samples"] == dev > 0
    by_source = json.loads((extra / "metrics.json").read_text())["by_source"]
    assert (
        set(by_source) == {"MNIST test", "handwriting dev"} and by_source["handwriting dev"]["images"] == dev
    )
    assert 0 < by_source["handwriting dev"]["accuracy"] <= 1
    seed_card = json.loads(
        (trained_model_dir / "mnist" / "1" / "assets.extra" / "model_card.json").read_text()
    )
    assert seed_card["handwriting"] is None
