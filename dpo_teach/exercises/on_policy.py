"""Checkers for the exercises of the on-policy chapter (RSO, iterative DPO, RLOO, GRPO).

* :func:`check_acceptance_rate` — how often RSO's rejection sampler accepts a candidate from π_ref, on average
  over prompts: mean_x Σ_y π_ref(y|x) exp((r(x, y) − M_x)/β) = mean_x Z_β(x) e^{−M_x/β}, M_x = max_y r(x, y).
* :func:`check_rloo_advantages` — the leave-one-out advantages of one group of k rewards.
"""

from __future__ import annotations

import torch

from dpo_teach.exercises import Verdict, finite_number
from dpo_teach.rso import acceptance_distribution
from dpo_teach.trainers.policy_gradient import rloo_advantages

RATE_TOLERANCE = 1e-4  # relative
ADVANTAGE_TOLERANCE = 1e-6


def check_acceptance_rate(answer, ref_logps, rewards, beta) -> Verdict:
    """Is ``answer`` RSO's mean acceptance rate on the tables ``ref_logps``, ``rewards`` ``[P, N]`` at ``beta``?"""
    answer = finite_number("answer", answer)
    beta = finite_number("beta", beta)
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0.")
    _, rate = acceptance_distribution(ref_logps, rewards, beta)
    truth = float(rate.mean())
    if abs(answer - truth) <= RATE_TOLERANCE * truth:
        return Verdict(
            True, f"{truth:.5f}: on average one candidate in {1 / truth:.0f} is accepted at β = {beta}."
        )
    if 0 < answer and abs(answer * truth - 1) <= 1e-3:
        return Verdict(
            False, "that is the number of candidates per accepted sample; the rate is its inverse."
        )
    big = float(torch.exp(-rewards.double().max(-1).values / beta).mean())
    if abs(answer - big) <= RATE_TOLERANCE * big:
        return Verdict(
            False, "you left out Z_β(x): the rate is Σ_y π_ref(y|x) exp((r(x,y) − M)/β), not e^{−M/β}."
        )
    return Verdict(
        False,
        f"{answer:.5g} is off; compute Σ_y π_ref(y|x) exp((r(x, y) − max_y r(x, y))/β) for each prompt and "
        "average over the prompts (theory.partition_function gives Σ_y π_ref e^{r/β}).",
    )


def check_rloo_advantages(answer, rewards) -> Verdict:
    """Are ``answer`` (k numbers) the leave-one-out advantages of the group ``rewards`` (k numbers, k ≥ 2)?"""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    if rewards.dim() != 1 or rewards.numel() < 2:
        raise ValueError("rewards must be a 1-D list of k ≥ 2 numbers (one group).")
    try:
        answer = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError("answer must be a list or tensor of numbers, one advantage per reward.") from None
    if answer.shape != rewards.shape:
        raise ValueError(
            f"answer must hold {rewards.numel()} advantages (one per reward), got {list(answer.shape)}."
        )
    truth = rloo_advantages(rewards.unsqueeze(0)).squeeze(0)
    if torch.allclose(answer, truth, rtol=0, atol=ADVANTAGE_TOLERANCE):
        return Verdict(
            True, "A_i = R_i − mean of the others; they sum to zero and none uses its own reward twice."
        )
    if torch.allclose(answer, rewards - rewards.mean(), rtol=0, atol=ADVANTAGE_TOLERANCE):
        return Verdict(
            False, "that subtracts the mean of all k rewards, which includes R_i itself; leave it out."
        )
    return Verdict(False, "for each i, subtract the mean of the other k − 1 rewards from R_i.")


__all__ = ["check_acceptance_rate", "check_rloo_advantages"]
