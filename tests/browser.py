"""Headless Chromium (Debian's `chromium`, driven by Playwright) for tests that look at pages.

Screenshots are kept as test artifacts under ``$TUNE_LSD_TEST_ARTIFACTS`` (default
``test-artifacts/`` in the repository), so that a person can open them after a CI run.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TUNE_LSD_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
# No network, no GPU, no sandbox (CI runs as root); /dev/shm may be small in containers.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-extensions",
]


@contextmanager
def chromium_page(width: int = 1400, height: int = 900):
    """A fresh page in headless Chromium; skips the test when Chromium is not installed."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make browser, or .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    """Save a PNG of the page as a test artifact; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
