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

import nbformat
import pytest
import torch

from .conftest import BOOK, REPO
from .widget_checks import WidgetCheck, exercise_widget

NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
DOCS_SCREENSHOT = REPO / "docs" / "beta_widget.png"


def beta_bandit_expected(beta: float) -> dict[str, float]:
    """Chapter 02: π*_β ∝ π_ref·exp(r/β) on prompt 0 of BanditWorld(n_responses=6, seed=0) (the chapter's world);
    E_{π*}[r] and KL(π*‖π_ref) = Σ π* (log π* − log π_ref), computed here with plain torch."""
    from dpo_teach.worlds import BanditWorld

    world = BanditWorld(n_responses=6, seed=0)
    log_ref, reward = world.ref_logps[0].double(), world.rewards[0].double()
    logits = log_ref + reward / beta
    log_policy = logits - torch.logsumexp(logits, dim=0)
    policy = log_policy.exp()
    return {
        "beta": beta,
        "reward": float((policy * reward).sum()),
        "kl": float((policy * (log_policy - log_ref)).sum()),
    }


def loss_margin_expected(beta: float) -> dict[str, float]:
    """Chapter 04: loss −log σ(βh) at h = 0 is log 2; the weight σ(−βh) is 0.1 where e^{βh} = 9, h = ln 9/β."""
    return {"beta": beta, "loss0": math.log(2.0), "h01": math.log(9.0) / beta}


WIDGETS = [
    WidgetCheck(
        notebook="book/02_optimal_policy.ipynb",
        slider=".dpo-beta-slider",
        readout=".dpo-beta-readout",
        pattern=rf"β = (?P<beta>{NUMBER}) · expected reward E.*?\[r\] = (?P<reward>{NUMBER}) · KL.*? = (?P<kl>{NUMBER}) nats",
        expected=beta_bandit_expected,
        betas=(10.0, 0.1),  # on the log slider's grid (10^(k·0.01))
        figure=".dpo-beta-plot",
    ),
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
DOCS_WIDGET = "book/02_optimal_policy.ipynb"  # whose "after" screenshot the README shows


def test_every_widget_chapter_is_checked_in_the_browser():
    """A chapter that builds a widget from dpo_teach.widgets must have a WidgetCheck above."""
    with_widgets = {
        f"book/{path.name}"
        for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
        if any(
            cell.cell_type == "code" and "dpo_teach.widgets" in cell.source
            for cell in nbformat.read(path, as_version=4).cells
        )
    }
    unchecked = sorted(with_widgets - {check.notebook for check in WIDGETS})
    assert not unchecked, f"add a WidgetCheck to tests/browser/test_widgets.py for {unchecked}"


@pytest.mark.browser
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
