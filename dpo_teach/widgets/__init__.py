"""Interactive widgets of the book (ipywidgets + matplotlib).

Each widget is split in two: a pure function that computes what the widget shows for a given β (tested
from pytest, fast enough for a live slider), and a builder that wires it to ipywidgets controls and returns
the widget plus handles the tests and the browser tests can drive.
"""

from __future__ import annotations

import io
import math

from dpo_teach._validate import check_positive

SLIDER_DESCRIPTION = "β"


def log_beta_slider(beta: float, beta_min: float, beta_max: float, css_class: str):
    """A log-scale β slider over [beta_min, beta_max] (validated first, so a bad β fails here with a clear
    message rather than inside a callback); ``css_class`` lets the browser tests find it."""
    import ipywidgets as widgets

    beta = check_positive("beta", beta)
    beta_min = check_positive("beta_min", beta_min)
    beta_max = check_positive("beta_max", beta_max)
    if not beta_min <= beta <= beta_max:
        raise ValueError(
            f"beta={beta} is outside [beta_min, beta_max] = [{beta_min}, {beta_max}]; widen the range."
        )
    slider = widgets.FloatLogSlider(
        value=beta,
        base=10,
        min=math.log10(beta_min),
        max=math.log10(beta_max),
        step=0.01,
        description=SLIDER_DESCRIPTION,
        continuous_update=True,
        readout_format=".3g",
    )
    slider.add_class(css_class)
    return slider


def move_slider(slider, beta: float, redraw) -> None:
    """Set the slider to β, which triggers its observer (``redraw``); call ``redraw`` directly when β is already
    the slider's value. A β outside the slider's range is a ``ValueError`` naming the range."""
    beta = check_positive("beta", beta)
    low, high = slider.base**slider.min, slider.base**slider.max
    if not low * (1 - 1e-9) <= beta <= high * (1 + 1e-9):
        raise ValueError(
            f"beta={beta} is outside the slider's range [{low:.3g}, {high:.3g}]; pick a β inside it or "
            "build the widget with a wider beta_min/beta_max."
        )
    if slider.value != beta:
        slider.value = beta
    else:
        redraw(beta)


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure rendered to PNG bytes: what a widget's ``ipywidgets.Image`` shows. (An ``Output`` widget holding
    a figure would break strict nbval: re-run outside a front end, the figure lands in the cell's outputs.)"""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
