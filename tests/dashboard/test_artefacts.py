"""The dashboard's reading of the trainer's records, without a page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashboard.artefacts import is_silent

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(silent_for: timedelta, epoch_seconds: list[Any] | None = None) -> dict[str, Any]:
    history = {} if epoch_seconds is None else {"epoch_seconds": epoch_seconds}
    return {"state": "running", "updated_at": (NOW - silent_for).isoformat(), "history": history}


@pytest.mark.fast
@pytest.mark.parametrize(
    ("silent_for", "epoch_seconds", "silent"),
    [
        (timedelta(minutes=20), None, False),  # no epoch yet: its length unknown, half an hour
        (timedelta(minutes=31), None, True),
        (timedelta(minutes=6), [30.0, 41.5], True),  # a killed run of 40 s epochs: 5 minutes
        (timedelta(minutes=4), [30.0, 41.5], False),
        (timedelta(minutes=20), [400.0], False),  # long epochs: three of them
        (timedelta(minutes=21), [400.0], True),
        (timedelta(minutes=20), ["x"], False),  # a record of another shape: the half hour
    ],
)
def test_a_killed_run_is_named_after_a_few_of_its_epochs_silence(
    silent_for: timedelta, epoch_seconds: list[Any] | None, silent: bool
) -> None:
    """A SIGKILLed trainer's run read as "running" for half an hour, whatever its epochs took."""
    assert is_silent(record(silent_for, epoch_seconds), NOW) is silent
