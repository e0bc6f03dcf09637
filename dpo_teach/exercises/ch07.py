"""Checkers for chapter 07's exercises (β and the reward–KL curve of π*_β on the sequences world).

* :func:`check_beta_for_mean_kl` — exercise 7.1: the β whose π*_β sits at a given mean KL from π_ref.
* :func:`check_frontier_slope` — exercise 7.2: the slope dE[r]/dKL of the π*_β curve at a given β.

Both work on the world's tables, averaged uniformly over prompts as :mod:`dpo_teach.frontier` does:
``ref_logps`` ``[P, N]`` (e.g. ``world.logprobs(ref_model)``) and ``rewards`` ``[P, N]`` (``world.reward_table``).
"""

from __future__ import annotations

import math

import torch

from dpo_teach._validate import check_normalised, check_positive
from dpo_teach.exercises import Verdict, finite_number, first_slip
from dpo_teach.frontier import optimal_point

KL_TOLERANCE = 1e-3  # nats: how close the mean KL(π*_β ‖ π_ref) must come to the target in exercise 7.1
SLOPE_TOLERANCE = 0.02  # relative: a finite-difference slope within 2 % of the exact one passes exercise 7.2


def max_mean_kl(ref_logps: torch.Tensor, rewards: torch.Tensor) -> float:
    """The β → 0 limit of mean KL(π*_β ‖ π_ref): mean_x −log π_ref(argmax_y r(x, y) | x) (ties pooled)."""
    check_normalised("ref_logps", ref_logps)
    best = rewards == rewards.max(-1, keepdim=True).values
    return float(-torch.logsumexp(ref_logps.double().masked_fill(~best, -math.inf), -1).mean())


def check_beta_for_mean_kl(answer, ref_logps, rewards, target_kl) -> Verdict:
    """Exercise 7.1: is ``answer`` a β at which mean_x KL(π*_β ‖ π_ref) = ``target_kl`` (± :data:`KL_TOLERANCE`)?

    Args: ``answer`` the reader's β (β ≤ 0 is a wrong answer, not an error); ``ref_logps``, ``rewards``
    ``[P, N]``; ``target_kl`` in (0, :func:`max_mean_kl`). The mean KL falls monotonically as β grows.
    """
    answer = finite_number("answer", answer)
    target_kl = check_positive("target_kl", target_kl)
    limit = max_mean_kl(ref_logps, rewards)
    if target_kl >= limit:
        raise ValueError(
            f"target_kl={target_kl} is not reachable: the mean KL(π*_β‖π_ref) stays below {limit:.4f} nats for "
            "every β > 0 (its β → 0 limit, the mean of −log π_ref(argmax r)); pick a smaller target."
        )
    if answer <= 0:  # finite_number has ruled out NaN and ±inf
        return Verdict(False, f"β = {answer} is not allowed: β must be a finite number > 0.")
    kl = optimal_point(ref_logps, rewards, answer)["kl"]
    if abs(kl - target_kl) <= KL_TOLERANCE:
        return Verdict(
            True, f"at β = {answer:.4g} the mean KL(π*_β‖π_ref) is {kl:.4f} nats (target {target_kl:g})."
        )
    direction = (
        "increase β (a larger β keeps π*_β closer to π_ref)"
        if kl > target_kl
        else "decrease β (a smaller β lets π*_β move further from π_ref)"
    )
    return Verdict(
        False,
        f"at β = {answer:.4g} the mean KL(π*_β‖π_ref) is {kl:.4f} nats, not {target_kl:g} (± {KL_TOLERANCE:g}): "
        f"{direction}. The KL falls monotonically with β, so bisection on log β finds it.",
    )


def check_frontier_slope(answer, ref_logps, rewards, beta) -> Verdict:
    """Exercise 7.2: is ``answer`` the slope d E_{π*_β}[r] / d KL(π*_β‖π_ref) of the curve at ``beta``?

    The exact slope is computed here by a central difference at β(1 ± 1e-4); an answer within
    :data:`SLOPE_TOLERANCE` (relative) passes. Common slips — the reciprocal, dKL/dE, or the slope of the
    chord from π_ref — are named in the verdict.
    """
    answer = finite_number("answer", answer)
    beta = check_positive("beta", beta)
    lo, hi = (optimal_point(ref_logps, rewards, beta * (1 + s * 1e-4)) for s in (1, -1))
    slope = (hi["expected_reward"] - lo["expected_reward"]) / (hi["kl"] - lo["kl"])
    close = lambda value: math.isfinite(value) and abs(answer - value) <= SLOPE_TOLERANCE * abs(value)
    if close(slope):
        return Verdict(
            True,
            f"the slope at β = {beta:g} is {slope:.4f} ≈ β: the line E = β·KL + β log Z touches the curve at π*_β, "
            "because π*_β maximises E[r] − β·KL.",
        )
    mid = optimal_point(ref_logps, rewards, beta)
    at_ref = float((ref_logps.double().exp() * rewards.double()).sum(-1).mean())
    chord = (mid["expected_reward"] - at_ref) / mid["kl"]
    slips = [
        (1 / slope, "that is dKL/dE[r], the reciprocal; divide the change in reward by the change in KL."),
        (chord, "that is the slope of the chord from π_ref to π*_β; take two nearby β instead (a tangent)."),
    ]
    return first_slip(
        close,
        slips,
        f"{answer:.4g} is off; compute optimal_point at β·1.01 and β·0.99 and divide the difference in "
        "expected_reward by the difference in kl.",
    )


__all__ = ["KL_TOLERANCE", "SLOPE_TOLERANCE", "check_beta_for_mean_kl", "check_frontier_slope", "max_mean_kl"]
