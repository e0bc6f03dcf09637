"""Chapter 07's β widget and the reward–KL frontier: every number against an independent closed form.

The independent closed form below normalises π_ref·exp(r/β) by an explicit sum (no logsumexp, no
:mod:`dpo_teach.theory`), so a slip in :mod:`dpo_teach.frontier` or in the widget's wiring shows up here.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from dpo_teach.frontier import frontier_gap, optimal_point, policy_point, reward_kl_curve
from dpo_teach.widgets.beta_train import (
    BUTTON_DESCRIPTION,
    CSS_BUTTON,
    CSS_PLOT,
    CSS_PROGRESS,
    CSS_READOUT,
    CSS_RESULT,
    CSS_ROOT,
    CSS_SLIDER,
    DPO_RECIPE,
    N_PAIRS,
    SLIDER_DESCRIPTION,
    STAR_ID,
    beta_trainer,
    n_steps,
    train_at_beta,
)
from dpo_teach.worlds import SequenceWorld


def closed_form(
    ref_logps: torch.Tensor, rewards: torch.Tensor, beta: float
) -> tuple[torch.Tensor, float, float]:
    """π*_β [P, N], mean KL(π*‖π_ref) and mean E_π*[r], with an explicit normalising sum per prompt."""
    ref = ref_logps.double().exp()
    r = rewards.double()
    weights = ref * torch.exp((r - r.max(-1, keepdim=True).values) / beta)
    policy = weights / weights.sum(-1, keepdim=True)
    mask = policy > 0
    kl = torch.zeros(policy.shape[0], dtype=torch.float64)
    for x in range(policy.shape[0]):
        p, q = policy[x][mask[x]], ref[x][mask[x]]
        kl[x] = (p * (p / q).log()).sum()
    return policy, float(kl.mean()), float((policy * r).sum(-1).mean())


def readout_numbers(html: str) -> dict[str, float]:
    """The numbers of a readout, read back from its ``data-quantity`` spans (as a browser test would)."""
    return {k: float(v) for k, v in re.findall(r'data-quantity="(\w+)">([-0-9.]+)<', html)}


def star(svg: bytes) -> dict[str, float]:
    """The ``data-*`` attributes of the π*_β star in the widget's SVG."""
    match = re.search(rf'<g id="{STAR_ID}" ([^>]*)>', bytes(svg).decode())
    assert match is not None, "no star in the widget's SVG"
    return {k: float(v) for k, v in re.findall(r'data-([\w-]+)="([-0-9.e+]+)"', match.group(1))}


@pytest.fixture(scope="module")
def world() -> SequenceWorld:
    return SequenceWorld()


@pytest.fixture(scope="module")
def tables(world) -> tuple[torch.Tensor, torch.Tensor]:
    """A π_ref table without training a model: the world's demonstrator (what π_ref is fitted to)."""
    return world.demonstrator_logps, world.reward_table


@pytest.fixture
def trainer(world, tables):
    return beta_trainer(world, None, ref_logps=tables[0], beta=0.5)


# ---- the closed form ------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0, 10.0])
def test_optimal_point_matches_closed_form(tables, beta):
    point = optimal_point(*tables, beta)
    policy, kl, reward = closed_form(*tables, beta)
    torch.testing.assert_close(point["log_policy"].exp(), policy, atol=1e-12, rtol=0)
    assert point["kl"] == pytest.approx(kl, abs=1e-10)
    assert point["expected_reward"] == pytest.approx(reward, abs=1e-10)
    # at the optimum the RLHF objective E[r] − β KL equals β log Z (the Gibbs rewrite)
    assert point["objective"] == pytest.approx(reward - beta * kl, abs=1e-9)


def test_curve_is_the_points_and_moves_the_right_way(tables):
    betas = torch.tensor([20.0, 5.0, 1.0, 0.5, 0.2, 0.05], dtype=torch.float64)
    curve = reward_kl_curve(*tables, betas)
    for i, beta in enumerate(betas.tolist()):
        _, kl, reward = closed_form(*tables, beta)
        assert curve["kl"][i] == pytest.approx(kl, abs=1e-10)
        assert curve["expected_reward"][i] == pytest.approx(reward, abs=1e-10)
    # smaller β: further from π_ref and more reward, strictly
    assert bool((curve["kl"].diff() > 0).all()) and bool((curve["expected_reward"].diff() > 0).all())
    # the slope of the curve between two nearby β is β (the tangent of E − β·KL = β log Z)
    near = reward_kl_curve(*tables, torch.tensor([0.999, 1.001], dtype=torch.float64))
    slope = float(near["expected_reward"].diff() / near["kl"].diff())
    assert slope == pytest.approx(1.0, rel=1e-3)


