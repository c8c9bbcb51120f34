"""The hostile-client drill (bench/drill.py, `make drill`) against the compose flags, as CI runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_every_attack_of_the_drill_is_held(trained_model_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "drill.json"
    drill = subprocess.run(
        [sys.executable, "bench/drill.py", f"--model-dir={trained_model_dir}", f"--results={results}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert drill.returncode == 0, drill.stdout + drill.stderr[-3000:]
    attacks = json.loads(results.read_text())["attacks"]
    assert len(attacks) >= 13 and not any(attack["problems"] for attack in attacks)
    assert drill.stdout.count("\nok ") + drill.stdout.startswith("ok ") == len(attacks), drill.stdout
