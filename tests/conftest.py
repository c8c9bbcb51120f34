"""Fixtures shared by every part's tests: paths, and a small real model trained once per test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data" / "mnist"
# A run of a few seconds that still classifies well above chance.
QUICK_TRAIN_ARGS = ("--arch", "seed", "--limit", "3000", "--epochs", "2")


def run_trainer(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m trainer ARGS` as a user runs it, output captured (so stderr is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding version 1 of `mnist`, trained by the real CLI on a data subset."""
    model_dir = tmp_path_factory.mktemp("models")
    result = run_trainer(*QUICK_TRAIN_ARGS, "--model-dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    return model_dir
