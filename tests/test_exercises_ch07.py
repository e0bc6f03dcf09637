"""Exercise checkers of chapter 07: right answers pass, wrong ones get a helpful message, bad input raises."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch07 import check_beta_for_mean_kl, check_frontier_slope, max_mean_kl
from dpo_teach.worlds import SequenceWorld


@pytest.fixture(scope="module")
def tables():
    world = SequenceWorld(n_prompts=4, length=2, alphabet_size=6, seed=3)
    return world.demonstrator_logps, world.reward_table


def mean_kl(ref_logps, rewards, beta):
    """mean_x KL(π*_β‖π_ref), π* ∝ π_ref e^{r/β} normalised by an explicit sum."""
    ref = ref_logps.double().exp()
    weights = ref * torch.exp((rewards.double() - rewards.double().max(-1, keepdim=True).values) / beta)
    policy = weights / weights.sum(-1, keepdim=True)
    return float((policy * (policy / ref).log()).sum(-1).mean())


def beta_at(ref_logps, rewards, target):
    """Bisection on log β for mean KL = target (KL falls as β grows)."""
    low, high = math.log(1e-3), math.log(1e3)
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if mean_kl(ref_logps, rewards, math.exp(mid)) > target else (low, mid)
    return math.exp((low + high) / 2)


# ---- 7.1 the β for a given KL ---------------------------------------------------------------------------


def test_beta_for_kl_right_answer_passes(tables):
    beta = beta_at(*tables, 0.5)
    verdict = check_beta_for_mean_kl(beta, *tables, 0.5)
    assert isinstance(verdict, Verdict) and verdict.ok and str(verdict).startswith("✓")
    assert check_beta_for_mean_kl(torch.tensor(beta), *tables, 0.5).ok  # a 0-d tensor is a number too


def test_beta_for_kl_wrong_answers_say_which_way(tables):
    beta = beta_at(*tables, 0.5)
    too_small = check_beta_for_mean_kl(beta / 2, *tables, 0.5)
    too_large = check_beta_for_mean_kl(beta * 2, *tables, 0.5)
    assert not too_small and "increase β" in too_small.message
    assert not too_large and "decrease β" in too_large.message
    assert not check_beta_for_mean_kl(-1.0, *tables, 0.5) and not check_beta_for_mean_kl(0.0, *tables, 0.5)


def test_beta_for_kl_unreachable_target(tables):
    limit = max_mean_kl(*tables)
    best = tables[1] == tables[1].max(-1, keepdim=True).values
    assert limit == pytest.approx(float(-(tables[0].exp() * best).sum(-1).log().mean()), rel=1e-5)
    with pytest.raises(ValueError, match="not reachable"):
        check_beta_for_mean_kl(0.1, *tables, limit + 0.01)


@pytest.mark.parametrize("answer", ["0.3", None, [0.3]])
def test_beta_for_kl_bad_answer_type(tables, answer):
    with pytest.raises(TypeError, match="answer"):
        check_beta_for_mean_kl(answer, *tables, 0.5)


def test_beta_for_kl_bad_target(tables):
    with pytest.raises(ValueError, match="target_kl"):
        check_beta_for_mean_kl(0.3, *tables, -0.5)


# ---- 7.2 the slope of the curve -------------------------------------------------------------------------


def finite_difference_slope(ref_logps, rewards, beta):
    """dE/dKL along the curve by a central difference in β, with the explicit-sum closed form."""

    def point(b):
        ref = ref_logps.double().exp()
        weights = ref * torch.exp((rewards.double() - rewards.double().max(-1, keepdim=True).values) / b)
        policy = weights / weights.sum(-1, keepdim=True)
        kl = float((policy * (policy / ref).log()).sum(-1).mean())
        return kl, float((policy * rewards.double()).sum(-1).mean())

    (k1, e1), (k2, e2) = point(beta * 1.001), point(beta * 0.999)
    return (e2 - e1) / (k2 - k1)


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_slope_right_answer_passes(tables, beta):
    slope = finite_difference_slope(*tables, beta)
    assert slope == pytest.approx(beta, rel=1e-3)  # the tangent's slope is β
    assert check_frontier_slope(slope, *tables, beta).ok


def test_slope_reciprocal_and_chord_are_named(tables):
    slope = finite_difference_slope(*tables, 0.3)
    reciprocal = check_frontier_slope(1 / slope, *tables, 0.3)
    assert not reciprocal and "reciprocal" in reciprocal.message
    ref_reward = float((tables[0].exp() * tables[1]).sum(-1).mean())
    ref = tables[0].double().exp()
    weights = ref * torch.exp(tables[1].double() / 0.3)
    policy = weights / weights.sum(-1, keepdim=True)
    kl = float((policy * (policy / ref).log()).sum(-1).mean())
    chord = (float((policy * tables[1]).sum(-1).mean()) - ref_reward) / kl
    verdict = check_frontier_slope(chord, *tables, 0.3)
    assert not verdict and "chord" in verdict.message
    other = check_frontier_slope(5.0, *tables, 0.3)
    assert not other and "is off" in other.message


def test_slope_bad_input(tables):
    with pytest.raises(TypeError, match="answer"):
        check_frontier_slope("0.3", *tables, 0.3)
    with pytest.raises(ValueError, match="beta"):
        check_frontier_slope(0.3, *tables, 0.0)
