"""What the trainer wrote: versions, their assets.extra files, and the progress of runs.

Read-only, briefly cached, and forgiving: a missing or half-written file is None, never an exception,
so a page can say "no metrics for this version" and carry on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import streamlit as st

from contract import model_dir


def versions(base_path: Path) -> list[int]:
    """Exported versions, newest first."""
    return model_dir.versions(base_path)[::-1]


@st.cache_data(ttl=30, show_spinner=False)
def _read_json(path: str, mtime: float) -> Any:
    return json.loads(Path(path).read_text())


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return _read_json(str(path), path.stat().st_mtime)
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, nested past Python's stack
        return None


def artefact(base_path: Path, version: int, name: str) -> dict[str, Any] | None:
    """model_dir.HISTORY, METRICS or MODEL_CARD of a version, or None if it has none."""
    return read_json(model_dir.artefact_path(base_path, version, name))


@st.cache_data(ttl=30, show_spinner=False)
def version_labels(config_file: str, model_name: str) -> dict[int, list[str]]:
    """{version: [labels]} from the server's ModelServerConfig text proto; {} if it cannot be read.

    Neither TF Serving API lists labels, so the dashboard reads the file the server reads."""
    from google.protobuf import text_format

    from tfs_api.tensorflow_serving.config import model_server_config_pb2

    try:
        config = text_format.Parse(Path(config_file).read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError):
        return {}
    labels: dict[int, list[str]] = {}
    for model in config.model_config_list.config:
        if model.name == model_name:
            for label, version in sorted(model.version_labels.items()):
                labels.setdefault(version, []).append(label)
    return labels


# A running trainer writes its progress at every epoch and when it ends; a record that says "running"
# with no word for this long belongs to a trainer that was killed. Before its first epoch (data, workers
# finding each other, a first epoch of unknown length) that is SILENT_RUN_S; after, a few of its longest
# epochs (evaluation and export after the last take about one), at least SILENT_FLOOR_S.
SILENT_RUN_S = 30 * 60
SILENT_FLOOR_S = 5 * 60
SILENT_EPOCHS = 3


def is_silent(run: dict[str, Any], now: datetime | None = None) -> bool:
    """A run recorded as running whose trainer has not written for longer than it should have
    (SIGKILL, a node lost): the Training page names it as stopped, not as training."""
    try:
        updated = datetime.fromisoformat(run["updated_at"])
    except (KeyError, TypeError, ValueError):
        return False
    if updated.tzinfo is None:  # the trainer writes UTC with its offset; a record without one is UTC too
        updated = updated.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - updated).total_seconds() > _allowed_silence(run)


def _allowed_silence(run: dict[str, Any]) -> float:
    history = run.get("history")
    epochs = history.get("epoch_seconds") if isinstance(history, dict) else None
    if not (isinstance(epochs, list) and epochs and all(isinstance(s, (int, float)) for s in epochs)):
        return SILENT_RUN_S
    return min(SILENT_RUN_S, max(SILENT_FLOOR_S, SILENT_EPOCHS * max(epochs)))


def runs(base_path: Path) -> list[dict[str, Any]]:
    """Every run's progress record, newest first."""
    progress = sorted((base_path / model_dir.RUNS).glob(f"*/{model_dir.PROGRESS_FILE}"), reverse=True)
    records = (read_json(p) for p in progress)
    return [r for r in records if r is not None]


def is_history(document: Any, metrics: tuple[str, ...]) -> bool:
    """Whether a history.json is as the trainer writes it: a list of numbers for each of `metrics`
    it has, and for their validation twins (`val_loss`), as Keras' History gives them."""
    if not isinstance(document, dict):
        return False
    series = [document[key] for metric in metrics for key in (metric, f"val_{metric}") if key in document]
    return all(
        isinstance(values, list) and all(isinstance(v, (int, float)) for v in values) for values in series
    )


@contextmanager
def read_as_expected(what: str) -> Iterator[None]:
    """Draw from a file the trainer wrote, or, if it holds something else (a hand edit, another
    trainer's fields), say so and go on with the rest of the page: never a traceback."""
    try:
        yield
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as err:
        st.warning(f"{what} is not as this dashboard reads it ({type(err).__name__}: {plain(str(err))}).")


_MARKDOWN = re.compile(r"([\\`*_\[\]<>!~$|])")  # what makes a link, an image, emphasis, code, maths


def plain(text: str) -> str:
    """Text from a file, shown as it is: Markdown in it (a link, an image to fetch) is escaped."""
    return _MARKDOWN.sub(r"\\\1", str(text))
