"""Helpers for the browser tests: a fresh page per test, waiting for Streamlit, screenshots."""

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page

from tests.conftest import CHROMIUM, ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots, for people to look at (ignored by git)
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


def open_page(page: Page, url: str) -> None:
    """Load a page and wait until Streamlit has finished running its script."""
    page.goto(url)
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=60_000)


def screenshot(page: Page, name: str) -> None:
    """Once the script has run and images and charts have arrived, so the picture shows what a person sees."""
    page.wait_for_selector('[data-test-script-state="notRunning"]', timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete)"
        " && [...document.querySelectorAll('.vega-embed')].every(c => c.querySelector('canvas, svg'))",
        timeout=30_000,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def dashboard_healthy(url: str) -> bool:
    """Streamlit's health page answers "ok" (a dashboard not yet listening is not healthy, not an error)."""
    try:
        return requests.get(f"{url}/_stcore/health", timeout=5).text == "ok"
    except requests.ConnectionError:
        return False
