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

import torch
from matplotlib.figure import Figure

from dpo_teach._validate import check_finite, check_positive, check_tensor
from dpo_teach.losses import dpo_loss
from dpo_teach.theory import dpo_gradient_weight
from dpo_teach.widgets import SLIDER_DESCRIPTION as SLIDER_DESCRIPTION
from dpo_teach.widgets import SliderWidget, beta_slider
from dpo_teach.widgets.canvas import Line, Rule, SvgCanvas, draw_marks, layered_image

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


def loss_margin_frame(margins: torch.Tensor | None = None) -> Figure:
    """What does not move with β: both axes with fixed limits, mathtext labels and the legend (by proxy)."""
    h = (DEFAULT_MARGINS if margins is None else margins).numpy()
    fig = Figure(figsize=(9, 3.5))
    ax_loss, ax_weight = fig.subplots(1, 2)
    ax_loss.set_title(r"DPO loss $-\log\sigma(\beta h)$", fontsize=11)
    ax_loss.set_xlabel(
        r"log-ratio margin $h = \log\frac{\pi_\theta}{\pi_{\mathrm{ref}}}(y_w) - \log\frac{\pi_\theta}{\pi_{\mathrm{ref}}}(y_l)$"
    )
    ax_loss.set_ylabel("loss (nats)")
    # fixed, so that dragging β shows the slope change (the loss is ≈ −βh for h ≪ 0)
    ax_loss.set_xlim(h.min(), h.max())
    ax_loss.set_ylim(-0.2, 8.0)
    ax_weight.set_title(r"gradient weight $\sigma(\hat r_l - \hat r_w) = \sigma(-\beta h)$", fontsize=11)
    ax_weight.set_xlabel("log-ratio margin $h$")
    ax_weight.set_ylabel("weight")
    ax_weight.set_xlim(h.min(), h.max())
    ax_weight.set_ylim(-0.02, 1.02)
    ax_weight.plot([], [], color="gray", linestyle="--", label=r"weight 0.1 at $h = \ln 9/\beta$")
    ax_weight.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    return fig


def loss_margin_marks(curves: dict) -> list:
    """What moves with β: the loss curve, the weight curve and the vertical line at h = ln 9 / β."""
    h = curves["margin"].numpy()
    return [
        Line(0, h, curves["loss"].numpy(), color="C0"),
        Line(1, h, curves["weight"].numpy(), color="C1"),
        Rule(1, curves["margin_at_weight_0.1"], color="gray", vertical=True, linestyle="--"),
    ]


def plot_loss_margin(curves: dict) -> Figure:
    """The loss (left) and the weight (right) against h, with the h where the weight is 0.1 marked: the widget's
    picture as a plain :class:`matplotlib.figure.Figure` (shown with ``display(fig)``; nothing to close)."""
    return draw_marks(loss_margin_frame(curves["margin"]), loss_margin_marks(curves))


def _summary_html(curves: dict) -> str:
    return (
        f"β = {curves['beta']:.3g}: loss at h = 0 is log 2 = {curves['loss_at_zero']:.4f}; "
        f"the weight falls to 0.1 at h = ln 9/β = {curves['margin_at_weight_0.1']:.4g}"
    )


@dataclass
class LossMarginExplorer(SliderWidget):
    """The widget and its handles: ``widget`` (display it), ``slider``, ``image`` (the plot), ``summary``.

    ``curves`` holds what is shown for the current β, ``canvas`` the frame the curves are drawn on. ``image`` is
    the curves as SVG in an ``ipywidgets.Image`` (not an ``Output``: setting its value sends no display message,
    so the kernel, nbval and the browser see the same thing), stacked over the frame, which is sent once; a move
    rewrites only the curves (about two milliseconds).
    """

    widget: object
    slider: object
    image: object
    summary: object
    canvas: SvgCanvas
    curves: dict = field(default_factory=dict)

    def shown(self) -> dict:
        """The latest :func:`loss_margin_curves` dict (what :meth:`update` returns)."""
        return self.curves

    def _redraw(self, beta: float) -> None:
        self.curves = loss_margin_curves(beta)
        self.summary.value = _summary_html(self.curves)
        self.image.value = self.canvas.marks_svg(loss_margin_marks(self.curves))


def loss_margin_explorer(
    beta: float = 0.5, *, beta_min: float = 0.01, beta_max: float = 10.0
) -> LossMarginExplorer:
    """Build the widget: a β slider over the exact grid in [beta_min, beta_max] and the two curves of chapter 04."""
    import ipywidgets as widgets

    slider = beta_slider(beta, beta_min, beta_max, CSS_SLIDER)
    canvas = SvgCanvas(loss_margin_frame())
    plot, image = layered_image(canvas, CSS_PLOT)
    summary = widgets.HTML()
    summary.add_class(CSS_SUMMARY)
    root = widgets.VBox([slider, summary, plot])
    root.add_class(CSS_ROOT)
    return LossMarginExplorer(root, slider, image, summary, canvas)._connect()


__all__ = [
    "LossMarginExplorer",
    "loss_margin_curves",
    "loss_margin_explorer",
    "loss_margin_frame",
    "loss_margin_marks",
    "plot_loss_margin",
]
