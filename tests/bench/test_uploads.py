"""bench/uploads.py's report of one set, and how it records it on the version the Evaluation page reads."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.uploads import in_cells, record_on_the_version, source_report
from contract import model_dir

pytestmark = pytest.mark.fast


def digit_file(folder: Path, name: str, digit: int) -> str:
    page = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(page).text((40, 20), str(digit), fill=0, font_size=80)
    path = folder / f"{name}.png"
    page.save(path)
    return str(path)


def answer(path: str, digit: int, confidence: float) -> dict:
    probabilities = [(1 - confidence) / 9] * 10
    probabilities[digit] = confidence
    return {"path": path, "digit": digit, "probabilities": probabilities, "version": 3}


def test_a_sets_report_counts_its_misses_and_draws_them_most_confident_first(tmp_path: Path) -> None:
    answers = [
        answer(digit_file(tmp_path, "uci_9_0", 9), 3, 0.6),
        answer(digit_file(tmp_path, "uci_9_1", 9), 8, 0.9),
        answer(digit_file(tmp_path, "uci_4_2", 4), 4, 0.99),
        {"path": str(tmp_path / "uci_1_3.png"), "error": "not an image"},
        answer(digit_file(tmp_path, "typeset_1_0", 1), 7, 0.7),
    ]
    report = source_report(answers, "uci")
    assert report["images"] == 4 and report["accuracy"] == 0.25 and report["errors"] == 1
    assert report["wrong_by_true_digit"] == {"1": 1, "9": 2}
    assert [(m["label"], m["predicted"]) for m in report["misses"]] == [
        (9, 8),
        (9, 3),
    ]  # no answer, not drawn
    drawn = np.frombuffer(base64.b64decode(report["misses"][0]["pixels"]), np.uint8)
    assert drawn.size == 784 and drawn.max() > 200  # the normalised digit: ink high on a dark field


def test_the_report_is_recorded_on_the_version_that_answered(tmp_path: Path) -> None:
    (tmp_path / "3" / model_dir.ASSETS_EXTRA).mkdir(parents=True)
    sources = {"uci": {"images": 1, "accuracy": 1.0, "misses": []}}
    record_on_the_version(tmp_path, [answer("uci_1_0.png", 1, 0.9)], sources)
    recorded = json.loads(model_dir.artefact_path(tmp_path, 3, model_dir.UPLOADS).read_text())
    assert recorded["sources"] == sources
    assert not list((tmp_path / "3" / model_dir.ASSETS_EXTRA).glob(".*"))  # no partial file left


def test_answers_from_two_versions_are_not_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for version in (3, 4):
        (tmp_path / str(version) / model_dir.ASSETS_EXTRA).mkdir(parents=True)
    mixed = [answer("uci_1_0.png", 1, 0.9), {**answer("uci_1_1.png", 1, 0.9), "version": 4}]
    record_on_the_version(tmp_path, mixed, {})
    assert not list(tmp_path.glob("*/assets.extra/uploads.json"))
    assert "versions [3, 4]" in capsys.readouterr().err


def test_a_coarse_capture_counts_a_32x32_bitmap_in_4x4_cells() -> None:
    """A bar 20 px tall and 2 wide fills the bitmap's height, 3 columns wide: 96 pixels, counted
    in the two middle columns of cells, none over 16."""
    bar = np.zeros((28, 28), dtype=np.uint8)
    bar[4:24, 13:15] = 255
    counts = in_cells(bar)
    assert counts.shape == (8, 8) and counts.max() <= 16 and counts.sum() == 32 * 3
    assert set(np.flatnonzero(counts.any(axis=0))) == {3, 4}


def test_a_set_whose_name_begins_anothers_is_counted_apart(tmp_path: Path) -> None:
    answers = [
        answer(digit_file(tmp_path, "mnist-test_1_0", 1), 1, 0.9),
        answer(digit_file(tmp_path, "mnist-test-coarse_1_0", 1), 7, 0.9),
    ]
    assert source_report(answers, "mnist-test")["accuracy"] == 1.0
    assert source_report(answers, "mnist-test-coarse")["accuracy"] == 0.0
