"""Checkers for chapter 03's exercises (the reward in disguise: equivalence classes, Plackett–Luce).

* :func:`check_canonical_reward` — exercise 3.1: the one reward of the form β log π/π_ref in the class of r.
* :func:`check_plackett_luce_prob` — exercise 3.2: the Plackett–Luce probability of a ranking, by hand.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from dpo_teach._validate import check_finite, check_positive, check_tensor
from dpo_teach.exercises import Verdict
from dpo_teach.theory import log_partition_function, optimal_policy, plackett_luce_logprob

_ATOL = 1e-4


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.double(), b.double(), atol=_ATOL, rtol=1e-4))


def check_canonical_reward(answer, reward, ref_logps, beta) -> Verdict:
    """Exercise 3.1: is ``answer`` the reward β log π*_r/π_ref = r − β log Z(x) (Theorem 1's class member)?

    Args: ``answer``, ``reward`` and ``ref_logps`` float tensors ``[P, N]`` (prompts × responses); ``beta`` > 0.
    A wrong answer gets a message that says what it is instead (the reward itself, a sign slip, a missing β,
    log π*, a member of the right class that is not normalised, or a reward of another class).
    """
    check_finite("answer", check_tensor("answer", answer))
    beta = check_positive("beta", beta)
    if answer.shape != reward.shape:
        raise ValueError(
            f"answer must have the reward's shape {list(reward.shape)} (prompts × responses), "
            f"got {list(answer.shape)}."
        )
    answer = answer.double()
    reward, ref_logps = reward.double(), ref_logps.double()
    shift = beta * log_partition_function(ref_logps, reward, beta).unsqueeze(-1)  # β log Z(x), [P, 1]
    truth = reward - shift
    if _close(answer, truth):
        return Verdict(
            True, "r − β log Z(x) = β log π*/π_ref; π_ref·exp(answer/β) sums to 1 for every prompt."
        )
    if _close(answer, reward):
        return Verdict(
            False,
            "that is the reward itself; it is in the right class but π_ref·exp(r/β) sums to "
            "Z(x), not 1. Subtract β log Z(x) from every reward of prompt x.",
        )
    if _close(answer, reward + shift):
        return Verdict(False, "sign slip: you added β log Z(x); subtract it instead (r = r̂ + β log Z(x)).")
    if _close(answer, truth / beta):
        return Verdict(False, "this is log π*/π_ref without the factor β; multiply by β.")
    if _close(answer, optimal_policy(ref_logps, reward, beta)):
        return Verdict(False, "this is log π*; the canonical reward is β (log π* − log π_ref).")
    offset = answer - truth  # constant along responses iff the answer is in the class of r
    if bool((offset.max(-1).values - offset.min(-1).values < _ATOL).all()):
        sums = (ref_logps + answer / beta).exp().sum(-1)
        return Verdict(
            False,
            "right class (it differs from r by a per-prompt constant), but not of the form "
            f"β log π/π_ref: Σ_y π_ref·exp(answer/β) = {[round(s, 3) for s in sums.tolist()]} per "
            "prompt, where it should be 1. Choose the per-prompt constant that makes it 1.",
        )
    spread = (offset.max(-1).values - offset.min(-1).values).max().item()
    return Verdict(
        False,
        f"answer − r varies across the responses of a prompt (by up to {spread:.3g}), so "
        "the answer is not even in the class of r: only subtract a function of the prompt x.",
    )


def check_plackett_luce_prob(answer, rewards, ranking) -> Verdict:
    """Exercise 3.2: is ``answer`` the Plackett–Luce probability of ``ranking`` (best first) under ``rewards``?

    Args: ``answer`` a real number (a probability, not a log); ``rewards`` 1-D float tensor ``[K]``;
    ``ranking`` a list or 1-D integer tensor of distinct indices, best first.
    """
    if isinstance(answer, torch.Tensor) and answer.numel() == 1 and answer.is_floating_point():
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, Real):
        raise TypeError(f"answer must be a number (a probability), got {type(answer).__name__}.")
    check_finite("rewards", check_tensor("rewards", rewards))
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one reward per response), got shape {list(rewards.shape)}.")
    ranking = torch.as_tensor(ranking, dtype=torch.long)
    truth = plackett_luce_logprob(rewards.double(), ranking).exp().item()
    answer = float(answer)
    if math.isclose(answer, truth, rel_tol=1e-4, abs_tol=1e-6):
        return Verdict(True, f"p(τ) = {truth:.6f}; adding a constant to every reward leaves it unchanged.")
    if answer < 0 and math.isclose(math.exp(answer), truth, rel_tol=1e-4):
        return Verdict(False, "this is log p(τ); the exercise asks for the probability: exponentiate it.")
    r = rewards.double()
    full_denominators = math.exp(sum(r[i].item() - torch.logsumexp(r, 0).item() for i in ranking.tolist()))
    if math.isclose(answer, full_denominators, rel_tol=1e-4):
        return Verdict(
            False,
            "each denominator must sum only over the responses not yet placed "
            "(Σ_{j ≥ k}), not over all of them.",
        )
    reversed_prob = plackett_luce_logprob(r, ranking.flip(0)).exp().item()
    if ranking.numel() == r.numel() and math.isclose(answer, reversed_prob, rel_tol=1e-4):
        return Verdict(
            False, "this is the probability of the reversed ranking; τ lists the best response first."
        )
    if not 0.0 <= answer <= 1.0:
        return Verdict(False, f"{answer:.4g} is not a probability; it must lie in [0, 1].")
    return Verdict(
        False, f"{answer:.6f} is off; multiply, for k = 1..K, exp r(y_τ(k)) / Σ_(j ≥ k) exp r(y_τ(j))."
    )


__all__ = ["check_canonical_reward", "check_plackett_luce_prob"]
