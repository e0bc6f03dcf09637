"""A figure drawn once by matplotlib, with the parts that move with β written into its SVG as strings.

Re-rendering a matplotlib figure costs 0.3–1 s on a small CPU — too slow for a slider. A widget's picture
splits in two: the *frame* (axes, ticks, mathtext labels, legend, everything that does not depend on β) is
rendered to SVG once; the *marks* that move (bars, curves, a star) are small dataclasses that write themselves
as SVG elements in the frame's data coordinates (:class:`SvgCanvas`), a few hundred microseconds per move.

Each mark can also draw itself with matplotlib (``draw(figure)``), so the static figure a chapter prints and the
widget's picture come from one description of what is drawn, never two.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

_DASHES = {"-": None, "--": "5,3", ":": "1.5,2.5"}


def _check_style(linestyle: str) -> str:
    if linestyle not in _DASHES:
        raise ValueError(f"linestyle must be one of {sorted(_DASHES)}, got {linestyle!r}.")
    return linestyle


def _dash(linestyle: str) -> str:
    pattern = _DASHES[_check_style(linestyle)]
    return f' stroke-dasharray="{pattern}"' if pattern else ""


@dataclass(frozen=True)
class Bars:
    """Vertical bars from 0 to ``heights`` at ``x`` on axes number ``axes`` of the frame."""

    axes: int
    x: Sequence[float]
    heights: Sequence[float]
    width: float
    color: str

    def draw(self, figure: Figure) -> None:
        figure.axes[self.axes].bar(self.x, self.heights, width=self.width, color=self.color, zorder=3)

    def svg(self, canvas: SvgCanvas) -> str:
        x = np.asarray(self.x, dtype=float)
        left, bottom = canvas.xy(self.axes, x - self.width / 2, np.zeros_like(x))
        right, top = canvas.xy(self.axes, x + self.width / 2, np.asarray(self.heights, dtype=float))
        fill = to_hex(self.color)
        return "".join(
            f'<rect x="{a:.2f}" y="{min(t, b):.2f}" width="{c - a:.2f}" height="{abs(b - t):.2f}" fill="{fill}"/>'
            for a, b, c, t in zip(left, bottom, right, top, strict=True)
        )


@dataclass(frozen=True)
class Line:
    """A polyline through (``x``, ``y``) on axes number ``axes``, clipped to the axes' box."""

    axes: int
    x: Sequence[float]
    y: Sequence[float]
    color: str
    linewidth: float = 1.5
    linestyle: str = "-"

    def draw(self, figure: Figure) -> None:
        figure.axes[self.axes].plot(
            self.x, self.y, color=self.color, linewidth=self.linewidth, linestyle=_check_style(self.linestyle)
        )

    def svg(self, canvas: SvgCanvas) -> str:
        xs, ys = canvas.xy(self.axes, np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float))
        points = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(xs, ys, strict=True))
        return (
            f'<polyline points="{points}" fill="none" stroke="{to_hex(self.color)}" '
            f'stroke-width="{self.linewidth:.2f}"{_dash(self.linestyle)} clip-path="url(#{canvas.clip_id(self.axes)})"/>'
        )


@dataclass(frozen=True)
class Rule:
    """A horizontal (``value`` on the y axis) or vertical (on the x axis) line across axes number ``axes``."""

    axes: int
    value: float
    color: str
    vertical: bool = False
    linestyle: str = "--"
    linewidth: float = 1.5

    def draw(self, figure: Figure) -> None:
        ax = figure.axes[self.axes]
        rule = ax.axvline if self.vertical else ax.axhline
        rule(self.value, color=self.color, linestyle=_check_style(self.linestyle), linewidth=self.linewidth)

    def svg(self, canvas: SvgCanvas) -> str:
        x0, y0, x1, y1 = canvas.box(self.axes)
        if self.vertical:
            (x,), _ = canvas.xy(self.axes, np.array([self.value]), np.array([0.0]))
            x0 = x1 = x
        else:
            _, (y,) = canvas.xy(self.axes, np.array([0.0]), np.array([self.value]))
            y0 = y1 = y
        return (
            f'<line x1="{x0:.2f}" y1="{y0:.2f}" x2="{x1:.2f}" y2="{y1:.2f}" stroke="{to_hex(self.color)}" '
            f'stroke-width="{self.linewidth:.2f}"{_dash(self.linestyle)} clip-path="url(#{canvas.clip_id(self.axes)})"/>'
        )


