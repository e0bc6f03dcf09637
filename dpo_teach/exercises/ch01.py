"""Checkers for chapter 01's exercises (Bradley–Terry and the KL-regularised objective).

* :func:`check_same_preferences` — exercise 1.1: a reward other than r with exactly the same preferences.
* :func:`check_objective_value` — exercise 1.2: J_β(π) = E_π[r] − β KL(π‖π_ref) of a given policy, by hand.
"""

from __future__ import annotations

import math

import torch

from dpo_teach._validate import check_finite, check_normalised, check_positive, check_tensor
from dpo_teach.exercises import Verdict, finite_number, first_slip
from dpo_teach.theory import bradley_terry_prob, expected_reward, kl_divergence

_ATOL = 1e-4


def _pairwise_probs(rewards: torch.Tensor) -> torch.Tensor:
    """P(y_a ≻ y_b) = σ(r_a − r_b) for every ordered pair: ``[..., K, K]``."""
    k = rewards.shape[-1]
    winner = rewards.unsqueeze(-1).expand(*rewards.shape, k)
    loser = rewards.unsqueeze(-2).expand(*rewards.shape[:-1], k, k)
    return bradley_terry_prob(winner, loser)


def check_same_preferences(answer, rewards) -> Verdict:
    """Exercise 1.1: does ``answer`` differ from ``rewards`` yet give every pair the same Bradley–Terry probability?

    Args: ``answer`` and ``rewards`` float tensors of one shape ``[K]`` or ``[X, K]`` (prompts × responses).
    The right answers are exactly r + c(x): a constant added to all responses of a prompt (Lemma 1 of the
    DPO paper). A wrong answer is told which pair's probability changed and by how much.
    """
    check_finite("answer", check_tensor("answer", answer))
    check_finite("rewards", check_tensor("rewards", rewards))
    if answer.shape != rewards.shape:
        raise ValueError(
            f"answer must have the shape of rewards {list(rewards.shape)} (one reward per response), "
            f"got {list(answer.shape)}."
        )
    answer, rewards = answer.double(), rewards.double()
    if bool(torch.allclose(answer, rewards, atol=_ATOL, rtol=0)):
        return Verdict(
            False, "that is r itself; find a *different* reward that no comparison can tell apart from r."
        )
    gap = (_pairwise_probs(answer) - _pairwise_probs(rewards)).abs()
    if float(gap.max()) < _ATOL:
        shift = (answer - rewards).mean(-1)
        shown = f"{float(shift):.3g}" if shift.numel() == 1 else str([round(s, 3) for s in shift.tolist()])
        return Verdict(
            True,
            f"you shifted every reward by c = {shown}: σ(r_a − r_b) sees only differences, so "
            "no amount of preference data can tell the two rewards apart.",
        )
    flat = int(gap.reshape(-1).argmax())
    k = rewards.shape[-1]
    a, b = (flat // k) % k, flat % k
    p_answer = float(_pairwise_probs(answer).reshape(-1)[flat])
    p_truth = float(_pairwise_probs(rewards).reshape(-1)[flat])
    hint = "Bradley–Terry depends only on the differences r_a − r_b; which change leaves all of them alone?"
    scale = float((answer * rewards).sum() / (rewards * rewards).sum().clamp_min(1e-12))
    if bool(torch.allclose(answer, scale * rewards, atol=_ATOL, rtol=0)):
        hint = (
            "scaling r multiplies every difference r_a − r_b, so the probabilities sharpen or flatten; "
            + hint
        )
    return Verdict(
        False, f"P(y_{a} ≻ y_{b}) is {p_answer:.4f} under your reward but {p_truth:.4f} under r. {hint}"
    )


def check_objective_value(answer, policy_logps, ref_logps, rewards, beta) -> Verdict:
    """Exercise 1.2: is ``answer`` = J_β(π) = Σ_y π(y) r(y) − β Σ_y π(y) log(π(y)/π_ref(y)) for one prompt?

    Args: ``answer`` a number; ``policy_logps`` (log π), ``ref_logps`` (log π_ref) and ``rewards`` 1-D float
    tensors ``[K]``; ``beta`` > 0. Common slips (no KL term, the KL with the wrong sign or the wrong direction,
    β missing) are named in the verdict.
    """
    answer = finite_number("answer", answer)
    for name, value in (("policy_logps", policy_logps), ("ref_logps", ref_logps), ("rewards", rewards)):
        check_tensor(name, value)
        if value.dim() != 1:
            raise ValueError(
                f"{name} must be 1-D (one entry per response of one prompt), got {list(value.shape)}."
            )
    check_normalised("policy_logps", policy_logps)
    check_normalised("ref_logps", ref_logps)
    check_finite("rewards", rewards)
    beta = check_positive("beta", beta)
    policy_logps, ref_logps, rewards = policy_logps.double(), ref_logps.double(), rewards.double()
    reward = float(expected_reward(policy_logps, rewards))
    kl = float(kl_divergence(policy_logps, ref_logps))
    truth = reward - beta * kl
    close = lambda value: math.isclose(answer, value, rel_tol=1e-4, abs_tol=1e-4)
    if close(truth):
        return Verdict(True, f"J = E_π[r] − β KL = {reward:.4f} − {beta:g} × {kl:.4f} = {truth:.4f}.")
    slips = [
        (reward, "this is E_π[r] alone; subtract the penalty β KL(π‖π_ref)."),
        (reward + beta * kl, "sign slip: the KL term is a penalty, subtract β KL(π‖π_ref)."),
        (reward - kl, "the KL term is missing its factor β."),
        (
            reward - beta * float(kl_divergence(ref_logps, policy_logps)),
            "you used KL(π_ref‖π); the objective penalises KL(π‖π_ref) = Σ π log(π/π_ref), weighted by π.",
        ),
    ]
    return first_slip(
        close,
        slips,
        f"{answer:.4f} is off; compute E_π[r] = Σ π(y) r(y) and KL = Σ π(y) log(π(y)/π_ref(y)) "
        f"separately (E_π[r] should come out as {reward:.4f}) and combine them as E_π[r] − β KL.",
    )


__all__ = ["check_objective_value", "check_same_preferences"]
