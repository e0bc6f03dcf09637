"""Every β widget of the book, in JupyterLab in headless Chromium: run the chapter, move β, check the numbers.

One :class:`WidgetCheck` per widget chapter (the table below). The expected numbers come from the closed
forms, written here independently of the widget code, so a widget that shows the wrong value fails.
Screenshots before and after moving β go to ``tests/browser/screenshots/``; the β widget's also becomes
``docs/beta_widget.png`` (the README's picture) when that file is missing or ``DPO_TEACH_UPDATE_DOCS=1``.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest

from .conftest import BOOK, REPO
from .widget_checks import WidgetCheck, exercise_widget

pytestmark = pytest.mark.browser

NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
DOCS_SCREENSHOT = REPO / "docs" / "beta_widget.png"


def loss_margin_expected(beta: float) -> dict[str, float]:
    """Chapter 04: loss −log σ(βh) at h = 0 is log 2; the weight σ(−βh) is 0.1 where e^{βh} = 9, h = ln 9/β."""
    return {"beta": beta, "loss0": math.log(2.0), "h01": math.log(9.0) / beta}


WIDGETS = [
    WidgetCheck(
        notebook="book/04_dpo_loss.ipynb",
        slider=".dpo-loss-margin-beta",
        readout=".dpo-loss-margin-summary",
        pattern=(
            rf"β = (?P<beta>{NUMBER}): loss at h = 0 is log 2 = (?P<loss0>{NUMBER}); "
            rf"the weight falls to 0.1 at h = ln 9/β = (?P<h01>{NUMBER})"
        ),
        expected=loss_margin_expected,
        betas=(1.0, 0.1),  # on the log slider's grid (10^(k·0.01))
        figure=".dpo-loss-margin-plot",
    ),
]
DOCS_WIDGET = "book/04_dpo_loss.ipynb"  # whose "after" screenshot the README shows


@pytest.mark.parametrize("check", WIDGETS, ids=lambda c: c.name)
def test_widget_in_jupyterlab(check: WidgetCheck, open_notebook, screenshot_dir):
    if not (BOOK.parent / check.notebook).exists():
        pytest.skip(f"{check.notebook} is not in the book yet")
    notebook = open_notebook(check.notebook)
    notebook.run_all()
    shots = exercise_widget(notebook, check, screenshot_dir)
    for path in shots.values():
        assert path.stat().st_size > 0
    if check.notebook == DOCS_WIDGET and (
        not DOCS_SCREENSHOT.exists() or os.environ.get("DPO_TEACH_UPDATE_DOCS") == "1"
    ):
        shutil.copyfile(shots["after"], DOCS_SCREENSHOT)
