"""Chapter 04's widget: the DPO loss and its gradient weight against the implicit margin, for a chosen β.

For one preference pair write the *log-ratio margin*

    h = log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x),

so that the implicit reward margin is r̂_w − r̂_l = β·h. Then

    loss(h)   = −log σ(β h)              (the DPO loss of the pair)
    weight(h) = σ(r̂_l − r̂_w) = σ(−β h)  (the factor in front of the gradient: "how wrong is r̂ on this pair")

β sets the scale of the margin: at h = 0 the loss is log 2 and the weight 1/2 for every β, and the weight
falls to 0.1 at h = ln 9 / β. :func:`loss_margin_curves` computes the curves with the package's own
:func:`dpo_teach.losses.dpo_loss` and :func:`dpo_teach.theory.dpo_gradient_weight` (never a copy);
:func:`loss_margin_explorer` wires them to a slider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch

from dpo_teach._validate import check_finite, check_positive, check_tensor
from dpo_teach.losses import dpo_loss
from dpo_teach.theory import dpo_gradient_weight
from dpo_teach.widgets import SLIDER_DESCRIPTION as SLIDER_DESCRIPTION
from dpo_teach.widgets import figure_png, log_beta_slider, move_slider

# Stable hooks for the browser tests: CSS classes (``add_class``) and the slider's description.
CSS_ROOT = "dpo-loss-margin"
CSS_SLIDER = "dpo-loss-margin-beta"
CSS_PLOT = "dpo-loss-margin-plot"
CSS_SUMMARY = "dpo-loss-margin-summary"

DEFAULT_MARGINS = torch.linspace(-20.0, 20.0, 401)


def loss_margin_curves(beta: float, margins: torch.Tensor | None = None) -> dict:
    """The DPO loss and gradient weight of one pair as functions of the log-ratio margin h, for this β.

    Args:
        beta: the KL coefficient β > 0.
        margins: 1-D float tensor of log-ratio margins h (default: 401 points on [−20, 20]).

    Returns a dict with ``margin`` [M] (h), ``reward_margin`` [M] (β·h = r̂_w − r̂_l), ``loss`` [M]
    (−log σ(βh)), ``weight`` [M] (σ(−βh)), and the floats ``beta``, ``loss_at_zero`` (log 2) and
    ``margin_at_weight_0.1`` (ln 9 / β, where the weight has fallen to 0.1).
    """
    beta = check_positive("beta", beta)
    margins = DEFAULT_MARGINS if margins is None else margins
    check_finite("margins", check_tensor("margins", margins))
    if margins.dim() != 1:
        raise ValueError(f"margins must be 1-D (a grid of h values), got shape {list(margins.shape)}.")
    zeros = torch.zeros_like(margins)
    # A pair whose policy log-ratio margin is h: log π_θ(y_w) − log π_ref(y_w) = h, the rejected side at 0.
    losses, chosen_rewards, rejected_rewards = dpo_loss(margins, zeros, zeros, zeros, beta=beta)
    weight = dpo_gradient_weight(margins, zeros, zeros, zeros, beta=beta)
    return {
        "beta": beta,
        "margin": margins,
        "reward_margin": chosen_rewards - rejected_rewards,
        "loss": losses,
        "weight": weight,
        "loss_at_zero": math.log(2.0),
        "margin_at_weight_0.1": math.log(9.0) / beta,
    }


def plot_loss_margin(curves: dict) -> plt.Figure:
    """Draw the loss (left) and the weight (right) against h, with the h where the weight is 0.1 marked."""
    fig, (ax_loss, ax_weight) = plt.subplots(1, 2, figsize=(9, 3.4))
    h = curves["margin"].numpy()
    h01 = curves["margin_at_weight_0.1"]
    ax_loss.plot(h, curves["loss"].numpy(), color="C0")
    ax_loss.set_title(f"DPO loss −log σ(βh), β = {curves['beta']:.3g}")
    ax_loss.set_xlabel("log-ratio margin h = log π/π_ref (y_w) − log π/π_ref (y_l)")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.set_ylim(
        -0.2, 8.0
    )  # fixed, so that dragging β shows the slope change (the loss is ≈ −βh for h ≪ 0)
    ax_weight.plot(h, curves["weight"].numpy(), color="C1")
    ax_weight.axvline(h01, color="gray", linestyle="--", label=f"weight 0.1 at h = ln 9/β = {h01:.4g}")
    ax_weight.set_title("Gradient weight σ(r̂_l − r̂_w) = σ(−βh)")
    ax_weight.set_xlabel("log-ratio margin h")
    ax_weight.set_ylabel("weight")
    ax_weight.set_ylim(-0.02, 1.02)
    ax_weight.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _summary_html(curves: dict) -> str:
    return (
        f"β = {curves['beta']:.3g}: loss at h = 0 is log 2 = {curves['loss_at_zero']:.4f}; "
        f"the weight falls to 0.1 at h = ln 9/β = {curves['margin_at_weight_0.1']:.4g}"
    )


@dataclass
class LossMarginExplorer:
    """The widget and its handles: ``widget`` (display it), ``slider``, ``image`` (the plot), ``summary``.

    ``curves`` and ``figure`` hold what is shown for the current β. The plot is a PNG in an ``ipywidgets.Image``
    (not an ``Output``): setting its value sends no display message, so the kernel, nbval and the browser see
    the same thing.
    """

    widget: object
    slider: object
    image: object
    summary: object
    curves: dict = field(default_factory=dict)
    figure: plt.Figure | None = None

    def update(self, beta: float) -> dict:
        """Set β (moving the slider), recompute the curves, redraw the plot and the summary; returns the curves.

        Raises ``ValueError``/``TypeError`` for a β that is not a positive number inside the slider's range.
        """
        move_slider(self.slider, beta, self._redraw)  # the slider's observer redraws
        return self.curves

    def _redraw(self, beta: float) -> None:
        self.curves = loss_margin_curves(beta)
        self.summary.value = _summary_html(self.curves)
        figure = plot_loss_margin(self.curves)
        self.image.value = figure_png(figure, dpi=90)
        plt.close(figure)
        self.figure = figure


def loss_margin_explorer(
    beta: float = 0.5, *, beta_min: float = 0.01, beta_max: float = 10.0
) -> LossMarginExplorer:
    """Build the widget: a log-scale β slider over [beta_min, beta_max] and the two curves of chapter 04."""
    import ipywidgets as widgets

    slider = log_beta_slider(beta, beta_min, beta_max, CSS_SLIDER)
    image = widgets.Image(format="png")
    image.add_class(CSS_PLOT)
    summary = widgets.HTML()
    summary.add_class(CSS_SUMMARY)
    root = widgets.VBox([slider, summary, image])
    root.add_class(CSS_ROOT)
    explorer = LossMarginExplorer(widget=root, slider=slider, image=image, summary=summary)
    slider.observe(lambda change: explorer._redraw(change["new"]), names="value")
    explorer._redraw(beta)
    return explorer


__all__ = ["LossMarginExplorer", "loss_margin_curves", "loss_margin_explorer", "plot_loss_margin"]
