"""The model directory's rules, in process: what counts as a version, and publishing one atomically."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from contract import model_dir

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("1", True),
        ("12", True),
        ("0", False),
        ("-1", False),
        ("1a", False),
        ("٣", False),
        (".staging-1", False),
    ],
)
def test_a_version_is_a_positive_ascii_integer(name: str, counts: bool) -> None:
    assert model_dir.is_version(name) is counts


def test_versions_lists_numbered_directories_only_in_order(tmp_path: Path) -> None:
    for name in ("10", "2", "0", "x", ".runs", ".staging-a"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version")
    assert model_dir.versions(tmp_path) == [2, 10]
    assert model_dir.versions(tmp_path / "missing") == []


def test_publish_takes_the_next_number_and_steps_over_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").write_text("not a version, but a rename onto it would fail")
    with model_dir.staging(tmp_path, "run") as staged:
        staged.mkdir()
        (staged / "saved_model.pb").write_bytes(b"x")
        version, path = model_dir.publish(staged, tmp_path)
    assert (version, path) == (3, tmp_path / "3")
    assert (path / "saved_model.pb").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3"]


def test_a_failure_while_staging_leaves_no_trace(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), model_dir.staging(tmp_path, "cut") as staged:
        staged.mkdir()
        (staged / "half").write_text("written")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_two_publishers_at_once_get_different_versions(tmp_path: Path) -> None:
    results: list[int] = []
    ready = threading.Barrier(8)

    def publish(index: int) -> None:
        staged = tmp_path / f".staging-{index}"
        staged.mkdir()
        (staged / "saved_model.pb").write_text(str(index))  # never empty, as a real version
        ready.wait()
        results.append(model_dir.publish(staged, tmp_path)[0])

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 9))
    assert sorted((tmp_path / str(v) / "saved_model.pb").read_text() for v in results) == [
        str(i) for i in range(8)
    ]


def test_artefacts_and_progress_live_where_the_dashboard_reads_them(tmp_path: Path) -> None:
    assert (
        model_dir.artefact_path(tmp_path, 4, model_dir.METRICS)
        == tmp_path / "4" / "assets.extra" / "metrics.json"
    )
    assert model_dir.progress_path(tmp_path, "run-1") == tmp_path / ".runs" / "run-1" / "progress.json"
