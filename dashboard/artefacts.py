"""What the trainer wrote: versions, their assets.extra files, and the progress of runs.

Read-only, briefly cached, and forgiving: a missing or half-written file is None, never an exception,
so a page can say "no metrics for this version" and carry on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st


def versions(base_path: Path) -> list[int]:
    """Exported versions, newest first (numeric directories, as the servers see them)."""
    if not base_path.is_dir():
        return []
    return sorted((int(p.name) for p in base_path.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


@st.cache_data(ttl=30, show_spinner=False)
def _read_json(path: str, mtime: float) -> Any:
    return json.loads(Path(path).read_text())


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return _read_json(str(path), path.stat().st_mtime)
    except (OSError, ValueError):
        return None


def artefact(base_path: Path, version: int, name: str) -> dict[str, Any] | None:
    """`history`, `metrics` or `model_card` of a version, or None if it has none."""
    return read_json(base_path / str(version) / "assets.extra" / f"{name}.json")


def runs(base_path: Path) -> list[dict[str, Any]]:
    """Every run's progress record, newest first."""
    records = (read_json(p) for p in sorted((base_path / ".runs").glob("*/progress.json"), reverse=True))
    return [r for r in records if r is not None]
