"""Exercise checkers of chapter 11: right answers pass, typical slips get a named message, bad input raises."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch11 import check_initial_loss, check_reference_drift

BETA = 0.3


@pytest.fixture
def tables():
    g = torch.Generator().manual_seed(0)
    policy = torch.log_softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1)
    return policy, ref


def _mean_under(weights_logps, policy, ref, beta):
    """Σ_y w(y) β (log π_θ(y) − log π_ref(y)) per prompt, with Python floats."""
    out = []
    for x in range(policy.shape[0]):
        w, p, r = weights_logps[x].tolist(), policy[x].tolist(), ref[x].tolist()
        out.append(sum(math.exp(wi) * beta * (pi - ri) for wi, pi, ri in zip(w, p, r, strict=True)))
    return torch.tensor(out, dtype=torch.float64)


# ---- 11.1 reference drift ---------------------------------------------------------------------------------------


def test_reference_drift_right_answer_passes(tables):
    policy, ref = tables
    answer = _mean_under(ref, policy, ref, BETA)  # the definition, computed independently
    verdict = check_reference_drift(answer, policy, ref, BETA)
    assert isinstance(verdict, Verdict) and verdict.ok and str(verdict).startswith("✓")
    assert bool((answer <= 0).all())


def test_reference_drift_single_prompt_accepts_a_number(tables):
    policy, ref = tables
    answer = _mean_under(ref[:1], policy[:1], ref[:1], BETA).item()
    assert check_reference_drift(answer, policy[:1], ref[:1], BETA).ok


def test_reference_drift_sign_slip(tables):
    policy, ref = tables
    verdict = check_reference_drift(-_mean_under(ref, policy, ref, BETA), policy, ref, BETA)
    assert not verdict and "sign" in verdict.message


def test_reference_drift_missing_beta(tables):
    policy, ref = tables
    verdict = check_reference_drift(_mean_under(ref, policy, ref, 1.0), policy, ref, BETA)
    assert not verdict and "β is missing" in verdict.message


def test_reference_drift_mean_under_the_policy(tables):
    policy, ref = tables
    verdict = check_reference_drift(_mean_under(policy, policy, ref, BETA), policy, ref, BETA)
    assert not verdict and "mean under π_θ" in verdict.message


def test_reference_drift_kl_the_wrong_way_round(tables):
    policy, ref = tables
    verdict = check_reference_drift(-_mean_under(policy, policy, ref, BETA), policy, ref, BETA)
    assert not verdict and "wrong way round" in verdict.message


def test_reference_drift_other_wrong_answer(tables):
    policy, ref = tables
    verdict = check_reference_drift(torch.full((3,), -0.1, dtype=torch.float64), policy, ref, BETA)
    assert not verdict and "KL(π_ref ‖ π_θ)" in verdict.message


def test_reference_drift_wrong_shape_raises(tables):
    policy, ref = tables
    with pytest.raises(ValueError, match="one value per prompt"):
        check_reference_drift(torch.zeros(4), policy, ref, BETA)


def test_reference_drift_list_answer_raises(tables):
    policy, ref = tables
    with pytest.raises(TypeError, match="answer"):
        check_reference_drift([0.0, 0.0, 0.0], policy, ref, BETA)


def test_reference_drift_unnormalised_policy_raises(tables):
    _, ref = tables
    with pytest.raises(ValueError, match="policy_logps"):
        check_reference_drift(torch.zeros(3), torch.zeros(3, 6), ref, BETA)


# ---- 11.2 the first logged loss -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_type", "beta", "kwargs", "closed_form"),
    [
        ("sigmoid", 0.1, {}, math.log(2)),
        ("sigmoid", 0.1, {"label_smoothing": 0.2}, math.log(2)),  # −(1−ε) ln σ(0) − ε ln σ(0)
        ("robust", 0.5, {"label_smoothing": 0.1}, math.log(2)),  # ((1−ε) − ε) ln 2 / (1 − 2ε)
        ("hinge", 0.1, {}, 1.0),  # max(0, 1 − 0)
        ("ipo", 0.1, {}, 1 / (4 * 0.1**2)),  # (0 − 1/(2τ))²
        ("kto", 0.1, {}, 0.5),  # 1 − σ(0)
    ],
)
def test_initial_loss_closed_forms_pass(loss_type, beta, kwargs, closed_form):
    verdict = check_initial_loss(closed_form, loss_type, beta, **kwargs)
    assert verdict.ok, verdict.message


def test_initial_loss_tensor_answer_passes():
    assert check_initial_loss(torch.tensor(math.log(2)), "sigmoid", 0.1).ok


def test_initial_loss_zero_is_named():
    verdict = check_initial_loss(0.0, "sigmoid", 0.1)
    assert not verdict and "not" in verdict.message and "h = 0" in verdict.message


def test_initial_loss_ipo_target_margin_is_named():
    verdict = check_initial_loss(1 / (2 * 0.1), "ipo", 0.1)
    assert not verdict and "squared" in verdict.message


def test_initial_loss_dpo_value_for_another_loss_is_named():
    verdict = check_initial_loss(math.log(2), "hinge", 0.1)
    assert not verdict and "DPO's first loss" in verdict.message


def test_initial_loss_log_base_two_is_named():
    verdict = check_initial_loss(1.0, "sigmoid", 0.1)
    assert not verdict and "base 2" in verdict.message


def test_initial_loss_reference_free_loss_raises():
    with pytest.raises(ValueError, match="no reference model"):
        check_initial_loss(0.7, "simpo", 2.0)


def test_initial_loss_unknown_loss_raises():
    with pytest.raises(ValueError, match="unknown loss"):
        check_initial_loss(0.7, "dpo++", 0.1)


def test_initial_loss_string_answer_raises():
    with pytest.raises(TypeError, match="answer"):
        check_initial_loss("ln 2", "sigmoid", 0.1)
