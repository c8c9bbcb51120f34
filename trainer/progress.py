"""`<base>/.runs/<run-id>/progress.json`: a running trainer's state, for the dashboard to draw live.

A dot-directory, so neither TF Serving nor our server takes it for a version. The file is replaced
atomically after every change, so a reader never sees half a JSON document.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract import model_dir


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable by start time and unique: 20261125T093958Z-12345-3f9a1c. The random part because two
    trainers in two containers may both be process 1 and start in the same second."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"


class RunProgress:
    """The progress record of one run: state running/done/failed, epochs, history so far, version."""

    def __init__(self, base_path: Path, run_id: str, arch: str, planned_epochs: int) -> None:
        self.path = model_dir.progress_path(base_path, run_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.record: dict[str, Any] = {
            "run_id": run_id,
            "arch": arch,
            "state": "running",
            "epoch": 0,
            "planned_epochs": planned_epochs,
            "history": {},
            "version": None,
            "error": None,
            "started_at": utc_now(),
            "updated_at": utc_now(),
        }
        self._write()

    @classmethod
    def reopen(cls, path: Path) -> RunProgress:
        """The record a running trainer writes, taken over by another process (the startup guard)."""
        progress = cls.__new__(cls)
        progress.path, progress.record = path, json.loads(path.read_text())
        return progress

    def epoch_done(self, epoch: int, history: dict[str, list[float]]) -> None:
        self.record.update(epoch=epoch, history=history)
        self._write()

    def done(self, version: int) -> None:
        self.record.update(state="done", version=version)
        self._write()

    def failed(self, error: str) -> None:
        self.record.update(state="failed", error=error)
        self._write()

    def _write(self) -> None:
        self.record["updated_at"] = utc_now()
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps(self.record, indent=1))
        os.replace(staging, self.path)
