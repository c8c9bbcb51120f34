"""The model directory's rules, in process: what counts as a version, and publishing one atomically."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from contract import model_dir

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("name", "version"),
    [("7", 7), ("007", 7), ("0", 0), ("-1", -1), ("+5", 5), (" 5\t", 5), ("9223372036854775807", 2**63 - 1)],
)
def test_a_version_is_a_name_absl_reads_as_an_int64(name: str, version: int) -> None:
    """TF Serving reads a child's name with absl::SimpleAtoi (file_system_storage_path_source.cc:86-88)."""
    assert model_dir.version_number(name) == version


@pytest.mark.parametrize("name", ["", "notes", "1e3", "0x10", "9223372036854775808", "\u0663", "5 5", "--1"])
def test_other_names_are_not_versions(name: str) -> None:
    assert model_dir.version_number(name) is None


def test_versions_lists_numbered_directories_holding_a_savedmodel_in_order(tmp_path: Path) -> None:
    for name in ("10", "2", "0", "x", ".runs", ".staging-a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "3").write_text("a file, not a version")
    (tmp_path / "4").mkdir()  # empty: nothing to serve
    for odd in ("+5", "007"):  # a server's versions, but not as the trainer names them
        (tmp_path / odd).mkdir()
        (tmp_path / odd / "saved_model.pb").write_bytes(b"x")
    assert model_dir.versions(tmp_path) == [0, 2, 10]  # 0 is a version to TF Serving
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


def test_publish_flushes_the_version_to_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that crashes after the rename must not leave a version of empty files."""
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(descriptor: int) -> None:
        events.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    def rename(source: str, target: str) -> None:
        events.append("rename")
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    with model_dir.staging(tmp_path, "run") as staged:
        (staged / "variables").mkdir(parents=True)
        (staged / "saved_model.pb").write_bytes(b"x")
        (staged / "variables" / "variables.index").write_bytes(b"y")
        model_dir.publish(staged, tmp_path)
    before = events[: events.index("rename")]
    assert {str(staged / "saved_model.pb"), str(staged / "variables" / "variables.index")} <= set(before)
    assert {str(staged), str(staged / "variables")} <= set(before)
    assert events[events.index("rename") + 1 :] == [str(tmp_path)]


def test_publish_counts_every_name_a_server_reads_as_a_version(tmp_path: Path) -> None:
    """A `+12` left by hand is version 12 to TF Serving: publishing 1 beside it would never be served
    as the latest."""
    (tmp_path / "+12").mkdir()
    (tmp_path / " 3").mkdir()
    with model_dir.staging(tmp_path, "run") as staged:
        staged.mkdir()
        (staged / "saved_model.pb").write_bytes(b"x")
        assert model_dir.publish(staged, tmp_path) == (13, tmp_path / "13")


def test_publish_refuses_past_the_highest_version_a_server_reads(tmp_path: Path) -> None:
    (tmp_path / str(model_dir.MAX_VERSION)).mkdir()
    with model_dir.staging(tmp_path, "run") as staged:
        staged.mkdir()
        (staged / "saved_model.pb").write_bytes(b"x")
        with pytest.raises(model_dir.NoVersionLeft, match="no next version"):
            model_dir.publish(staged, tmp_path)
    assert model_dir.version_number(str(model_dir.MAX_VERSION + 1)) is None


def test_staging_left_by_a_killed_trainer_is_removed_once_stale(tmp_path: Path) -> None:
    old, fresh = tmp_path / ".staging-killed", tmp_path / ".staging-writing"
    for path in (old, fresh):
        (path / "variables").mkdir(parents=True)
    an_hour_and_more = time.time() - model_dir.STALE_STAGING_S - 60
    os.utime(old, (an_hour_and_more, an_hour_and_more))
    model_dir.remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging-writing"]


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
