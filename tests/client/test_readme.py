"""The README's Python snippets, run as written against a real server (its ports put in for 8500/8501)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import ROOT, ServerProcess
from trainer.data import Split


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_every_python_snippet_in_the_readme_runs(
    server: ServerProcess, mnist_test: Split, tmp_path: Path
) -> None:
    Image.fromarray(255 - mnist_test.images[0]).resize((112, 112)).save(tmp_path / "my-digit.png")
    found = snippets()
    assert len(found) >= 2
    for code in found:
        code = code.replace('"http://localhost:8501"', repr(server.rest_url))
        code = code.replace('"localhost:8500"', repr(server.grpc_target))
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and result.stdout.strip(), code + result.stderr[-2000:]
