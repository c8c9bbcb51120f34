"""serving/version_source.py in process: which child of a base path each version is read from."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.version_source import present_versions
from tfs_api.tensorflow_serving.config.file_system_storage_path_source_pb2 import (
    FileSystemStoragePathSourceConfig,
)

Policy = FileSystemStoragePathSourceConfig.ServableVersionPolicy


@pytest.mark.parametrize(
    ("policy", "read_from"),
    [
        (Policy(), "7"),  # latest: IndexChildrenByVersion keeps the last name in sorted order
        (Policy(all=Policy.All()), "007"),  # every name goes to the manager, which keeps the first
        (Policy(specific=Policy.Specific(versions=[7])), "7"),
    ],
    ids=["latest", "all", "specific"],
)
def test_of_names_with_one_number_the_policy_reads_the_one_tf_serving_reads(
    tmp_path: Path, policy: FileSystemStoragePathSourceConfig.ServableVersionPolicy, read_from: str
) -> None:
    for name in ("007", "07", "7", "abc", "2"):
        (tmp_path / name).mkdir()
    assert present_versions(tmp_path, policy) == {2: tmp_path / "2", 7: tmp_path / read_from}


def test_specific_reads_the_exact_names_only_when_every_version_asked_for_has_one(tmp_path: Path) -> None:
    """Its fast path (file_system_storage_path_source.cc:174-208); else the general rule, last wins."""
    for name in ("5", "5 ", "06"):
        (tmp_path / name).mkdir()
    every = Policy(specific=Policy.Specific(versions=[5]))
    assert present_versions(tmp_path, every) == {5: tmp_path / "5", 6: tmp_path / "06"}
    one_missing = Policy(specific=Policy.Specific(versions=[5, 6]))
    assert present_versions(tmp_path, one_missing) == {5: tmp_path / "5 ", 6: tmp_path / "06"}


def test_a_missing_base_path_is_none(tmp_path: Path) -> None:
    assert present_versions(tmp_path / "gone", Policy()) is None
