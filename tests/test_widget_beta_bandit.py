"""The β widget of chapter 02: the numbers it shows equal the closed form, computed here independently."""

from __future__ import annotations

import math
import re

import pytest
import torch
from matplotlib.text import Text
from svg_marks import marks

from dpo_teach.widgets.beta_bandit import (
    CSS_PLOT,
    CSS_READOUT,
    CSS_ROOT,
    CSS_SLIDER,
    SLIDER_DESCRIPTION,
    beta_explorer,
    beta_frame,
    beta_view,
    plot_beta_view,
)
from dpo_teach.widgets.canvas import overlapping_texts
from dpo_teach.worlds import BanditWorld


def closed_form(world: BanditWorld, beta: float, prompt: int = 0) -> tuple[list[float], float, float]:
    """π*_β, E_{π*}[r] and KL(π*‖π_ref) with plain Python floats: π* ∝ π_ref·exp(r/β)."""
    ref = [math.exp(v) for v in world.ref_logps[prompt].tolist()]
    r = world.rewards[prompt].tolist()
    top = max(r)
    weights = [p * math.exp((ri - top) / beta) for p, ri in zip(ref, r, strict=True)]
    z = sum(weights)
    pi = [w / z for w in weights]
    reward = sum(p * ri for p, ri in zip(pi, r, strict=True))
    kl = sum(p * math.log(p / q) for p, q in zip(pi, ref, strict=True) if p > 0)
    return pi, reward, kl


def readout_numbers(html: str) -> dict[str, float]:
    """The numbers of the readout, read back from its ``data-quantity`` spans (as a browser test would)."""
    return {k: float(v) for k, v in re.findall(r'data-quantity="(\w+)">([-0-9.]+)<', html)}


@pytest.fixture
def world() -> BanditWorld:
    return BanditWorld(n_responses=6, seed=0)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0, 7.0])
