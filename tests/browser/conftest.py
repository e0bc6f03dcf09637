"""Fixtures of the browser tests: Chromium, one JupyterLab server for the package, one page per test.

Package scope, not session scope: Playwright's sync API keeps its event loop registered as the thread's
running loop while it is started, which would confuse everything asyncio-based that runs later in the same
process (nbval's kernels); so Chromium and JupyterLab stop as soon as the last browser test has run.

Without Chromium the tests skip with a message; with ``CI`` or ``DPO_TEACH_REQUIRE_BROWSER`` set they fail
instead (see :mod:`browser.chromium`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .chromium import launched_chromium
from .lab_page import NotebookPage
from .lab_server import LabServer, copy_book

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "book"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="package")
def lab(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab serving a temporary root that holds a copy of book/ (the stored chapters stay untouched)."""
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"))
    server.root.mkdir(parents=True)
    copy_book(BOOK, server.root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_notebook(browser, lab: LabServer):
    """``open_notebook("book/02_x.ipynb")`` → a :class:`NotebookPage` in a fresh page (closed after the test).

    Uncaught JavaScript errors of the page (a widget's front end failing) are collected in
    ``page.page_errors``; the tests count them as failures.
    """
    contexts = []
    pages: list[NotebookPage] = []

    def _open(path: str) -> NotebookPage:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        notebook = NotebookPage(page, lab, path)
        page.on("pageerror", lambda error: notebook.page_errors.append(str(error)))
        pages.append(notebook)
        return notebook.open()

    yield _open
    for notebook in pages:
        try:
            notebook.shutdown_kernel()
        except Exception:  # noqa: BLE001 - the page may have crashed; the server stops its kernels at the end
            pass
    for context in contexts:
        context.close()


@pytest.fixture(scope="package")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
