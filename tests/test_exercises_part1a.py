"""Exercise checkers of chapters 01 and 02: a right answer passes, a wrong one fails with a helpful message,
a wrong type is a TypeError. Right answers are computed here with plain Python arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch01 import check_objective_value, check_same_preferences
from dpo_teach.exercises.ch02 import KL_TOLERANCE, check_beta_for_kl, check_log_partition
from dpo_teach.worlds import BanditWorld

WORLD = BanditWorld(n_responses=6, seed=0)
REF, R = WORLD.ref_logps[0], WORLD.rewards[0]
UNIFORM = torch.full((6,), -math.log(6.0), dtype=torch.float64)


def objective_by_hand(policy_logps, ref_logps, rewards, beta) -> float:
    pi = [math.exp(v) for v in policy_logps.tolist()]
    ref = [math.exp(v) for v in ref_logps.tolist()]
    reward = sum(p * r for p, r in zip(pi, rewards.tolist(), strict=True))
    kl = sum(p * math.log(p / q) for p, q in zip(pi, ref, strict=True))
    return reward - beta * kl


def log_z_by_hand(ref_logps, rewards, beta) -> float:
    return math.log(
        sum(math.exp(lp + r / beta) for lp, r in zip(ref_logps.tolist(), rewards.tolist(), strict=True))
    )


def kl_of_optimum(beta) -> float:
    ref = [math.exp(v) for v in REF.tolist()]
    w = [p * math.exp(r / beta) for p, r in zip(ref, R.tolist(), strict=True)]
    pi = [x / sum(w) for x in w]
    return sum(p * math.log(p / q) for p, q in zip(pi, ref, strict=True))


# --- 1.1 same preferences -------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [2.5, -0.7])
def test_same_preferences_shift_passes(shift):
    verdict = check_same_preferences(R + shift, R)
    assert isinstance(verdict, Verdict) and verdict.ok and "shifted" in verdict.message


def test_same_preferences_per_prompt_shift_passes():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=1)
    answer = world.rewards + torch.tensor([[1.0], [-3.0]], dtype=torch.float64)
    assert check_same_preferences(answer, world.rewards)


def test_same_preferences_reward_itself_fails():
    verdict = check_same_preferences(R.clone(), R)
    assert not verdict and "r itself" in verdict.message


def test_same_preferences_scaled_fails_with_hint():
    verdict = check_same_preferences(2 * R, R)
    assert not verdict and "scaling" in verdict.message and "≻" in verdict.message


def test_same_preferences_perturbed_fails_naming_the_pair():
    answer = R.clone()
    answer[2] += 1.0
    verdict = check_same_preferences(answer, R)
    assert not verdict and "y_2" in verdict.message and "scaling" not in verdict.message


def test_same_preferences_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_same_preferences(R.tolist(), R)
    with pytest.raises(ValueError, match="shape"):
        check_same_preferences(R[:3], R)


# --- 1.2 objective value ---------------------------------------------------------------------------------


def test_objective_right_answer_passes():
    truth = objective_by_hand(UNIFORM, REF, R, 0.5)
    assert check_objective_value(truth, UNIFORM, REF, R, 0.5)
    assert check_objective_value(torch.tensor(truth), UNIFORM, REF, R, 0.5)  # a 0-d tensor is a number too


@pytest.mark.parametrize(
    "slip, phrase",
    [("reward", "E_π[r] alone"), ("plus", "sign slip"), ("no_beta", "factor β"), ("reverse", "KL(π_ref‖π)")],
)
def test_objective_slips_are_named(slip, phrase):
    pi = [math.exp(v) for v in UNIFORM.tolist()]
    ref = [math.exp(v) for v in REF.tolist()]
    reward = sum(p * r for p, r in zip(pi, R.tolist(), strict=True))
    kl = sum(p * math.log(p / q) for p, q in zip(pi, ref, strict=True))
    reverse = sum(q * math.log(q / p) for p, q in zip(pi, ref, strict=True))
    answer = {
        "reward": reward,
        "plus": reward + 0.5 * kl,
        "no_beta": reward - kl,
        "reverse": reward - 0.5 * reverse,
    }
    verdict = check_objective_value(answer[slip], UNIFORM, REF, R, 0.5)
    assert not verdict and phrase in verdict.message


def test_objective_wrong_number_fails():
    verdict = check_objective_value(123.0, UNIFORM, REF, R, 0.5)
    assert not verdict and "is off" in verdict.message


def test_objective_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_objective_value("0.1", UNIFORM, REF, R, 0.5)
    with pytest.raises(ValueError, match="policy_logps"):
        check_objective_value(0.1, UNIFORM.exp(), REF, R, 0.5)  # probabilities, not log-probs
    with pytest.raises(ValueError, match="beta"):
        check_objective_value(0.1, UNIFORM, REF, R, 0.0)


# --- 2.1 log Z ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.25, 2.0])
def test_log_partition_right_answer_passes(beta):
    assert check_log_partition(log_z_by_hand(REF, R, beta), REF, R, beta)


@pytest.mark.parametrize(
    "slip, phrase",
    [("z", "Z itself"), ("beta_log_z", "β log Z"), ("no_ref", "π_ref is missing"), ("times", "not r(y)·β")],
)
def test_log_partition_slips_are_named(slip, phrase):
    beta = 0.25
    log_z = log_z_by_hand(REF, R, beta)
    answer = {
        "z": math.exp(log_z),
        "beta_log_z": beta * log_z,
        "no_ref": math.log(sum(math.exp(r / beta) for r in R.tolist())),
        "times": math.log(
            sum(math.exp(lp + r * beta) for lp, r in zip(REF.tolist(), R.tolist(), strict=True))
        ),
    }[slip]
    verdict = check_log_partition(answer, REF, R, beta)
    assert not verdict and phrase in verdict.message


def test_log_partition_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_log_partition([1.0], REF, R, 0.25)
    with pytest.raises(ValueError, match="1-D"):
        check_log_partition(1.0, WORLD.ref_logps, WORLD.rewards, 0.25)


# --- 2.2 β for a target KL ---------------------------------------------------------------------------------


def bisect_beta(target: float) -> float:
    low, high = 1e-3, 1e3  # KL decreases in β
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if kl_of_optimum(mid) > target else (low, mid)
    return math.sqrt(low * high)


def test_beta_for_kl_right_answer_passes():
    beta = bisect_beta(0.5)
    assert abs(kl_of_optimum(beta) - 0.5) < 1e-9
    verdict = check_beta_for_kl(beta, REF, R, 0.5)
    assert verdict and "0.5000" in verdict.message


def test_beta_for_kl_wrong_answers_say_which_way():
    beta = bisect_beta(0.5)
    too_small = check_beta_for_kl(beta / 2, REF, R, 0.5)
    assert not too_small and "increase β" in too_small.message
    too_large = check_beta_for_kl(beta * 2, REF, R, 0.5)
    assert not too_large and "decrease β" in too_large.message
    assert not check_beta_for_kl(-1.0, REF, R, 0.5)  # a negative β is a wrong answer, not a crash


def test_beta_for_kl_tolerance_is_the_stated_one():
    # move β until the KL is 2 × tolerance away from the target: must fail
    beta = bisect_beta(0.5 + 2 * KL_TOLERANCE)
    assert not check_beta_for_kl(beta, REF, R, 0.5)


def test_beta_for_kl_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_beta_for_kl(None, REF, R, 0.5)
    kl_max = -REF[R.argmax()].item()
    with pytest.raises(ValueError, match="not reachable"):
        check_beta_for_kl(1.0, REF, R, kl_max + 0.1)
    with pytest.raises(ValueError, match="target_kl"):
        check_beta_for_kl(1.0, REF, R, -0.5)
