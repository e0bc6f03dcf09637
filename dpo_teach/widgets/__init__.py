"""Interactive widgets of the book (ipywidgets + matplotlib).

Each widget is split in two: a pure function that computes what the widget shows for a given β (tested
from pytest, fast enough for a live slider), and a builder that wires it to ipywidgets controls and returns
the widget plus handles the tests and the browser tests can drive.
"""

from __future__ import annotations

import math

from dpo_teach._validate import check_positive

SLIDER_DESCRIPTION = "β"


#: The mantissas of the β grid in every decade: round numbers, about 1.2× apart, so that the values the chapters
#: use (0.05, 0.1, 0.25, 0.5, 0.7, 1, 2, 5, ...) are on it *exactly* (a log slider's 10^(k·step) never is).
GRID_MANTISSAS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def beta_grid(beta_min: float, beta_max: float) -> list[float]:
    """The slider's β values in [beta_min, beta_max]: each decade's :data:`GRID_MANTISSAS`, as the floats the
    decimal literals give (``0.5``, not ``0.501``), increasing. Both ends must lie on the grid."""
    beta_min = check_positive("beta_min", beta_min)
    beta_max = check_positive("beta_max", beta_max)
    if not beta_min < beta_max:
        raise ValueError(f"beta_min={beta_min} must be below beta_max={beta_max}; widen the range.")
    grid = [
        float(f"{m}e{e}")
        for e in range(math.floor(math.log10(beta_min)) - 1, math.ceil(math.log10(beta_max)) + 1)
        for m in GRID_MANTISSAS
    ]
    grid = sorted({v for v in grid if beta_min * (1 - 1e-12) <= v <= beta_max * (1 + 1e-12)})
    for name, end in (("beta_min", beta_min), ("beta_max", beta_max)):
        if not any(math.isclose(v, end, rel_tol=1e-12) for v in grid):
            raise ValueError(
                f"{name}={end} is not on the β grid (mantissas {', '.join(f'{m:g}' for m in GRID_MANTISSAS)} "
                "in every decade); pick a grid value such as 0.01, 0.05, 20 or 100."
            )
    return grid


def beta_slider(beta: float, beta_min: float, beta_max: float, css_class: str):
    """A β slider over :func:`beta_grid` (an ``ipywidgets.SelectionSlider``: every position is an exact β, and
    the arrow keys step through the grid). Validated first, so a bad β fails here with a clear message rather
    than inside a callback; ``css_class`` lets the browser tests find it."""
    import ipywidgets as widgets

    beta = check_positive("beta", beta)
    grid = beta_grid(beta_min, beta_max)
    if not grid[0] <= beta <= grid[-1]:
        raise ValueError(
            f"beta={beta} is outside [beta_min, beta_max] = [{beta_min}, {beta_max}]; widen the range."
        )
    slider = widgets.SelectionSlider(
        options=[(f"{v:g}", v) for v in grid],
        value=grid_value(grid, beta),
        description=SLIDER_DESCRIPTION,
        continuous_update=True,
    )
    slider.add_class(css_class)
    return slider


def grid_value(grid: list[float], beta: float) -> float:
    """``beta`` itself if it is on ``grid`` (to 1e-9 relative), else a ``ValueError`` naming its neighbours."""
    for value in grid:
        if math.isclose(value, beta, rel_tol=1e-9):
            return value
    below = max((v for v in grid if v < beta), default=None)
    above = min((v for v in grid if v > beta), default=None)
    if below is None or above is None:
        raise ValueError(
            f"beta={beta} is outside the slider's range [{grid[0]:g}, {grid[-1]:g}]; pick a β inside it or "
            "build the widget with a wider beta_min/beta_max."
        )
    raise ValueError(
        f"beta={beta} is not on the slider's grid; the nearest values are {below:g} and {above:g}. "
        "(Compute any other β with the widget's pure function, e.g. beta_view(world, beta).)"
    )


def move_slider(slider, beta: float, redraw) -> None:
    """Set the slider to β, which triggers its observer (``redraw``); call ``redraw`` directly when β is already
    the slider's value. A β off the slider's grid or outside its range is a ``ValueError`` that says which."""
    beta = check_positive("beta", beta)
    value = grid_value([v for _, v in slider.options], beta)
    if slider.value != value:
        slider.value = value
    else:
        redraw(value)


class SliderWidget:
    """What every β widget of the book shares: ``update(β)`` moves its ``slider`` (whose observer redraws) and
    returns what is shown (:meth:`shown`); displaying the object displays its ``widget``. A subclass defines
    ``_redraw(beta)`` and ``shown()`` and calls :meth:`_connect` once its controls exist."""

    def update(self, beta: float):
        """Set β (moving the slider) and redraw; returns :meth:`shown`. A β that is not a positive number on the
        slider's grid is a ``TypeError``/``ValueError`` that says why, and leaves the widget as it was."""
        move_slider(self.slider, beta, self._redraw)
        return self.shown()

    def _connect(self):
        self.slider.observe(lambda change: self._redraw(change["new"]), names="value")
        self._redraw(self.slider.value)
        return self

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
