"""Exercise checkers of chapters 03 and 04: right answers pass, wrong ones get a helpful message, bad types raise."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch03 import check_canonical_reward, check_plackett_luce_prob
from dpo_teach.exercises.ch04 import check_dpo_logit_gradient, check_weight_margin
from dpo_teach.worlds import BanditWorld

BETA = 0.25


@pytest.fixture
def world():
    return BanditWorld(n_responses=5, n_prompts=3, seed=1)


def _canonical(world, beta):
    """r − β log Σ_y π_ref(y) e^{r(y)/β}, prompt by prompt, with Python floats."""
    rows = []
    for x in range(world.n_prompts):
        r, ref = world.rewards[x].tolist(), world.ref_logps[x].tolist()
        log_z = math.log(sum(math.exp(lp + ri / beta) for lp, ri in zip(ref, r, strict=True)))
        rows.append([ri - beta * log_z for ri in r])
    return torch.tensor(rows, dtype=torch.float64)


# ---- 3.1 the canonical reward -------------------------------------------------------------------------------


def test_canonical_reward_right_answer_passes(world):
    verdict = check_canonical_reward(_canonical(world, BETA), world.rewards, world.ref_logps, BETA)
    assert isinstance(verdict, Verdict) and verdict.ok
    assert str(verdict).startswith("✓")


def test_canonical_reward_float32_answer_passes(world):
    answer = _canonical(world, BETA).float()
    assert check_canonical_reward(answer, world.rewards, world.ref_logps, BETA).ok


def test_canonical_reward_the_reward_itself_fails_and_says_subtract(world):
    verdict = check_canonical_reward(world.rewards, world.rewards, world.ref_logps, BETA)
    assert not verdict and "reward itself" in verdict.message and "Subtract β log Z(x)" in verdict.message


def test_canonical_reward_sign_slip_is_named(world):
    canonical = _canonical(world, BETA)
    answer = world.rewards + (world.rewards - canonical)  # r + β log Z
    verdict = check_canonical_reward(answer, world.rewards, world.ref_logps, BETA)
    assert not verdict and "sign" in verdict.message


def test_canonical_reward_missing_beta_is_named(world):
    answer = _canonical(world, BETA) / BETA  # log π*/π_ref
    verdict = check_canonical_reward(answer, world.rewards, world.ref_logps, BETA)
    assert not verdict and "multiply by β" in verdict.message


def test_canonical_reward_right_class_wrong_constant_reports_the_sums(world):
    answer = _canonical(world, BETA) + torch.tensor([[0.1], [-0.2], [0.3]], dtype=torch.float64)
    verdict = check_canonical_reward(answer, world.rewards, world.ref_logps, BETA)
    assert not verdict and "right class" in verdict.message
    assert str(round(math.exp(0.1 / BETA), 3)) in verdict.message  # Σ π_ref e^{answer/β} = e^{f/β}


def test_canonical_reward_outside_the_class_fails(world):
    answer = _canonical(world, BETA).clone()
    answer[0, 0] += 1.0
    verdict = check_canonical_reward(answer, world.rewards, world.ref_logps, BETA)
    assert not verdict and "not even in the class" in verdict.message


def test_canonical_reward_list_answer_is_a_type_error(world):
    with pytest.raises(TypeError, match="answer"):
        check_canonical_reward(_canonical(world, BETA).tolist(), world.rewards, world.ref_logps, BETA)


def test_canonical_reward_wrong_shape_is_a_value_error(world):
    with pytest.raises(ValueError, match="shape"):
        check_canonical_reward(_canonical(world, BETA)[0], world.rewards, world.ref_logps, BETA)


# ---- 3.2 Plackett–Luce by hand ------------------------------------------------------------------------------

R3 = torch.tensor([1.0, -0.5, 2.0])
TAU = [2, 0, 1]


def _pl_by_hand():
    e = [math.exp(v) for v in R3.tolist()]
    return e[2] / (e[0] + e[1] + e[2]) * e[0] / (e[0] + e[1]) * e[1] / e[1]


def test_plackett_luce_right_answer_passes():
    assert check_plackett_luce_prob(_pl_by_hand(), R3, TAU).ok


def test_plackett_luce_is_invariant_to_a_shift():
    assert check_plackett_luce_prob(_pl_by_hand(), R3 + 10, TAU).ok


def test_plackett_luce_tensor_answer_passes():
    assert check_plackett_luce_prob(torch.tensor(_pl_by_hand()), R3, TAU).ok


def test_plackett_luce_log_answer_says_exponentiate():
    verdict = check_plackett_luce_prob(math.log(_pl_by_hand()), R3, TAU)
    assert not verdict and "exponentiate" in verdict.message


def test_plackett_luce_full_denominators_are_named():
    e = [math.exp(v) for v in R3.tolist()]
    answer = e[2] * e[0] * e[1] / sum(e) ** 3
    verdict = check_plackett_luce_prob(answer, R3, TAU)
    assert not verdict and "not yet placed" in verdict.message


def test_plackett_luce_reversed_ranking_is_named():
    e = [math.exp(v) for v in R3.tolist()]
    reversed_prob = e[1] / sum(e) * e[0] / (e[0] + e[2])
    verdict = check_plackett_luce_prob(reversed_prob, R3, TAU)
    assert not verdict and "reversed" in verdict.message


def test_plackett_luce_string_answer_is_a_type_error():
    with pytest.raises(TypeError, match="answer"):
        check_plackett_luce_prob("0.5", R3, TAU)


def test_plackett_luce_2d_rewards_is_a_value_error():
    with pytest.raises(ValueError, match="1-D"):
        check_plackett_luce_prob(0.5, R3[None], TAU)


# ---- 4.1 the margin where the weight is 0.1 -----------------------------------------------------------------


def test_weight_margin_right_answer_passes():
    h = math.log(9) / BETA  # σ(−βh) = 0.1 ⇔ e^{βh} = 9
    assert 1 / (1 + math.exp(BETA * h)) == pytest.approx(0.1)
    assert check_weight_margin(h, beta=BETA).ok


def test_weight_margin_other_weight_passes():
    h = math.log(3) / 2.0  # σ(−2h) = 1/4
    assert check_weight_margin(h, beta=2.0, weight=0.25).ok


def test_weight_margin_reward_margin_is_named():
    verdict = check_weight_margin(math.log(9), beta=BETA)
    assert not verdict and "divide by β" in verdict.message


def test_weight_margin_sign_is_named():
    verdict = check_weight_margin(-math.log(9) / BETA, beta=BETA)
    assert not verdict and "sign" in verdict.message


def test_weight_margin_other_wrong_answer_reports_its_weight():
    verdict = check_weight_margin(1.0, beta=BETA)
    assert not verdict and f"{1 / (1 + math.exp(BETA)):.4g}" in verdict.message


def test_weight_margin_string_is_a_type_error():
    with pytest.raises(TypeError, match="answer"):
        check_weight_margin("8.79", beta=BETA)


def test_weight_margin_weight_of_one_is_a_value_error():
    with pytest.raises(ValueError, match="weight"):
        check_weight_margin(1.0, beta=BETA, weight=1.0)


# ---- 4.2 the gradient for a softmax policy ------------------------------------------------------------------

THETA = torch.tensor([0.5, -1.0, 2.0, 0.0])
REF = torch.log_softmax(torch.zeros(4), -1)


def _closed_form(theta, ref, w, l, beta):
    logp = torch.log_softmax(theta.double(), -1)
    margin = beta * ((logp[w] - ref[w]) - (logp[l] - ref[l]))
    weight = 1 / (1 + math.exp(margin.item()))  # σ(r̂_l − r̂_w)
    grad = torch.zeros(len(theta), dtype=torch.float64)
    grad[w], grad[l] = -beta * weight, beta * weight
    return grad, weight


def test_logit_gradient_right_answer_passes():
    grad, _ = _closed_form(THETA, REF, 0, 2, 0.5)
    verdict = check_dpo_logit_gradient(grad, THETA, REF, 0, 2, 0.5)
    assert verdict.ok, verdict.message


def test_logit_gradient_sign_is_named():
    grad, _ = _closed_form(THETA, REF, 0, 2, 0.5)
    verdict = check_dpo_logit_gradient(-grad, THETA, REF, 0, 2, 0.5)
    assert not verdict and "sign" in verdict.message


def test_logit_gradient_missing_weight_is_named():
    grad, weight = _closed_form(THETA, REF, 0, 2, 0.5)
    verdict = check_dpo_logit_gradient(grad / weight, THETA, REF, 0, 2, 0.5)
    assert not verdict and "weight" in verdict.message


def test_logit_gradient_missing_beta_is_named():
    grad, _ = _closed_form(THETA, REF, 0, 2, 0.5)
    verdict = check_dpo_logit_gradient(grad / 0.5, THETA, REF, 0, 2, 0.5)
    assert not verdict and "β is missing" in verdict.message


def test_logit_gradient_that_does_not_sum_to_zero_gets_the_softmax_hint():
    grad, _ = _closed_form(THETA, REF, 0, 2, 0.5)
    pi = torch.softmax(THETA.double(), -1)
    wrong = grad.clone()
    wrong[0] -= 0.5 * pi[0]  # forgot that the −π_θ terms of y_w and y_l cancel: kept one of them
    verdict = check_dpo_logit_gradient(wrong, THETA, REF, 0, 2, 0.5)
    assert not verdict and "sums to 0" in verdict.message


def test_logit_gradient_list_is_a_type_error():
    with pytest.raises(TypeError, match="answer"):
        check_dpo_logit_gradient([0.0, 0.0, 0.0, 0.0], THETA, REF, 0, 2, 0.5)


def test_logit_gradient_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match="one entry per response"):
        check_dpo_logit_gradient(torch.zeros(3), THETA, REF, 0, 2, 0.5)


def test_logit_gradient_bad_index_is_a_value_error():
    with pytest.raises(ValueError, match="rejected=7"):
        check_dpo_logit_gradient(torch.zeros(4), THETA, REF, 0, 7, 0.5)
