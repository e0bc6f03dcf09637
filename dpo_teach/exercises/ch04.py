"""Checkers for chapter 04's exercises (the DPO loss and its gradient).

* :func:`check_weight_margin` — exercise 4.1: the log-ratio margin h at which the weight σ(−βh) equals w.
* :func:`check_dpo_logit_gradient` — exercise 4.2: ∇_θ of the DPO loss of one pair for a softmax policy.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from dpo_teach._validate import check_finite, check_positive, check_tensor, is_int
from dpo_teach.exercises import Verdict
from dpo_teach.losses import dpo_loss
from dpo_teach.theory import dpo_gradient_weight


def check_weight_margin(answer, beta, weight=0.1) -> Verdict:
    """Exercise 4.1: is ``answer`` the log-ratio margin h with σ(−βh) = ``weight``, i.e. h = ln((1 − w)/w)/β?

    Args: ``answer`` a real number; ``beta`` > 0; ``weight`` in (0, 1).
    """
    if isinstance(answer, torch.Tensor) and answer.numel() == 1 and answer.is_floating_point():
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, Real):
        raise TypeError(f"answer must be a number (a margin h), got {type(answer).__name__}.")
    beta = check_positive("beta", beta)
    weight = check_positive("weight", weight)
    if weight >= 1:
        raise ValueError(f"weight must lie in (0, 1), got {weight}; σ never reaches 1.")
    answer = float(answer)
    truth = math.log((1 - weight) / weight) / beta
    close = lambda value: math.isclose(answer, value, rel_tol=1e-3, abs_tol=1e-6)
    if close(truth):
        return Verdict(
            True, f"h = ln((1 − w)/w)/β = {truth:.4g}: the reward margin βh is {beta * truth:.4g}."
        )
    if close(truth * beta):
        return Verdict(
            False, "this is the reward margin r̂_w − r̂_l = βh; the exercise asks for h: divide by β."
        )
    if close(-truth):
        return Verdict(
            False,
            "wrong sign: the weight is small when the pair is ranked *correctly*, i.e. h > 0 for w < 1/2.",
        )
    if close(truth * beta * beta):
        return Verdict(False, "you multiplied by β; solve σ(−βh) = w for h, which divides by β.")
    got = 1 / (1 + math.exp(min(beta * answer, 700.0)))
    return Verdict(
        False,
        f"at h = {answer:.4g} the weight σ(−βh) is {got:.4g}, not {weight}; solve "
        "σ(−βh) = w using σ(z) = 1/(1 + e^(−z)).",
    )


def check_dpo_logit_gradient(answer, policy_logits, ref_logps, chosen, rejected, beta) -> Verdict:
    """Exercise 4.2: is ``answer`` = ∇_θ L_DPO for the policy π_θ = softmax(θ) and one pair (y_w, y_l)?

    Args: ``answer``, ``policy_logits`` θ and ``ref_logps`` (log π_ref) float tensors ``[N]``; ``chosen`` and
    ``rejected`` response indices; ``beta`` > 0. The truth is computed by autograd through
    :func:`dpo_teach.losses.dpo_loss`; the expected closed form is −β σ(r̂_l − r̂_w) (e_{y_w} − e_{y_l}).
    """
    check_finite("answer", check_tensor("answer", answer))
    check_finite("policy_logits", check_tensor("policy_logits", policy_logits))
    check_tensor("ref_logps", ref_logps)
    beta = check_positive("beta", beta)
    if answer.shape != policy_logits.shape or policy_logits.dim() != 1:
        raise ValueError(
            f"answer must be a 1-D tensor with one entry per response, shape {list(policy_logits.shape)}; "
            f"got {list(answer.shape)}."
        )
    for name, index in (("chosen", chosen), ("rejected", rejected)):
        if not is_int(index):
            raise TypeError(f"{name} must be a response index (int), got {type(index).__name__}.")
        if not 0 <= index < policy_logits.numel():
            raise ValueError(f"{name}={index} is not a response index in [0, {policy_logits.numel()}).")
    theta = policy_logits.detach().double().requires_grad_(True)
    logps = torch.log_softmax(theta, dim=-1)
    ref = ref_logps.double()
    pair = [t.reshape(1) for t in (logps[chosen], logps[rejected], ref[chosen], ref[rejected])]
    (loss,), _, _ = dpo_loss(*pair, beta=beta)
    (truth,) = torch.autograd.grad(loss, theta)
    answer = answer.double()
    close = lambda value: bool(torch.allclose(answer, value, atol=1e-6, rtol=1e-4))
    if close(truth):
        return Verdict(True, "−β σ(r̂_l − r̂_w)(e_w − e_l): the softmax terms −π_θ cancel between y_w and y_l.")
    if close(-truth):
        return Verdict(
            False,
            "wrong sign: this is −∇L, the direction gradient *descent* moves θ. The gradient "
            "of the loss lowers the chosen logit's entry.",
        )
    weight = dpo_gradient_weight(*[t.detach() for t in pair], beta=beta).item()
    if close(truth / weight):
        return Verdict(False, f"the weight σ(r̂_l − r̂_w) = {weight:.4g} is missing: d/du[−log σ(u)] = −σ(−u).")
    if close(truth / beta):
        return Verdict(False, "the factor β is missing: the margin is u = β(log-ratio_w − log-ratio_l).")
    if abs(answer.sum().item()) > 1e-6:
        return Verdict(
            False,
            f"your entries sum to {answer.sum().item():.4g}; a gradient w.r.t. softmax logits "
            "always sums to 0 (adding a constant to θ does not change π_θ). Use ∇_θ log π_θ(y) = "
            "e_y − π_θ.",
        )
    return Verdict(
        False,
        "not the gradient; chain rule: ∇_θ L = −σ(−u) ∇_θ u with u = r̂_w − r̂_l and "
        "∇_θ log π_θ(y) = e_y − π_θ.",
    )


__all__ = ["check_dpo_logit_gradient", "check_weight_margin"]