def test_policy_point(tables):
    ref_logps, rewards = tables
    at_ref = policy_point(ref_logps, ref_logps, rewards)
    assert at_ref["kl"] == pytest.approx(0.0, abs=1e-6)
    assert at_ref["expected_reward"] == pytest.approx(
        float((ref_logps.exp() * rewards).sum(-1).mean()), abs=1e-6
    )
    policy, kl, reward = closed_form(ref_logps, rewards, 0.7)
    assert policy_point(policy.log().float(), ref_logps, rewards)["kl"] == pytest.approx(kl, abs=1e-5)


def test_no_policy_lies_above_the_frontier(tables):
    ref_logps, rewards = tables
    curve = reward_kl_curve(ref_logps, rewards)
    generator = torch.Generator().manual_seed(0)
    for scale in (0.5, 2.0, 8.0):
        logits = ref_logps.double() + scale * torch.randn(
            ref_logps.shape, generator=generator, dtype=torch.float64
        )
        point = policy_point(torch.log_softmax(logits, -1), ref_logps, rewards)
        assert frontier_gap(point["kl"], point["expected_reward"], curve) > 0
    on_curve = optimal_point(ref_logps, rewards, 1.0)  # β = 1 is on the default grid
    assert frontier_gap(on_curve["kl"], on_curve["expected_reward"], curve) == pytest.approx(0, abs=1e-9)
    assert frontier_gap(on_curve["kl"], on_curve["expected_reward"] + 0.1, curve) < -0.09
    with pytest.raises(TypeError, match="reward_kl_curve"):
        frontier_gap(0.1, 0.1, {"kl": curve["kl"]})


# ---- the widget: slider and readout ---------------------------------------------------------------------


def test_slider_moves_the_point(trainer, tables):
    before = readout_numbers(trainer.readout.value)
    _, kl, reward = closed_form(*tables, 0.5)
    assert before == {"beta": 0.5, "expected_reward": round(reward, 3), "kl": round(kl, 3)}
    first = star(trainer.image.value)

    trainer.slider.value = 0.1  # what dragging the slider does
    _, kl, reward = closed_form(*tables, 0.1)
    after = readout_numbers(trainer.readout.value)
    assert after == {"beta": 0.1, "expected_reward": round(reward, 3), "kl": round(kl, 3)}
    moved = star(trainer.image.value)
    assert moved["beta"] == pytest.approx(0.1) and moved["kl"] == pytest.approx(kl, rel=1e-5)
    assert moved["expected-reward"] == pytest.approx(reward, rel=1e-5)
    # on the picture: further right (more KL) and higher up (more reward; SVG y grows downwards)
    assert moved["x"] > first["x"] and moved["y"] < first["y"]


def test_star_is_drawn_where_the_axes_put_the_point(trainer):
    point = trainer.update(2.0)
    shown = star(trainer.image.value)
    ax, fig = trainer.canvas.figure.axes[0], trainer.canvas.figure
    x_pixels, y_pixels = shown["x"] * fig.dpi / 72, fig.bbox.height - shown["y"] * fig.dpi / 72
    kl, reward = ax.transData.inverted().transform((x_pixels, y_pixels))
    assert kl == pytest.approx(point["kl"], abs=0.01) and reward == pytest.approx(
        point["expected_reward"], abs=0.01
    )


def test_update_sets_slider_and_returns_the_point(trainer, tables):
    point = trainer.update(3.0)
    assert trainer.slider.value == 3.0 and point is trainer.point
    _, kl, _ = closed_form(*tables, 3.0)
    assert point["kl"] == pytest.approx(kl, abs=1e-10)
    assert trainer.update(3.0)["kl"] == pytest.approx(kl, abs=1e-10)  # same value: redrawn, not skipped


