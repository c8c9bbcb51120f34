"""Which versions of a model exist on disk, and which of them its version policy asks to serve.

TF Serving's file-system source and version policies, as pure functions of a base path and a policy:
the model store (serving/store.py) polls them and does the loading and unloading.
"""

from __future__ import annotations

from pathlib import Path

from contract.model_dir import version_number
from tfs_api.tensorflow_serving.config.file_system_storage_path_source_pb2 import (
    FileSystemStoragePathSourceConfig,
)


def present_versions(
    base: Path, policy: FileSystemStoragePathSourceConfig.ServableVersionPolicy
) -> dict[int, Path] | None:
    """The versions under `base`, each the child named by its number (a file too: TF Serving lists
    every child, and such a version then fails to load), in version order; None when the base path
    itself is missing.

    A version is loaded from the child as it is named (`007` is version 7, read from `007`). Of two
    names with one number (`7`, `07` and `007`), the one TF Serving's file-system source reads under
    `policy` (sources/storage_path/file_system_storage_path_source.cc): the last in sorted order (`7`;
    IndexChildrenByVersion, :116-137), except under `all {}`, whose every name goes to the manager,
    which keeps the first (`007`) and refuses the others as already managed (:97-114, 300-303;
    core/basic_manager.cc:357-362), and under `specific {}` when each version it asks for has a child
    named exactly as its number: that child (its fast path, :174-208)."""
    if not base.is_dir():
        return None
    keep_first = policy.WhichOneof("policy_choice") == "all"
    found: dict[int, Path] = {}
    for path in sorted(base.iterdir()):
        number = version_number(path.name)
        if number is not None and not (keep_first and number in found):
            found[number] = path
    wanted = {version: base / str(version) for version in policy.specific.versions}
    if (
        policy.WhichOneof("policy_choice") == "specific"
        and wanted
        and all(p.exists() for p in wanted.values())
    ):
        found.update(wanted)
    return dict(sorted(found.items()))


def aspired_versions(
    policy: FileSystemStoragePathSourceConfig.ServableVersionPolicy,
    present: list[int],
) -> list[int]:
    """The versions `policy` asks to serve, of those `present` (oldest first): the newest one by
    default, as TF Serving's `latest { num_versions: 1 }`."""
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return present
    if which == "specific":
        return [v for v in present if v in set(policy.specific.versions)]
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions > 0 else 1
    return present[-count:]
