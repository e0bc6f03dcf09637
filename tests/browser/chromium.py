"""Headless Chromium for the tests: Debian's ``chromium`` driven by Python playwright (never a downloaded one).

Without Chromium (or Python playwright) the browser tests skip with a message — a reader's machine need not
have a browser. In CI they are mandatory: with ``CI`` or ``DPO_TEACH_REQUIRE_BROWSER`` set to a true value
(anything but empty, ``0``, ``false``, ``no``) a missing browser fails the tests instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REQUIRE_VARIABLES = ("CI", "DPO_TEACH_REQUIRE_BROWSER")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_required() -> bool:
    """True when a missing browser must fail the run (CI), not skip it."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in REQUIRE_VARIABLES
    )


def missing_browser(reason: str) -> None:
    """Fail (CI) or skip (a reader's machine) because the browser cannot run."""
    if browser_required():
        pytest.fail(
            f"{reason}. The browser tests are mandatory here ({' or '.join(REQUIRE_VARIABLES)} is set): "
            "install Debian's chromium (`apt-get install -y chromium`) and the pinned requirements.",
            pytrace=False,
        )
    pytest.skip(f"{reason}; install chromium (e.g. `apt-get install -y chromium`) to run the browser tests")


@contextmanager
def launched_chromium() -> Iterator[object]:
    """A playwright ``Browser`` on the system's chromium; skips or fails (see module doc) when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing_browser("no `chromium` (or `chromium-browser`) executable on PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_browser("Python package `playwright` is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
