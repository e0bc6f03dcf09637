"""Checkers for chapter 12's exercises (data and misconceptions).

* :func:`check_noisy_margin` — exercise 12.1: the implicit-reward margin at which population DPO stops on a
  two-response bandit whose labels are flipped with probability ε:
  σ(h*) = (1 − ε) σ(Δr) + ε σ(−Δr), so h* = logit((1 − ε) σ(Δr) + ε σ(−Δr)).
"""

from __future__ import annotations

import math

from dpo_teach.exercises import Verdict, finite_number, first_slip


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def noisy_margin(reward_gap, label_noise) -> float:
    """h* = logit(p_ε), p_ε = (1 − ε) σ(Δr) + ε σ(−Δr): the probability that the better response is labelled
    the winner, turned back into a margin (the DPO population minimiser of one pair, chapter 04)."""
    gap = finite_number("reward_gap", reward_gap)
    eps = finite_number("label_noise", label_noise)
    if not 0 <= eps < 0.5:
        raise ValueError(
            f"label_noise={eps} must be in [0, 0.5) (the probability that a label is flipped); use 0.0 for clean labels."
        )
    p = (1 - eps) * _sigmoid(gap) + eps * _sigmoid(-gap)
    return math.log(p) - math.log1p(-p)


def check_noisy_margin(answer, reward_gap=2.0, label_noise=0.2) -> Verdict:
    """Exercise 12.1: is ``answer`` the margin h* = β log π/π_ref(y_1) − β log π/π_ref(y_2) at which population DPO
    stops, for a true reward gap Δr = r(y_1) − r(y_2) = ``reward_gap`` and labels flipped with probability
    ``label_noise``? (:func:`noisy_margin` is the truth.)"""
    answer = finite_number("answer", answer)
    truth = noisy_margin(reward_gap, label_noise)
    gap, eps = float(reward_gap), float(label_noise)
    p = _sigmoid(truth)
    close = lambda value: math.isclose(answer, value, rel_tol=1e-3, abs_tol=1e-6)
    if close(truth):
        return Verdict(
            True,
            f"h* = {truth:.4g}: noise shrinks the margin DPO aims for below the true gap {gap:g}, so the policy "
            "stays closer to π_ref — it learns a flattened reward, not a wrong one.",
        )
    hints = [
        (gap, "that is the clean margin Δr; with flipped labels the winner is the better response only with "
         "probability (1 − ε) σ(Δr) + ε σ(−Δr)."),
        (-truth, "wrong sign: the better response still wins more often than not while ε < ½."),
        (p, "that is the probability that the better response is labelled the winner; the margin is its logit."),
        ((1 - 2 * eps) * gap, "(1 − 2ε) Δr is a linear guess; the label probability mixes σ(Δr) and σ(−Δr), and "
         "the margin is the logit of that mixture."),
        (math.log(p), "that is log p; the margin solves σ(h) = p, i.e. h = log p − log(1 − p)."),
    ]  # fmt: skip
    return first_slip(
        close,
        hints,
        f"{answer:.4g} is not it: the population loss of the pair is −p log σ(h) − (1 − p) log σ(−h); set its "
        "derivative to 0.",
    )


__all__ = ["check_noisy_margin", "noisy_margin"]
