"""Browser tests of the admin pages: Debian's headless Chromium driven by Playwright.

The browser is ``/usr/bin/chromium`` (``scripts/install-browser.sh`` installs
it; ``make test`` runs that script); Playwright never downloads one. Each test
gets a fresh browser; screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.operations.harness import sync

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "artifacts"

__all__ = ["sync"]  # the sync harness fixture of the operations tests


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser.sh (make test does)", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def artifacts() -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