@dataclass(frozen=True)
class Star:
    """A five-pointed star at (``x``, ``y``) on axes number ``axes``; ``attributes`` become attributes of its
    ``<g id=...>`` (the browser tests read them), and the centre is also written as ``data-x``/``data-y``."""

    axes: int
    x: float
    y: float
    color: str
    element_id: str
    attributes: dict = field(default_factory=dict)
    size: float = 9.0

    def draw(self, figure: Figure) -> None:
        figure.axes[self.axes].plot(
            [self.x], [self.y], marker="*", markersize=2 * self.size, color=self.color, markeredgecolor="black",
            linestyle="none", zorder=5,
        )  # fmt: skip

    def svg(self, canvas: SvgCanvas) -> str:
        (x,), (y,) = canvas.xy(self.axes, np.array([self.x]), np.array([self.y]))
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, self.size, self.size * 0.42)
        corners = " ".join(
            f"{x + r * np.cos(a):.2f},{y - r * np.sin(a):.2f}" for r, a in zip(radii, angles, strict=True)
        )
        attributes = "".join(f' {key}="{value}"' for key, value in self.attributes.items())
        return (
            f'<g id="{self.element_id}"{attributes} data-x="{x:.2f}" data-y="{y:.2f}">'
            f'<polygon points="{corners}" fill="{to_hex(self.color)}" stroke="black" stroke-width="0.6"/></g>'
        )


