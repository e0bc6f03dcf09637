"""Checkers for chapter 02's exercises (the optimal policy in closed form).

* :func:`check_log_partition` — exercise 2.1: log Z = log Σ_y π_ref(y) exp(r(y)/β), by hand.
* :func:`check_beta_for_kl` — exercise 2.2: the β at which π*_β sits at a given KL from π_ref.
"""

from __future__ import annotations

import math

import torch

from dpo_teach._validate import check_finite, check_normalised, check_positive, check_tensor
from dpo_teach.exercises import Verdict, finite_number, first_slip
from dpo_teach.theory import kl_divergence, log_partition_function, optimal_policy

KL_TOLERANCE = 1e-3  # nats: how close KL(π*_β ‖ π_ref) must come to the target in exercise 2.2


def _one_prompt(ref_logps, rewards) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float64 copies of 1-D ``ref_logps`` (normalised) and ``rewards`` of one length."""
    for name, value in (("ref_logps", ref_logps), ("rewards", rewards)):
        check_tensor(name, value)
        if value.dim() != 1:
            raise ValueError(
                f"{name} must be 1-D (one entry per response of one prompt), got {list(value.shape)}."
            )
    if ref_logps.shape != rewards.shape:
        raise ValueError(
            f"ref_logps {list(ref_logps.shape)} and rewards {list(rewards.shape)} must have the same length."
        )
    check_normalised("ref_logps", ref_logps)
    check_finite("rewards", rewards)
    return ref_logps.double(), rewards.double()


def check_log_partition(answer, ref_logps, rewards, beta) -> Verdict:
    """Exercise 2.1: is ``answer`` = log Z = log Σ_y π_ref(y) exp(r(y)/β) for one prompt?

    Args: ``answer`` a number; ``ref_logps`` (log π_ref) and ``rewards`` 1-D float tensors ``[K]``; ``beta`` > 0.
    Common slips (Z instead of log Z, β log Z, π_ref left out, r·β instead of r/β) are named in the verdict.
    """
    answer = finite_number("answer", answer)
    ref_logps, rewards = _one_prompt(ref_logps, rewards)
    beta = check_positive("beta", beta)
    truth = float(log_partition_function(ref_logps, rewards, beta))
    close = lambda value: math.isfinite(value) and math.isclose(answer, value, rel_tol=1e-4, abs_tol=1e-4)
    if close(truth):
        return Verdict(
            True, f"log Z = {truth:.4f}; the best achievable objective is β log Z = {beta * truth:.4f}."
        )
    k = rewards.numel()
    slips = [
        (math.exp(truth) if truth < 700 else math.inf, "this is Z itself; the exercise asks for log Z."),
        (beta * truth, "this is β log Z (the objective's maximum value, J(π*)); divide by β."),
        (
            float(torch.logsumexp(rewards / beta, 0)),
            "π_ref is missing: each exp(r(y)/β) must be weighted by π_ref(y) (Z is an expectation under π_ref).",
        ),
        (
            float(torch.logsumexp(rewards / beta, 0)) - math.log(k),
            "you weighted every response by 1/K; weight exp(r(y)/β) by π_ref(y) instead.",
        ),
        (float(torch.logsumexp(ref_logps + rewards * beta, 0)), "the exponent is r(y)/β, not r(y)·β."),
    ]
    return first_slip(
        close,
        slips,
        f"{answer:.4f} is off; compute Σ_y π_ref(y)·exp(r(y)/β) and take its log "
        "(torch.logsumexp(ref_logps + rewards / beta, 0) does both without overflow).",
    )


def check_beta_for_kl(answer, ref_logps, rewards, target_kl) -> Verdict:
    """Exercise 2.2: is ``answer`` a β with KL(π*_β ‖ π_ref) = ``target_kl`` (within :data:`KL_TOLERANCE`)?

    Args: ``answer`` the reader's β (a number; β ≤ 0 is a wrong answer, not an error); ``ref_logps`` and
    ``rewards`` 1-D float tensors ``[K]``; ``target_kl`` in (0, KL_max), where KL_max = −log π_ref(argmax r)
    is the divergence of the β → 0 limit. KL(π*_β ‖ π_ref) decreases as β grows, so one β hits the target.
    """
    answer = finite_number("answer", answer)
    ref_logps, rewards = _one_prompt(ref_logps, rewards)
    target_kl = check_positive("target_kl", target_kl)
    best = rewards == rewards.max()
    kl_max = -float(torch.logsumexp(ref_logps[best], 0))
    if target_kl >= kl_max:
        raise ValueError(
            f"target_kl={target_kl} is not reachable: KL(π*_β‖π_ref) < {kl_max:.4f} for every β > 0 "
            "(its β → 0 limit, −log π_ref(argmax r)); pick a smaller target."
        )
    if answer <= 0:  # finite_number has ruled out NaN and ±inf
        return Verdict(False, f"β = {answer} is not allowed: β must be a finite number > 0.")
    kl = float(kl_divergence(optimal_policy(ref_logps, rewards, answer), ref_logps))
    if abs(kl - target_kl) <= KL_TOLERANCE:
        return Verdict(True, f"at β = {answer:.4g}, KL(π*_β‖π_ref) = {kl:.4f} nats (target {target_kl:g}).")
    if kl > target_kl:
        direction = "increase β (a larger β keeps π* closer to π_ref)"
    else:
        direction = "decrease β (a smaller β lets π* move further from π_ref)"
    return Verdict(
        False,
        f"at β = {answer:.4g}, KL(π*_β‖π_ref) = {kl:.4f} nats, not {target_kl:g} "
        f"(± {KL_TOLERANCE:g}): {direction}. KL falls monotonically with β, so bisection finds it.",
    )


__all__ = ["KL_TOLERANCE", "check_beta_for_kl", "check_log_partition"]
