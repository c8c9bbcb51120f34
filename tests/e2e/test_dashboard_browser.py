"""The dashboard in a real headless Chromium: every page, an upload, a drawing, a server going down.

Screenshots of each page land in tests/artifacts/ (ignored by git) for people to look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from client import ServingClient
from tests.client.conftest import encode, photo_of
from tests.conftest import ROOT, ServerProcess, free_port, start_server, wait_for
from tests.e2e.conftest import dashboard_healthy, needs_chromium, open_page, screenshot
from trainer.data import Split

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def own_server(trained_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own: the last test stops it."""
    running = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        f"--monitoring_config_file={ROOT / 'serving' / 'config' / 'monitoring.config'}",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def dashboard(own_server: ServerProcess, trained_model_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(trained_model_dir),
        "SERVING_GRPC": own_server.grpc_target,
        "SERVING_METRICS": f"{own_server.rest_url}/monitoring/prometheus/metrics",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard/app.py",
            f"--server.port={port}",
            "--server.address=127.0.0.1",
            "--server.headless=true",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    wait_for(lambda: dashboard_healthy(url) or process.poll() is not None, 60, "the dashboard to be healthy")
    yield url
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("training", "Training"),
        ("evaluation", "Evaluation"),
        ("models", "Models"),
        ("serving", "Serving"),
        ("", "Predict"),
    ],
)
def test_every_page_opens(page: Page, dashboard: str, path: str, heading: str) -> None:
    """Each page renders without an error, with every page in the navigation, and asks nothing of any
    host but the dashboard's own (a dashboard on a machine offline, or behind a firewall)."""
    elsewhere: list[str] = []
    page.on("request", lambda request: elsewhere.append(request.url) if not is_local(request.url) else None)
    open_page(page, f"{dashboard}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    navigation = page.locator('[data-testid="stSidebarNav"]').inner_text()
    titles = [word for word in navigation.split() if word[0].isupper()]  # the rest are icon names
    assert titles == ["Predict", "Training", "Evaluation", "Models", "Serving"], navigation
    screenshot(page, path or "predict")
    assert elsewhere == []


def is_local(url: str) -> bool:
    """Whether a URL the page asks for is the dashboard's own, or data in the page itself."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname in ("127.0.0.1", "localhost")


def test_upload_shows_the_right_digit(page: Page, dashboard: str, mnist_test: Split, tmp_path: Path) -> None:
    upload = tmp_path / "seven.jpg"
    upload.write_bytes(encode(photo_of(mnist_test.images[0]), "JPEG"))
    open_page(page, dashboard)
    page.locator('input[type="file"]').set_input_files(str(upload))
    metric = page.locator('[data-testid="stMetricValue"]').first
    metric.wait_for(timeout=60_000)
    assert metric.inner_text().strip() == "7"
    page.get_by_text("why: the red ink").first.wait_for(timeout=30_000)  # the occlusion map came back
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "predict-upload")


def test_a_sample_shows_the_whole_path(page: Page, dashboard: str) -> None:
    open_page(page, dashboard)
    page.get_by_text("7 · MNIST", exact=True).click()
    digit = page.locator('[data-testid="stMetricValue"]').first
    digit.wait_for(timeout=60_000)
    assert digit.inner_text().strip() == "7"  # MNIST's first test image
    page.get_by_text("why: the red ink").first.wait_for(timeout=30_000)
    page.get_by_text("3 · photo", exact=True).click()  # another sample in its place
    page.get_by_text("photo-3-test30.jpg").first.wait_for(timeout=60_000)
    page.get_by_text("mnist-7-test0.png").first.wait_for(state="detached", timeout=30_000)  # replaced
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "predict-sample")


def test_drawing_gets_a_prediction(page: Page, dashboard: str) -> None:
    open_page(page, dashboard)
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=30_000)
    saw = page.get_by_text("what the model saw").first

    def stroke_answered() -> bool:
        """Draw a vertical stroke (a one) and give the page a while to answer it.

        The canvas can be visible before its script listens for the mouse (seen on a loaded
        machine), when a stroke draws nothing: then the next round draws it again.
        """
        box = canvas.bounding_box()
        assert box is not None  # visible, as wait_for made sure
        x, top = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15
        page.mouse.move(x, top)
        page.mouse.down()
        for step in range(1, 21):
            page.mouse.move(x, top + step * box["height"] * 0.035)
        page.mouse.up()
        try:
            saw.wait_for(timeout=15_000)
        except PlaywrightTimeoutError:
            return False
        return True

    wait_for(stroke_answered, 90, "the drawing to be answered")
    # The digit's metric is drawn a moment after the caption: waited for, not counted at once.
    digit = page.locator('[data-testid="stMetricValue"]').first
    digit.wait_for(timeout=30_000)
    assert digit.inner_text().strip() == "1"  # a clean vertical stroke
    screenshot(page, "predict-drawing")


def test_the_serving_monitor_follows_the_load(page: Page, dashboard: str, own_server: ServerProcess) -> None:
    open_page(page, f"{dashboard}/serving")
    rate = page.locator('[data-testid="stMetric"]', has_text="requests/s").locator(
        '[data-testid="stMetricValue"]'
    )
    rate.wait_for(timeout=60_000)
    quiet = float(rate.inner_text().replace(",", ""))
    client = ServingClient.grpc(own_server.grpc_target)
    blank = np.zeros((28, 28), np.float32)

    def busier() -> bool:
        """Send a burst of predictions, then see whether the page's requests/s has risen with them."""
        for _ in range(40):
            client.predict(blank)
        return float(rate.inner_text().replace(",", "")) > quiet + 5

    wait_for(busier, 60, "the monitor's requests/s to rise under load")
    page.get_by_text("latency (ms)").first.wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "monitor")


def test_a_stopped_server_is_reported(page: Page, dashboard: str, own_server: ServerProcess) -> None:
    assert own_server.stop() == 0
    open_page(page, f"{dashboard}/models")
    page.get_by_text("is not answering").first.wait_for(timeout=60_000)
    screenshot(page, "models-server-down")
    open_page(page, f"{dashboard}/serving")
    page.get_by_text("not answering").first.wait_for(timeout=60_000)
    page.get_by_text("latency (ms)").first.wait_for(timeout=30_000)  # the history read so far stays
    assert page.locator('[data-testid="stException"]').count() == 0
    screenshot(page, "monitor-server-down")
