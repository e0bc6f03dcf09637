"""Exercise checkers of chapter 08 (best-of-N), against a best-of-N written here from its definition."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.baselines import best_of_n_kl_bound
from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch08 import check_best_of_n_kl, check_best_of_n_to_match
from dpo_teach.worlds import SequenceWorld


@pytest.fixture(scope="module")
def tables():
    world = SequenceWorld(n_prompts=4, length=2, alphabet_size=6, seed=3)
    return world.demonstrator_logps, world.reward_table


def best_of_n(ref_logps, rewards, n):
    """π_BoN(y) = F(r_y)^n − F(r_y⁻)^n for distinct rewards (F the reward's CDF under π_ref), by a sort."""
    ref, out = ref_logps.double().exp(), torch.zeros_like(ref_logps, dtype=torch.float64)
    for x in range(ref.shape[0]):
        order = rewards[x].argsort()
        cdf = ref[x][order].cumsum(0)
        below = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
        out[x, order] = cdf**n - below**n
    return out


def point(ref_logps, rewards, n):
    policy, ref = best_of_n(ref_logps, rewards, n), ref_logps.double().exp()
    kl = torch.where(policy > 0, policy * (policy / ref).log(), torch.zeros_like(policy)).sum(-1).mean()
    return float(kl), float((policy * rewards.double()).sum(-1).mean())


def test_rewards_are_distinct(tables):  # the formula above assumes it
    rewards = tables[1]
    assert all(len(set(row.tolist())) == row.numel() for row in rewards)


# ---- 8.1 the KL of best-of-N ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 16])
def test_best_of_n_kl_right_answer_passes(tables, n):
    kl, _ = point(*tables, n)
    assert kl <= best_of_n_kl_bound(n) + 1e-9
    verdict = check_best_of_n_kl(kl, *tables, n)
    assert isinstance(verdict, Verdict) and verdict.ok


def test_best_of_n_kl_wrong_answers(tables):
    kl, _ = point(*tables, 16)
    bound = best_of_n_kl_bound(16)
    if abs(bound - kl) > 1e-3:
        verdict = check_best_of_n_kl(bound, *tables, 16)
        assert not verdict and "bound" in verdict.message
    verdict = check_best_of_n_kl(math.log(16), *tables, 16)
    assert not verdict and "log N" in verdict.message
    assert not check_best_of_n_kl(kl + 0.05, *tables, 16)


def test_best_of_n_kl_bad_input(tables):
    with pytest.raises(TypeError, match="n must be an int"):
        check_best_of_n_kl(0.5, *tables, 4.0)
    with pytest.raises(ValueError, match="n=0"):
        check_best_of_n_kl(0.5, *tables, 0)
    with pytest.raises(TypeError, match="answer"):
        check_best_of_n_kl("0.5", *tables, 4)


# ---- 8.2 the smallest N reaching a reward ---------------------------------------------------------------


def smallest_n(ref_logps, rewards, target):
    n = 1
    while point(ref_logps, rewards, n)[1] < target:
        n += 1
    return n


def test_best_of_n_to_match(tables):
    target = point(*tables, 7)[1] - 1e-6  # reached at N = 7, and not before (E_BoN[r] grows with N)
    n = smallest_n(*tables, target)
    assert n == 7
    assert check_best_of_n_to_match(n, *tables, target).ok
    fewer = check_best_of_n_to_match(n - 1, *tables, target)
    assert not fewer and "more draws" in fewer.message
    more = check_best_of_n_to_match(n + 3, *tables, target)
    assert not more and "smaller N" in more.message


def test_best_of_n_to_match_bad_input(tables):
    best = float(tables[1].max(-1).values.mean())
    with pytest.raises(ValueError, match="not reachable"):
        check_best_of_n_to_match(4, *tables, best + 0.1)
    with pytest.raises(TypeError, match="answer must be an int"):
        check_best_of_n_to_match(4.0, *tables, 0.5)
