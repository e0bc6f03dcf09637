"""Chapter 09's checkers: the truth comes from minimising the package's losses, not from the checkers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises.ch09 import check_cdpo_margin, check_ipo_rejected_prob
from dpo_teach.losses import dpo_loss
from dpo_teach.tabular import tabular_dpo
from dpo_teach.worlds import BanditWorld


def _cdpo_minimiser(beta, eps):
    """argmin_h of dpo_loss(label_smoothing=ε) for one pair, by bisection on the autograd derivative."""

    def slope(h):
        h = torch.tensor([h], dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(1, dtype=torch.float64)
        (loss,), _, _ = dpo_loss(h, zero, zero, zero, beta=beta, label_smoothing=eps)
        (grad,) = torch.autograd.grad(loss, h)
        return grad.item()

    lo, hi = 0.0, 1.0
    while slope(hi) < 0:  # the loss falls until the minimiser
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize(("beta", "eps"), [(0.1, 0.1), (0.5, 0.25), (2.0, 0.01)])
def test_cdpo_margin_accepts_the_minimiser_of_the_loss(beta, eps):
    verdict = check_cdpo_margin(_cdpo_minimiser(beta, eps), beta=beta, label_smoothing=eps)
    assert verdict.ok and str(verdict).startswith("✓")


def test_cdpo_margin_diagnoses_common_mistakes():
    h = _cdpo_minimiser(0.1, 0.1)
    assert "divide by β" in check_cdpo_margin(0.1 * h).message
    assert "wrong sign" in check_cdpo_margin(-h).message
    assert "natural logarithm" in check_cdpo_margin(math.log10(9) / 0.1).message
    assert "multiplied by β" in check_cdpo_margin(0.01 * h).message
    assert not check_cdpo_margin(5.0).ok and "pushes h up" in check_cdpo_margin(5.0).message
    assert "pushes h back down" in check_cdpo_margin(50.0).message


def test_cdpo_margin_bad_input():
    with pytest.raises(TypeError, match="answer"):
        check_cdpo_margin("21.97")
    with pytest.raises(ValueError, match="finite"):
        check_cdpo_margin(float("inf"))
    with pytest.raises(ValueError, match="label_smoothing"):
        check_cdpo_margin(1.0, label_smoothing=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        check_cdpo_margin(1.0, label_smoothing=0.6)
    with pytest.raises(ValueError, match="beta"):
        check_cdpo_margin(1.0, beta=-1.0)


def _ipo_rejected(tau, ref_chosen_prob):
    """π_θ(y_l) after minimising IPO's population loss on the two-response bandit (deterministic labels)."""
    ref = torch.log(torch.tensor([ref_chosen_prob, 1 - ref_chosen_prob], dtype=torch.float64))
    world = BanditWorld(n_responses=2, rewards=torch.tensor([1.0, 0.0]), ref_logps=ref)
    run = tabular_dpo(world, tau, "ipo", steps=400, lr=0.3, deterministic=True, log_every=400)
    return run.policy_logps[0, 1].exp().item()


@pytest.mark.parametrize(("tau", "ref_chosen_prob"), [(0.25, 0.5), (1.0, 0.3), (0.1, 0.8)])
def test_ipo_rejected_prob_accepts_the_tabular_minimiser(tau, ref_chosen_prob):
    assert check_ipo_rejected_prob(
        _ipo_rejected(tau, ref_chosen_prob), tau=tau, ref_chosen_prob=ref_chosen_prob
    )


def test_ipo_rejected_prob_diagnoses_common_mistakes():
    truth = _ipo_rejected(0.25, 0.3)
    assert "DPO's limit" in check_ipo_rejected_prob(0.0, tau=0.25, ref_chosen_prob=0.3).message
    assert "π_θ(y_w)" in check_ipo_rejected_prob(1 - truth, tau=0.25, ref_chosen_prob=0.3).message
    wrong_margin = 1 / (1 + math.exp(math.log(0.3 / 0.7) + 4.0))  # used 1/τ
    assert "1/(2τ)" in check_ipo_rejected_prob(wrong_margin, tau=0.25, ref_chosen_prob=0.3).message
    no_ref = 1 / (1 + math.exp(2.0))  # forgot π_ref
    assert "logit π_ref" in check_ipo_rejected_prob(no_ref, tau=0.25, ref_chosen_prob=0.3).message
    assert not check_ipo_rejected_prob(0.5, tau=0.25, ref_chosen_prob=0.3).ok


def test_ipo_rejected_prob_bad_input():
    with pytest.raises(TypeError, match="answer"):
        check_ipo_rejected_prob(None)
    with pytest.raises(ValueError, match="probability"):
        check_ipo_rejected_prob(1.5)
    with pytest.raises(ValueError, match="ref_chosen_prob"):
        check_ipo_rejected_prob(0.1, ref_chosen_prob=1.0)
    with pytest.raises(ValueError, match="tau"):
        check_ipo_rejected_prob(0.1, tau=0.0)