def test_hooks_for_browser_tests(trainer):
    assert trainer.slider.description == SLIDER_DESCRIPTION
    assert trainer.button.description == BUTTON_DESCRIPTION
    for widget, css in (
        (trainer.slider, CSS_SLIDER),
        (trainer.readout, CSS_READOUT),
        (trainer.button, CSS_BUTTON),
        (trainer.progress, CSS_PROGRESS),
        (trainer.result, CSS_RESULT),
        (trainer.image, CSS_PLOT),
        (trainer.widget, CSS_ROOT),
    ):
        assert css in widget._dom_classes
    assert trainer.image.format == "svg+xml" and bytes(trainer.image.value).startswith(b"<?xml")
    assert "application/vnd.jupyter.widget-view+json" in trainer._repr_mimebundle_()


def test_progress_bar_length_is_the_number_of_steps(trainer):
    pairs, options = len(trainer.pairs), DPO_RECIPE
    assert trainer.progress.max == options["epochs"] * -(-pairs // options["batch_size"])
    assert n_steps(100, batch_size=32, epochs=2, grad_accum=2) == 4  # 2 × ⌈100/32⌉ = 8 micro-batches


# ---- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta_value(tables, beta):
    with pytest.raises(ValueError, match="beta"):
        optimal_point(*tables, beta)


@pytest.mark.parametrize("beta", ["0.5", None, True])
def test_bad_beta_type(tables, beta):
    with pytest.raises(TypeError, match="beta"):
        optimal_point(*tables, beta)


def test_bad_tables(tables):
    ref_logps, rewards = tables
    with pytest.raises(TypeError, match="ref_logps must be a 2-D float tensor"):
        optimal_point(ref_logps[0], rewards, 1.0)
    with pytest.raises(TypeError, match="rewards must be a 2-D float tensor"):
        optimal_point(ref_logps, rewards.tolist(), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        optimal_point(ref_logps, rewards[:, :10], 1.0)
    with pytest.raises(ValueError, match="normalised|sum"):
        optimal_point(ref_logps + 1.0, rewards, 1.0)
    with pytest.raises(ValueError, match="betas must be"):
        reward_kl_curve(ref_logps, rewards, torch.tensor([]))


def test_update_outside_slider_range(trainer):
    with pytest.raises(ValueError, match="outside the slider's range"):
        trainer.update(100.0)
    assert trainer.slider.value == 0.5  # a refused β leaves the widget as it was


def test_bad_builder_arguments(world, tables):
    with pytest.raises(ValueError, match="beta_min, beta_max"):
        beta_trainer(world, None, ref_logps=tables[0], beta=50.0)
    with pytest.raises(TypeError, match="enumerable world"):
        beta_trainer(object(), None, ref_logps=tables[0])
    with pytest.raises(TypeError, match="enumerable world"):
        train_at_beta(object(), None, 0.5)


# ---- training (slow) --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(world):
    from dpo_teach.cache import reference_model

    ref, _ = reference_model(world, device="cpu", progress=False)
    return ref, world.logprobs(ref)


#: the stated bound: DPO at β = 1 (:data:`DPO_RECIPE`, 8000 pairs) lands within this KL of π*_β (measured ≈ 0.10;
#: π_ref itself is 0.44 nats from it)
KL_BOUND_AT_BETA_1 = 0.2


@pytest.mark.slow
def test_train_button_lands_near_the_optimum(world, reference):
    """Pressing *Train* at β = 1 runs :func:`train_at_beta`; the landing is within the stated KL of π*_β."""
    ref, ref_logps = reference
    trainer = beta_trainer(world, ref, ref_logps=ref_logps, beta=1.0)
    assert "DPO (trained here)" not in trainer.canvas.canvas.frame
    trainer.button.click()  # what pressing the button does
    assert len(trainer.trained) == 1 and not trainer.button.disabled
    landed = trainer.trained[0]
    assert landed.steps == n_steps(N_PAIRS) and trainer.progress.value == trainer.progress.max == landed.steps

    exact = world.evaluate(landed.policy_logps, ref_logps, 1.0)
    start = optimal_point(ref_logps, world.reward_table, 1.0)
    assert landed.kl_to_optimal == pytest.approx(exact["kl_to_optimal"], abs=1e-6)
    assert (landed.optimal_kl, landed.optimal_expected_reward) == pytest.approx(
        (start["kl"], start["expected_reward"])
    )
    kl_ref_to_optimal = world.evaluate(ref_logps, ref_logps, 1.0)["kl_to_optimal"]
    assert landed.kl_to_optimal < KL_BOUND_AT_BETA_1
    assert landed.kl_to_optimal < 0.5 * kl_ref_to_optimal  # DPO moved π_θ most of the way towards π*_β
    assert landed.expected_reward > policy_point(ref_logps, ref_logps, world.reward_table)["expected_reward"]

    shown = readout_numbers(trainer.result.value)
    assert shown == {
        "train_beta": 1.0,
        "train_kl": round(landed.kl, 3),
        "train_expected_reward": round(landed.expected_reward, 3),
        "kl_to_optimal": round(landed.kl_to_optimal, 3),
    }
    assert "DPO (trained here)" in trainer.canvas.canvas.frame  # the legend of the redrawn picture
    assert star(trainer.image.value)["beta"] == pytest.approx(1.0)


# ---- the frontier plot (dpo_teach.plotting) ----------------------------------------------------------------


def test_frontier_plot_draws_the_curve_and_the_series(tables):
    from matplotlib.figure import Figure

    from dpo_teach.plotting import plot_reward_kl_frontier

    curve = reward_kl_curve(*tables, torch.tensor([5.0, 1.0, 0.2], dtype=torch.float64))
    ax = Figure().subplots()
    series = {
        "DPO": {"kl": [0.1, 0.3], "expected_reward": [0.2, 0.5], "beta": [2.0, 1.0],
                "target_kl": [0.12, 0.4], "target_reward": [0.3, 0.8]},
        "best-of-N": {"kl": [0.2], "expected_reward": [0.3], "n": [4], "line": False},
    }  # fmt: skip
    plot_reward_kl_frontier(curve, series, ax=ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines[r"$\pi^*_\beta$ (exact optimum)"].get_xdata()) == pytest.approx(
        sorted(curve["kl"].tolist())
    )
    assert list(lines["DPO"].get_ydata()) == [0.2, 0.5] and lines["DPO"].get_linestyle() == "-"
    assert lines["best-of-N"].get_linestyle() == "None"
    assert sorted(t.get_text() for t in ax.texts) == ["N=4", "β=1", "β=2"]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [list(line.get_xdata()) for line in dotted] == [[0.1, 0.12], [0.3, 0.4]]
    assert "KL" in ax.get_xlabel() and "reward" in ax.get_ylabel() and ax.get_title()


def test_crowded_landings_get_labels_that_do_not_overlap(tables):
    """Four *Train* presses at nearby β (two at the same β) put four "β=…" labels near one place: the picture
    after *Train* must still have no label over another, nor over the legend, nor any literal underscore."""
    from matplotlib.text import Text

    from dpo_teach.widgets.beta_train import FrontierCanvas
    from dpo_teach.widgets.canvas import overlapping_texts

    curve = reward_kl_curve(*tables, torch.logspace(-1.3, 1.3, 41, dtype=torch.float64))
    points = [
        SimpleNamespace(beta=b, kl=0.50 + 0.004 * i, expected_reward=0.80 + 0.003 * i, optimal_kl=0.6,
                        optimal_expected_reward=0.9)
        for i, b in enumerate((0.5, 0.5, 0.6, 0.7))
    ]  # fmt: skip
    canvas = FrontierCanvas.draw(curve, points)
    labels = [t for t in canvas.figure.axes[0].texts if t.get_text().startswith("β=")]
    assert len(labels) == 4
    assert overlapping_texts(canvas.figure) == []
    texts = [t.get_text() for t in canvas.figure.findobj(Text)]
    assert not any("_" in t and "$" not in t for t in texts), texts


def test_frontier_plot_rejects_mismatched_series(tables):
    from matplotlib.figure import Figure

    from dpo_teach.plotting import plot_reward_kl_frontier

    curve = reward_kl_curve(*tables, torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="series 'DPO'"):
        plot_reward_kl_frontier(
            curve, {"DPO": {"kl": [0.1, 0.2], "expected_reward": [0.3]}}, ax=Figure().subplots()
        )