class SvgCanvas:
    """The frame ``figure`` rendered to SVG once; :meth:`marks_svg` writes the marks as a layer of the same size.

    The figure must be final (limits fixed, layout done) before it is given here: the marks are placed with the
    axes' own data transforms, so they land exactly where matplotlib would have drawn them.
    """

    def __init__(self, figure: Figure):
        self.figure = figure
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        text = buffer.getvalue()
        clips = "".join(
            f'<clipPath id="{self.clip_id(i)}"><rect x="{x0:.2f}" y="{y0:.2f}" width="{x1 - x0:.2f}" '
            f'height="{y1 - y0:.2f}"/></clipPath>'
            for i, (x0, y0, x1, y1) in enumerate(self.box(i) for i in range(len(figure.axes)))
        )
        self.frame = text[: text.rindex("</svg>")] + f"<defs>{clips}</defs>"

    @staticmethod
    def clip_id(axes: int) -> str:
        return f"dpo-clip-{axes}"

    def _scale(self) -> float:
        return 72.0 / self.figure.dpi

    def xy(self, axes: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data coordinates of axes number ``axes`` → SVG coordinates (points from the top-left corner)."""
        display = self.figure.axes[axes].transData.transform(np.column_stack([x, y]))
        scale = self._scale()
        return display[:, 0] * scale, (self.figure.bbox.height - display[:, 1]) * scale

    def box(self, axes: int) -> tuple[float, float, float, float]:
        """The axes' box in SVG coordinates: (left, top, right, bottom)."""
        bbox, scale = self.figure.axes[axes].bbox, self._scale()
        height = self.figure.bbox.height
        return bbox.x0 * scale, (height - bbox.y1) * scale, bbox.x1 * scale, (height - bbox.y0) * scale

    def frame_svg(self) -> bytes:
        """The frame alone, as a complete SVG (the bottom layer of :func:`layered_image`)."""
        return (self.frame + "</svg>\n").encode()

    def marks_svg(self, marks: Sequence) -> bytes:
        """Only the ``marks``, on a transparent SVG of the frame's size: the top layer of :func:`layered_image`.
        A browser decodes this few-kB picture per slider step instead of the whole frame (measured: about 15 ms
        against 40 ms for chapter 04's picture on a busy 2-core machine)."""
        width, height = self.figure.get_figwidth() * 72, self.figure.get_figheight() * 72
        return (
            f'<?xml version="1.0" encoding="utf-8" standalone="no"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{width:g}pt" height="{height:g}pt" viewBox="0 0 {width:g} {height:g}" version="1.1">'
            + self.frame[self.frame.rindex("<defs><clipPath") :]
            + "".join(mark.svg(self) for mark in marks)
            + "</svg>\n"
        ).encode()


#: The CSS class of a layer that lies on top of the image before it (the static site merges the two).
LAYER_CLASS = "dpo-svg-layer"


def layered_image(canvas: SvgCanvas, css_class: str):
    """Two ``ipywidgets.Image`` stacked in one grid cell: the frame (sent once) under the marks (sent per move).

    Returns ``(box, marks_image)``: display ``box``; set ``marks_image.value = canvas.marks_svg(marks)`` to
    redraw. ``marks_image`` carries ``css_class`` and :data:`LAYER_CLASS`; the frame ``css_class + "-frame"``.
    """
    import ipywidgets as widgets

    def layer(**kwargs):  # both layers fill the cell's width (scaled alike, so they stay aligned)
        return widgets.Image(format="svg+xml", layout=widgets.Layout(grid_area="1 / 1 / 2 / 2", width="100%",
                                                                      height="auto"), **kwargs)  # fmt: skip

    frame = layer(value=canvas.frame_svg())
    frame.add_class(css_class + "-frame")
    marks = layer()
    marks.add_class(css_class)
    marks.add_class(LAYER_CLASS)
    width = (
        f"{canvas.figure.get_figwidth() * 96:.0f}px"  # the picture's own size (CSS px), at most the page's
    )
    box = widgets.GridBox([frame, marks], layout=widgets.Layout(grid_template_columns="100%", width="100%",
                                                                max_width=width))  # fmt: skip
    return box, marks


def draw_marks(figure: Figure, marks: Sequence) -> Figure:
    """Draw ``marks`` onto ``figure`` with matplotlib (the static version of a widget's picture); returns it."""
    for mark in marks:
        mark.draw(figure)
    return figure


def _renderer(figure: Figure, draw: bool = False):
    """A renderer that measures text on ``figure`` (an Agg canvas is attached to a bare Figure);
    ``draw=True`` draws first, which lays out tick labels."""
    canvas = figure.canvas if hasattr(figure.canvas, "get_renderer") else FigureCanvasAgg(figure)
    if draw:
        canvas.draw()
    return canvas.get_renderer()


#: The offsets (points) tried, in order, for a point's label: right-below first, as the frontier plots have it.
LABEL_OFFSETS = ((5, -11), (5, 4), (-5, -11), (-5, 4), (5, -22), (5, 15), (-5, -22), (-5, 15), (12, -4))
POINT_LABEL = "dpo-point-label"


def place_point_labels(ax) -> int:
    """Move the annotations of ``ax`` whose gid is :data:`POINT_LABEL` so that none covers another or the
    legend: each takes the first offset of :data:`LABEL_OFFSETS` that is free (or the least covered one).
    Returns how many labels could not be placed free. Call it again after a layout change (tight_layout)."""
    labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL]
    if not labels:
        return 0
    renderer = _renderer(ax.figure)
    legend = ax.get_legend()
    placed = [legend.get_window_extent(renderer)] if legend is not None else []
    crowded = 0
    for label in labels:
        best = None
        for dx, dy in LABEL_OFFSETS:
            label.xyann = (dx, dy)
            label.set_horizontalalignment("left" if dx > 0 else "right")
            box = label.get_window_extent(renderer)
            cover = sum(_overlap_area(box, other) for other in placed)
            if best is None or cover < best[0]:
                best = (cover, dx, dy, box)
            if cover == 0:
                break
        cover, dx, dy, box = best
        label.xyann = (dx, dy)
        label.set_horizontalalignment("left" if dx > 0 else "right")
        crowded += cover > 0
        placed.append(box)
    return crowded


def _overlap_area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def overlapping_texts(figure: Figure) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of ``figure`` whose boxes overlap (titles, labels, ticks, legends,
    annotations): an empty list when no label covers another. Used by the tests of every widget picture."""
    renderer = _renderer(figure, draw=True)
    texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t, t.get_window_extent(renderer).padded(-0.5)) for t in texts]
    pairs = []
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            if box_a.overlaps(box_b):
                pairs.append((a.get_text(), b.get_text()))
    return pairs


__all__ = [
    "Bars",
    "LAYER_CLASS",
    "LABEL_OFFSETS",
    "Line",
    "POINT_LABEL",
    "Rule",
    "Star",
    "SvgCanvas",
    "draw_marks",
    "layered_image",
    "overlapping_texts",
    "place_point_labels",
]
