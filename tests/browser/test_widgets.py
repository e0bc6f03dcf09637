"""Every β widget of the book, in JupyterLab in headless Chromium: run the chapter, move β, check the numbers.

One :class:`WidgetCheck` per widget chapter (the table below). The expected numbers come from the closed
forms, written here independently of the widget code, so a widget that shows the wrong value fails.
Screenshots before and after moving β go to ``tests/browser/screenshots/``; the β widget's also becomes
``docs/beta_widget.png`` (the README's picture) when that file is missing or ``DPO_TEACH_UPDATE_DOCS=1``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil

import nbformat
import pytest
import torch

from .conftest import BOOK, REPO
from .widget_checks import Action, WidgetCheck, exercise_widget

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


@functools.lru_cache(maxsize=1)
def _sequence_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """Chapter 07's world: the default SequenceWorld, log π_ref over every response (the cached π_ref) and r."""
    from dpo_teach.cache import reference_model
    from dpo_teach.worlds import SequenceWorld

    world = SequenceWorld()
    ref_model, _ = reference_model(world, device="cpu")
    return world.logprobs(ref_model).double(), world.reward_table.double()


def beta_train_expected(beta: float) -> dict[str, float]:
    """Chapter 07: π*_β ∝ π_ref·exp(r/β) per prompt of the sequences world; the readout shows the mean over
    prompts of E_{π*}[r] and KL(π*‖π_ref), computed here with plain torch."""
    log_ref, reward = _sequence_tables()
    logits = log_ref + reward / beta
    log_policy = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    policy = log_policy.exp()
    return {
        "beta": beta,
        "reward": float((policy * reward).sum(-1).mean()),
        "kl": float((policy * (log_policy - log_ref)).sum(-1).mean()),
    }


def check_training_landed(beta: float, shown: dict[str, float]) -> None:
    """*Train* ran DPO at the slider's β and landed near π*_β: within 0.8 nats, the bound chapter 07 states for
    β = 0.5 (where π_ref starts 1.7 nats away)."""
    assert math.isclose(shown["train_beta"], beta, rel_tol=1e-2), (shown, beta)
    assert shown["kl_to_optimal"] < 0.8, f"DPO landed {shown['kl_to_optimal']} nats from π*_β (bound 0.8)"


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
        betas=(10.0, 0.1),  # on the slider's grid (dpo_teach.widgets.beta_grid)
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
        betas=(1.0, 0.1),  # on the slider's grid
        figure=".dpo-loss-margin-plot",
    ),
]
WIDGETS.append(
    WidgetCheck(
        notebook="book/07_beta.ipynb",
        slider=".dpo-beta-slider",
        readout=".dpo-beta-readout",
        pattern=rf"β = (?P<beta>{NUMBER}) · expected reward E.*?\[r\] = (?P<reward>{NUMBER}) · KL.*? = (?P<kl>{NUMBER}) nats",
        expected=beta_train_expected,
        betas=(5.0, 0.5),  # on the slider's grid; *Train* then runs one keyboard step above 0.5 (0.6)
        figure=".dpo-beta-train-plot",
        actions=(
            Action(
                button=".dpo-train-button",
                readout=".dpo-train-result",
                pattern=rf"DPO at β = (?P<train_beta>{NUMBER}).*?KL\(πθ‖π\*β\) = (?P<kl_to_optimal>{NUMBER})",
                check=check_training_landed,
                timeout=240.0,
            ),
        ),
    )
)
DOCS_WIDGET = "book/02_optimal_policy.ipynb"  # whose "after" screenshot the README shows


# The builders of dpo_teach.widgets that display a widget (the book's widget chapters call one of them).
WIDGET_BUILDERS = r"\b(beta_explorer|loss_margin_explorer|beta_trainer)\("


def test_every_widget_chapter_is_checked_in_the_browser():
    """A chapter that builds a widget (a dpo_teach.widgets builder, see WIDGET_BUILDERS) must have a
    WidgetCheck above. (Chapter 08 imports ``train_at_beta`` from a widget module but shows no widget.)"""
    with_widgets = {
        f"book/{path.name}"
        for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
        if any(
            cell.cell_type == "code" and re.search(WIDGET_BUILDERS, cell.source)
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
