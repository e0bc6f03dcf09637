"""Exercise checker of chapter 12: the right answer passes, typical slips get a named hint, bad input raises.

The truth is checked independently: population DPO (``tabular_dpo``) on a two-response bandit with flipped labels
stops at the margin the closed form gives.
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch12 import check_noisy_margin, noisy_margin
from dpo_teach.tabular import tabular_dpo
from dpo_teach.worlds import BanditWorld


@pytest.mark.parametrize(("gap", "eps"), [(2.0, 0.2), (0.5, 0.1), (-1.0, 0.3), (1.5, 0.0)])
def test_noisy_margin_is_where_population_dpo_stops(gap, eps):
    beta = 0.5
    two = BanditWorld(n_responses=2, n_prompts=1, rewards=torch.tensor([[gap, 0.0]], dtype=torch.float64))
    run = tabular_dpo(two, beta, steps=500, label_noise=eps, log_every=500)
    implicit = beta * (run.policy_logps - two.ref_logps)[0]
    assert float(implicit[0] - implicit[1]) == pytest.approx(noisy_margin(gap, eps), abs=1e-4)


def test_noisy_margin_without_noise_is_the_reward_gap():
    assert noisy_margin(1.7, 0.0) == pytest.approx(1.7, abs=1e-12)


def test_right_answer_passes():
    p = 0.8 * (1 / (1 + math.exp(-2.0))) + 0.2 * (1 / (1 + math.exp(2.0)))  # the label probability, by hand
    verdict = check_noisy_margin(math.log(p / (1 - p)), reward_gap=2.0, label_noise=0.2)
    assert isinstance(verdict, Verdict) and verdict.ok and str(verdict).startswith("✓")
    assert check_noisy_margin(torch.tensor(noisy_margin(2.0, 0.2))).ok  # a 0-d tensor, the default arguments


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (2.0, "clean margin"),
        (-noisy_margin(2.0, 0.2), "wrong sign"),
        (1 / (1 + math.exp(-noisy_margin(2.0, 0.2))), "its logit"),
        ((1 - 2 * 0.2) * 2.0, "linear guess"),
        (math.log(1 / (1 + math.exp(-noisy_margin(2.0, 0.2)))), "log p"),
        (0.3, "set its derivative to 0"),
    ],
)
def test_slips_get_hints(answer, hint):
    verdict = check_noisy_margin(answer, reward_gap=2.0, label_noise=0.2)
    assert not verdict and hint in verdict.message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"answer": "1.0"}, TypeError, "answer must be a finite number"),
        ({"answer": float("nan")}, ValueError, "answer must be a finite number"),
        ({"answer": 1.0, "reward_gap": None}, TypeError, "reward_gap must be a finite number"),
        ({"answer": 1.0, "label_noise": 0.5}, ValueError, r"label_noise=0.5 must be in \[0, 0.5\)"),
        ({"answer": 1.0, "label_noise": -0.1}, ValueError, "label_noise"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        check_noisy_margin(**kwargs)
