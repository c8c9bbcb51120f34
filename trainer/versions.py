"""Which versions a model directory holds, as TF Serving sees them (no TensorFlow needed to ask)."""

from __future__ import annotations

from pathlib import Path


def numeric_versions(base_path: Path) -> list[int]:
    """The versions present: directories named by a positive (ASCII) integer."""
    if not base_path.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in base_path.iterdir()
        if p.name.isascii() and p.name.isdigit() and int(p.name) > 0 and p.is_dir()
    )
