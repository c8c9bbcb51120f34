"""The installable parts, as someone outside this repository's dev environment installs them: `pip install
'.[client]'` and `'.[dashboard]'`, each in a fresh virtual environment, with no TensorFlow in either.

They run from a folder outside the checkout, so what they import is what pip installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, ServerProcess, free_port, wait_for
from trainer.data import Split


def fresh_venv(root: Path, extra: str) -> Path:
    """A new venv holding `.[extra]` from this checkout; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def run(
    python: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield fresh_venv(tmp_path_factory.mktemp("client") / "venv", "client")


def test_the_client_extra_has_no_tensorflow_and_predicts_over_grpc_and_rest(
    client_venv: Path, server: ServerProcess, mnist_test: Split, tmp_path: Path
) -> None:
    assert run(client_venv, "-c", "import tensorflow", cwd=tmp_path).returncode != 0
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - mnist_test.images[0].reshape(28, 28)).resize((112, 112)).save(digit)
    mnist = client_venv.parent / "mnist"
    answers = []
    for door in (["--grpc", server.grpc_target], ["--rest", server.rest_url]):
        result = subprocess.run(
            [str(mnist), "predict", *door, "--json", str(digit)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        answers.append(json.loads(result.stdout))
    assert answers[0]["digit"] == answers[1]["digit"] and len(answers[0]["probabilities"]) == 10
    library = run(
        client_venv,
        "-c",
        "import sys, numpy as np\n"
        "from client import ServingClient\n"
        f"(answer,) = ServingClient.grpc({server.grpc_target!r}).predict(np.zeros((28, 28, 1), np.float32))\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(answer.version)",
        cwd=tmp_path,
    )
    assert library.returncode == 0 and library.stdout.strip() == "1", library.stderr[-2000:]


def test_the_client_extra_fits_in_200_mb(client_venv: Path, tmp_path: Path) -> None:
    """What `pip install '.[client]'` puts on a laptop: no TensorFlow, OpenCV or SciPy, 200 MB at most."""
    found = run(client_venv, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    site_packages = Path(found.stdout.strip())
    installed = {path.name.split("-")[0].lower() for path in site_packages.glob("*.dist-info")}
    assert not installed & {"tensorflow", "opencv_python_headless", "scipy"}, installed
    size = sum(path.stat().st_size for path in site_packages.rglob("*") if path.is_file())
    assert size <= 200 * 1024 * 1024, f"{size / 2**20:.0f} MiB"


def test_the_dashboard_extra_has_no_tensorflow_and_runs_every_page(
    tmp_path_factory: pytest.TempPathFactory, server: ServerProcess, trained_model_dir: Path, tmp_path: Path
) -> None:
    python = fresh_venv(tmp_path_factory.mktemp("dashboard") / "venv", "dashboard")
    assert run(python, "-c", "import tensorflow", cwd=tmp_path).returncode != 0
    # Each page run by Streamlit's own test runner against the real server, from the installed package.
    script = (
        "import pathlib, dashboard\n"
        "from streamlit.testing.v1 import AppTest\n"
        "views = pathlib.Path(dashboard.__file__).parent / 'views'\n"
        "for view in sorted(views.glob('*.py')):\n"
        "    app = AppTest.from_file(str(view), default_timeout=120).run()\n"
        "    problems = [e.message for e in app.exception] + [e.body for e in app.error]\n"
        "    print(view.stem, problems)\n"
        "    assert not problems, (view.stem, problems)\n"
        "import sys; assert 'tensorflow' not in sys.modules\n"
    )
    env = {
        "MODEL_DIR": str(trained_model_dir),
        "SERVING_GRPC": server.grpc_target,
        "SERVING_METRICS": f"{server.rest_url}/monitoring/prometheus/metrics",
    }
    result = run(python, "-c", script, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.count("[]") == 5, result.stdout


def test_the_serving_lite_extra_serves_model_tflite_without_tensorflow(
    tmp_path_factory: pytest.TempPathFactory,
    client_venv: Path,
    trained_model_dir: Path,
    mnist_test: Split,
    tmp_path: Path,
) -> None:
    """`pip install '.[serving-lite]'` runs the server on the trained version's model.tflite, and the
    client extra's `mnist` reads a test digit from it over gRPC and REST."""
    python = fresh_venv(tmp_path_factory.mktemp("serving-lite") / "venv", "serving-lite")
    assert run(python, "-c", "import tensorflow", cwd=tmp_path).returncode != 0
    grpc_port, rest_port = free_port(), free_port()
    flags = [f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--host=127.0.0.1", "--model_name=mnist"]
    flags += [f"--model_base_path={trained_model_dir / 'mnist'}", "--prefer_tflite_model"]
    process = subprocess.Popen(
        [str(python), "-m", "serving", *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(process, grpc_port, rest_port)
    try:
        wait_for(
            lambda: "AVAILABLE" in server.model_states("mnist").values() or process.poll() is not None,
            60,
            "mnist to be AVAILABLE",
        )
        assert process.poll() is None, process.communicate()[1][-3000:]
        digit = tmp_path / "digit.png"
        Image.fromarray(255 - mnist_test.images[0].reshape(28, 28)).resize((112, 112)).save(digit)
        for door in (["--grpc", server.grpc_target], ["--rest", server.rest_url]):
            result = subprocess.run(
                [str(client_venv.parent / "mnist"), "predict", *door, "--json", str(digit)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["digit"] == mnist_test.labels[0]
    finally:
        assert server.stop() == 0
