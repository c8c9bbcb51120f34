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


def present_versions(base: Path) -> dict[int, Path] | None:
    """The versions under `base`, each the child named by its number (a file too: TF Serving lists
    every child, and such a version then fails to load), in version order; None when the base path
    itself is missing.

    A version is loaded from the child as it is named (`007` is version 7, read from `007`). When
    two names give one number (`7` and `007`), the name that sorts last as a string wins, as in TF
    Serving (its IndexChildrenByVersion): `7` over `07` over `007`."""
    if not base.is_dir():
        return None
    found: dict[int, Path] = {}
    for path in sorted(base.iterdir()):
        number = version_number(path.name)
        if number is not None:
            found[number] = path
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