def test_beta_view_matches_closed_form(world, beta):
    view = beta_view(world, beta)
    pi, reward, kl = closed_form(world, beta)
    torch.testing.assert_close(
        view["policy_probs"], torch.tensor(pi, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert view["expected_reward"] == pytest.approx(reward, abs=1e-10)
    assert view["kl"] == pytest.approx(kl, abs=1e-10)
    # J(π*) = E[r] − β KL = β log Z: the Gibbs rewrite at its maximum.
    assert view["objective"] == pytest.approx(reward - beta * kl, abs=1e-10)


def test_beta_view_other_prompt():
    world = BanditWorld(n_responses=5, n_prompts=3, seed=4)
    pi, reward, kl = closed_form(world, 0.4, prompt=2)
    view = beta_view(world, 0.4, prompt=2)
    torch.testing.assert_close(
        view["policy_probs"], torch.tensor(pi, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert view["kl"] == pytest.approx(kl, abs=1e-10)


def test_slider_moves_readout_and_policy(world):
    explorer = beta_explorer(world, beta=1.0)
    before = readout_numbers(explorer.readout.value)
    _, reward, kl = closed_form(world, 1.0)
    assert before == {"beta": 1.0, "expected_reward": round(reward, 3), "kl": round(kl, 3)}

    explorer.slider.value = 0.1  # what dragging the slider does
    pi, reward, kl = closed_form(world, 0.1)
    after = readout_numbers(explorer.readout.value)
    assert after == {"beta": 0.1, "expected_reward": round(reward, 3), "kl": round(kl, 3)}
    torch.testing.assert_close(explorer.view["policy_probs"], torch.tensor(pi, dtype=torch.float64))
    # smaller β: more reward, further from π_ref — the direction the closed form says
    assert after["expected_reward"] > before["expected_reward"] and after["kl"] > before["kl"]
    # the bars were redrawn with the new π*: heights (SVG points, 2 decimals) proportional to π*
    heights = [float(r["height"]) for r in marks(explorer.image.value, "rect")]
    assert len(heights) == len(pi)
    assert [h / sum(heights) for h in heights] == pytest.approx(pi, abs=2e-4)


def test_update_sets_slider_and_returns_view(world):
    explorer = beta_explorer(world, beta=1.0)
    view = explorer.update(20.0)
    assert explorer.slider.value == 20.0 and view is explorer.view
    _, reward, kl = closed_form(world, 20.0)
    assert view["kl"] == pytest.approx(kl, abs=1e-10)
    assert explorer.update(20.0)["kl"] == pytest.approx(kl, abs=1e-10)  # same value: redrawn, not skipped


def test_hooks_for_browser_tests(world):
    explorer = beta_explorer(world)
    assert explorer.slider.description == SLIDER_DESCRIPTION
    assert CSS_SLIDER in explorer.slider._dom_classes
    assert CSS_READOUT in explorer.readout._dom_classes
    assert CSS_ROOT in explorer.widget._dom_classes
    assert CSS_PLOT in explorer.image._dom_classes
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta_value(world, beta):
    with pytest.raises(ValueError, match="beta"):
        beta_view(world, beta)


@pytest.mark.parametrize("beta", ["0.5", None, True])
def test_bad_beta_type(world, beta):
    with pytest.raises(TypeError, match="beta"):
        beta_view(world, beta)


def test_update_outside_slider_range(world):
    explorer = beta_explorer(world, beta=1.0, beta_max=10.0)
    with pytest.raises(ValueError, match="outside the slider's range"):
        explorer.update(50.0)
    with pytest.raises(ValueError, match="beta"):
        explorer.update(-1.0)
    assert explorer.slider.value == 1.0  # a refused β leaves the widget as it was


def test_initial_beta_outside_range(world):
    with pytest.raises(ValueError, match="beta_min, beta_max"):
        beta_explorer(world, beta=500.0)


def test_bad_world_and_prompt(world):
    with pytest.raises(TypeError, match="BanditWorld"):
        beta_view(object(), 1.0)
    with pytest.raises(ValueError, match="prompt=3"):
        beta_view(world, 1.0, prompt=3)
    with pytest.raises(TypeError, match="prompt"):
        beta_view(world, 1.0, prompt=0.0)


def test_image_is_redrawn(world):
    explorer = beta_explorer(world, beta=1.0)
    before = bytes(explorer.image.value)
    assert explorer.image.format == "svg+xml" and before.startswith(b"<?xml")
    explorer.update(0.05)
    after = bytes(explorer.image.value)
    assert after.startswith(b"<?xml") and after != before


def test_the_slider_grid_holds_the_chapters_betas_exactly(world):
    explorer = beta_explorer(world, beta=0.5)
    values = [v for _, v in explorer.slider.options]
    for beta in (0.01, 0.05, 0.1, 0.25, 0.5, 0.7, 1.0, 2.0, 5.0, 10.0, 100.0):
        assert beta in values  # the float the literal gives, not 0.501
    assert explorer.slider.value == 0.5 and explorer.slider.label == "0.5"
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    assert 1.1 < min(ratios) and max(ratios) < 1.45  # about log-even: no step more than 45 %
    with pytest.raises(ValueError, match="nearest values are 0.3 and 0.4"):
        explorer.update(0.37)
    assert explorer.slider.value == 0.5  # a refused β leaves the widget as it was


def test_picture_and_static_figure_draw_the_same_bars_without_overlapping_labels(world):
    explorer = beta_explorer(world, beta=0.1)
    figure = plot_beta_view(explorer.view)
    policy_bars = figure.axes[0].patches[len(explorer.view["responses"]) :]
    assert [p.get_height() for p in policy_bars] == pytest.approx(explorer.view["policy_probs"].tolist())
    assert overlapping_texts(beta_frame(explorer.view)) == []
    assert overlapping_texts(figure) == []
    labels = [t.get_text() for t in figure.findobj(Text)]
    assert not any("_" in t and "$" not in t for t in labels), labels  # subscripts are mathtext, not "_"
