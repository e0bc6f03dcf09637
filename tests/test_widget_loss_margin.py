"""Chapter 04's widget: the curves follow −log σ(βh) and σ(−βh), the slider drives them, bad β is refused."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.text import Text
from svg_marks import marks, polyline_points

from dpo_teach.widgets.canvas import overlapping_texts
from dpo_teach.widgets.loss_margin import (
    CSS_PLOT,
    CSS_ROOT,
    CSS_SLIDER,
    CSS_SUMMARY,
    SLIDER_DESCRIPTION,
    loss_margin_curves,
    loss_margin_explorer,
    loss_margin_frame,
    plot_loss_margin,
)


def _loss(beta, h):  # −log σ(βh), written independently of torch
    return math.log1p(math.exp(-beta * h)) if beta * h > -30 else -beta * h + math.log1p(math.exp(beta * h))


def _weight(beta, h):  # σ(−βh)
    return 1 / (1 + math.exp(beta * h))


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
def test_curves_follow_the_closed_forms(beta):
    curves = loss_margin_curves(beta)
    h = curves["margin"].tolist()
    assert curves["loss"].tolist() == pytest.approx([_loss(beta, v) for v in h], rel=1e-5, abs=1e-6)
    assert curves["weight"].tolist() == pytest.approx([_weight(beta, v) for v in h], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(curves["reward_margin"], beta * curves["margin"])
    assert curves["margin_at_weight_0.1"] == pytest.approx(math.log(9) / beta)
    assert curves["loss_at_zero"] == pytest.approx(math.log(2))


def test_weight_is_one_tenth_at_ln9_over_beta():
    beta = 0.3
    at = loss_margin_curves(beta, torch.tensor([0.0, math.log(9) / beta]))
    assert at["weight"].tolist() == pytest.approx([0.5, 0.1], rel=1e-6)
    assert at["loss"][0].item() == pytest.approx(math.log(2), rel=1e-6)


def test_moving_the_slider_recomputes_the_curves():
    explorer = loss_margin_explorer(beta=0.5)
    loss_before = explorer.curves["loss"].clone()
    png_before = bytes(explorer.image.value)
    explorer.slider.value = 2.0
    assert bytes(explorer.image.value) != png_before  # the plot was redrawn
    assert explorer.curves["beta"] == 2.0
    h = explorer.curves["margin"].tolist()
    assert explorer.curves["loss"].tolist() == pytest.approx([_loss(2.0, v) for v in h], rel=1e-5, abs=1e-6)
    assert explorer.curves["weight"].tolist() == pytest.approx(
        [_weight(2.0, v) for v in h], rel=1e-5, abs=1e-6
    )
    assert not torch.allclose(loss_before, explorer.curves["loss"])
    # A larger β makes both curves steeper: more loss for a wrongly ranked pair, less weight for a right one.
    assert explorer.curves["loss"][0] > loss_before[0]
    assert explorer.curves["weight"][-1] < 0.5 and explorer.curves["weight"][-1] < _weight(0.5, h[-1])
    assert f"{math.log(9) / 2.0:.4g}" in explorer.summary.value


def test_update_moves_the_slider_and_redraws_the_figure():
    explorer = loss_margin_explorer(beta=0.5)
    curves = explorer.update(0.1)
    assert explorer.slider.value == pytest.approx(0.1)
    assert curves["beta"] == pytest.approx(0.1)
    svg = bytes(explorer.image.value)
    assert explorer.image.format == "svg+xml" and svg.startswith(b"<?xml")  # the picture the reader sees
    loss_svg, weight_svg = marks(svg, "polyline")
    # the curves in SVG coordinates map back, through the frame's own axes, to the curves computed
    frame = explorer.canvas.figure
    for index, line, key in ((0, loss_svg, "loss"), (1, weight_svg, "weight")):
        xy = torch.tensor(polyline_points(line), dtype=torch.float64) * frame.dpi / 72
        xy[:, 1] = frame.bbox.height - xy[:, 1]
        data = frame.axes[index].transData.inverted().transform(xy.numpy())
        assert data[:, 0].tolist() == pytest.approx(curves["margin"].tolist(), abs=0.05)
        assert data[:, 1].tolist() == pytest.approx(curves[key].tolist(), abs=0.03)
    (rule,) = marks(svg, "line")  # the vertical line at h = ln 9 / β
    x_pixels = float(rule["x1"]) * frame.dpi / 72
    h01 = frame.axes[1].transData.inverted().transform((x_pixels, 0.0))[0]
    assert h01 == pytest.approx(math.log(9) / 0.1, abs=0.05)


def test_static_figure_draws_the_widget_marks_with_mathtext_and_no_overlap():
    curves = loss_margin_curves(0.5)
    figure = plot_loss_margin(curves)
    loss_line = figure.axes[0].get_lines()[0]
    weight_line = figure.axes[1].get_lines()[1]  # after the legend's proxy, before the line at ln 9/β
    assert loss_line.get_ydata().tolist() == pytest.approx(curves["loss"].tolist())
    assert weight_line.get_ydata().tolist() == pytest.approx(curves["weight"].tolist())
    assert overlapping_texts(figure) == [] and overlapping_texts(loss_margin_frame()) == []
    labels = [t.get_text() for t in figure.findobj(Text)]
    assert not any("_" in t and "$" not in t for t in labels), labels


def test_stable_hooks_for_the_browser_tests():
    explorer = loss_margin_explorer()
    assert explorer.slider.description == SLIDER_DESCRIPTION
    assert CSS_ROOT in explorer.widget._dom_classes
    assert CSS_SLIDER in explorer.slider._dom_classes
    assert CSS_PLOT in explorer.image._dom_classes
    assert CSS_SUMMARY in explorer.summary._dom_classes
    for ax in explorer.canvas.figure.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_update_with_a_non_positive_or_non_finite_beta_is_a_value_error(beta):
    explorer = loss_margin_explorer()
    with pytest.raises(ValueError, match="beta"):
        explorer.update(beta)


def test_update_with_a_beta_outside_the_slider_is_a_value_error():
    explorer = loss_margin_explorer(beta_max=10.0)
    with pytest.raises(ValueError, match="outside the slider"):
        explorer.update(50.0)


def test_update_with_a_string_beta_is_a_type_error():
    explorer = loss_margin_explorer()
    with pytest.raises(TypeError, match="beta"):
        explorer.update("0.5")


def test_curves_with_a_negative_beta_is_a_value_error():
    with pytest.raises(ValueError, match="beta"):
        loss_margin_curves(-0.1)


def test_curves_with_a_list_of_margins_is_a_type_error():
    with pytest.raises(TypeError, match="margins"):
        loss_margin_curves(0.5, [0.0, 1.0])


def test_curves_with_2d_margins_is_a_value_error():
    with pytest.raises(ValueError, match="1-D"):
        loss_margin_curves(0.5, torch.zeros(2, 3))


def test_explorer_with_beta_outside_its_range_is_a_value_error():
    with pytest.raises(ValueError, match="widen the range"):
        loss_margin_explorer(beta=20.0, beta_max=10.0)
