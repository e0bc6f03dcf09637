"""Checkers for chapter 11's exercises (diagnostics and failure modes).

* :func:`check_reference_drift` — exercise 11.1: the mean implicit reward on reference samples,
  E_{y~π_ref}[β log π_θ(y|x)/π_ref(y|x)] = −β KL(π_ref ‖ π_θ).
* :func:`check_initial_loss` — exercise 11.2: the loss a run logs at its first step, when π_θ = π_ref.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from dpo_teach._validate import check_finite, check_normalised, check_positive, check_tensor
from dpo_teach.exercises import Verdict
from dpo_teach.losses import get_loss
from dpo_teach.theory import kl_divergence


def _as_tensor(answer, shape) -> torch.Tensor:
    """The answer as float64 of ``shape`` (a number is accepted for a single prompt)."""
    if isinstance(answer, Real) and not isinstance(answer, bool):
        answer = torch.tensor(float(answer), dtype=torch.float64)
    check_finite("answer", check_tensor("answer", answer))
    if answer.numel() == 1 and math.prod(shape) == 1:
        return answer.double().reshape(shape)
    if tuple(answer.shape) != tuple(shape):
        raise ValueError(
            f"answer must have one value per prompt, shape {list(shape)}; got {list(answer.shape)}."
        )
    return answer.double()


def check_reference_drift(answer, policy_logps, ref_logps, beta) -> Verdict:
    """Exercise 11.1: is ``answer`` = E_{y~π_ref(·|x)}[β log π_θ(y|x)/π_ref(y|x)] for every prompt x?

    Args: ``answer`` a tensor ``[X]`` (a number for one prompt); ``policy_logps`` and ``ref_logps`` normalised
    log-probs ``[X, K]`` (or ``[K]``); ``beta`` > 0. The truth is −β KL(π_ref ‖ π_θ) (by
    :func:`dpo_teach.theory.kl_divergence`), which is never positive.
    """
    check_normalised("policy_logps", policy_logps)
    check_normalised("ref_logps", ref_logps)
    beta = check_positive("beta", beta)
    if policy_logps.shape != ref_logps.shape:
        raise ValueError(
            f"policy_logps {list(policy_logps.shape)} and ref_logps {list(ref_logps.shape)} must have one shape."
        )
    truth = -beta * kl_divergence(ref_logps.double(), policy_logps.double())
    answer = _as_tensor(answer, tuple(truth.shape))
    close = lambda value: bool(torch.allclose(answer, value, rtol=1e-4, atol=1e-8))
    if close(truth):
        return Verdict(
            True,
            "−β KL(π_ref ‖ π_θ): on the reference's own samples the implicit reward can only drift down.",
        )
    if close(-truth):
        return Verdict(False, "wrong sign: E_π_ref[log π_θ/π_ref] = −KL(π_ref ‖ π_θ), which is ≤ 0.")
    if close(truth / beta):
        return Verdict(False, "the factor β is missing: the implicit reward is β log π_θ/π_ref.")
    reverse = beta * kl_divergence(policy_logps.double(), ref_logps.double())
    if close(-reverse):
        return Verdict(
            False,
            "the KL is the wrong way round: the expectation is over π_ref, so it is KL(π_ref ‖ π_θ), "
            "not KL(π_θ ‖ π_ref).",
        )
    if close(reverse):
        return Verdict(
            False,
            "this is the mean under π_θ, E_π_θ[β log π_θ/π_ref] = β KL(π_θ ‖ π_ref); the exercise averages "
            "over samples of π_ref.",
        )
    return Verdict(
        False,
        "write E_π_ref[β log π_θ/π_ref] = β Σ_y π_ref(y) (log π_θ(y) − log π_ref(y)) and compare "
        "with the definition of KL(π_ref ‖ π_θ).",
    )


def _initial_loss(spec, beta: float, loss_kwargs: dict) -> float:
    """The loss of the registry's ``spec`` for one example at π_θ = π_ref (all log-ratios 0)."""
    zero = torch.zeros(1, dtype=torch.float64)
    if not spec.paired:  # KTO: z_ref = 0 and r_θ = 0, one desirable example
        losses, _, _ = spec(zero, zero, torch.tensor([True]), zero, zero, beta=beta, **loss_kwargs)
    else:
        losses, _, _ = spec(zero, zero, zero, zero, beta=beta, **loss_kwargs)
    return float(losses[0])


def check_initial_loss(answer, loss_type: str, beta: float, **loss_kwargs) -> Verdict:
    """Exercise 11.2: is ``answer`` the loss that a run of ``loss_type`` logs while π_θ = π_ref?

    At the first step every log-ratio log π_θ/π_ref is 0, so the loss is a number that depends on the loss and
    β only: ln 2 for DPO ("sigmoid", also with label smoothing, and "robust"), 1 for "hinge", 1/(4β²) for "ipo",
    λ_D/2 for a desirable KTO example. ``loss_kwargs`` are the loss's options (e.g. ``label_smoothing``).
    Reference-free losses ("orpo", "simpo") have no such number: it depends on the model's log-probs.
    """
    spec = get_loss(loss_type)
    beta = check_positive("beta", beta)
    if not spec.needs_reference:
        raise ValueError(
            f"{loss_type!r} has no reference model, so its first loss depends on the model's own log-probs; "
            "choose one of 'sigmoid', 'ipo', 'hinge', 'robust', 'kto'."
        )
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, Real):
        raise TypeError(f"answer must be a number (a loss value), got {type(answer).__name__}.")
    answer, truth = float(answer), _initial_loss(spec, beta, loss_kwargs)
    close = lambda value: math.isclose(answer, value, rel_tol=1e-4, abs_tol=1e-9)
    if close(truth):
        return Verdict(
            True, f"{truth:.6g}: a first logged loss of exactly this is a healthy start, not a bug."
        )
    if close(0.0):
        return Verdict(
            False, "at π_θ = π_ref the margin is 0, but the loss is not: evaluate the loss at h = 0."
        )
    if spec.name == "ipo" and close(1 / (2 * beta)):
        return Verdict(
            False, "1/(2τ) is IPO's target margin; the loss is the *squared* distance to it, at h = 0."
        )
    if spec.name != "sigmoid" and close(math.log(2)):
        return Verdict(
            False, f"ln 2 is DPO's first loss; {loss_type!r} has another formula: evaluate it at h = 0."
        )
    if close(truth / math.log(2)):
        return Verdict(False, "you used log base 2; the losses use the natural logarithm (ln 2 ≈ 0.6931).")
    return Verdict(
        False, f"{answer:.4g} is not it; write the {loss_type!r} loss with every log-ratio set to 0."
    )


__all__ = ["check_initial_loss", "check_reference_drift"]
