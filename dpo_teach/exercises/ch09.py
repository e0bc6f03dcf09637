"""Checkers for chapter 09's exercises (the variants of DPO).

* :func:`check_cdpo_margin` — exercise 9.1: the log-ratio margin h at which conservative DPO stops pushing.
* :func:`check_ipo_rejected_prob` — exercise 9.2: π_θ(y_l) where IPO settles on a two-response bandit whose
  preference is deterministic.
"""

from __future__ import annotations

import math
from numbers import Real

from dpo_teach._validate import check_label_smoothing, check_positive
from dpo_teach.exercises import Verdict, finite_number


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)


def check_cdpo_margin(answer, beta=0.1, label_smoothing=0.1) -> Verdict:
    """Exercise 9.1: is ``answer`` the margin h* minimising cDPO's per-pair loss, h* = (1/β) ln((1 − ε)/ε)?

    The loss is −(1 − ε) log σ(βh) − ε log σ(−βh) (:func:`dpo_teach.losses.dpo_loss` with
    ``label_smoothing`` = ε). Args: ``answer`` a real number; ``beta`` > 0; ``label_smoothing`` ε in (0, 0.5).
    """
    answer = finite_number("answer", answer)
    beta = check_positive("beta", beta)
    eps = check_label_smoothing(label_smoothing)
    if eps == 0:
        raise ValueError("label_smoothing must be > 0 here: plain DPO (ε = 0) has no finite minimiser.")
    truth = math.log((1 - eps) / eps) / beta
    if _close(answer, truth):
        return Verdict(
            True,
            f"h* = ln((1 − ε)/ε)/β = {truth:.4g}: there σ(βh) = 1 − ε, the gradient weight σ(−βh) − ε is 0.",
        )
    if _close(answer, truth * beta):
        return Verdict(
            False, "this is the reward margin βh*; the exercise asks for the log-ratio margin h: divide by β."
        )
    if _close(answer, -truth):
        return Verdict(
            False, "wrong sign: the chosen response should end up *more* likely, so h* > 0 for ε < 1/2."
        )
    if _close(answer, math.log10((1 - eps) / eps) / beta):
        return Verdict(
            False, "use the natural logarithm: σ is defined with e, so the answer has ln, not log10."
        )
    if _close(answer, truth * beta * beta):
        return Verdict(False, "you multiplied by β; solving σ(βh) = 1 − ε for h divides by β.")
    weight = 1 / (1 + math.exp(min(beta * answer, 700.0))) - eps
    return Verdict(
        False,
        f"at h = {answer:.4g} the gradient weight σ(−βh) − ε is {weight:.4g}, not 0: the loss still "
        + ("pushes h up" if weight > 0 else "pushes h back down")
        + ". Differentiate the loss in h and set it to 0.",
    )


def check_ipo_rejected_prob(answer, tau=0.25, ref_chosen_prob=0.5) -> Verdict:
    """Exercise 9.2: is ``answer`` = π_θ(y_l) at the minimum of IPO's population loss on a two-response bandit?

    π_ref(y_w) = ``ref_chosen_prob``, π_ref(y_l) = 1 − that, and y_w wins every comparison. IPO's loss
    (h − 1/(2τ))² is zero at h = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l) = 1/(2τ), so
    π_θ(y_l) = σ(−(logit π_ref(y_w) + 1/(2τ))). Args: ``answer`` in [0, 1]; ``tau`` > 0; ``ref_chosen_prob`` in (0, 1).
    """
    answer = finite_number("answer", answer)
    tau = check_positive("tau", tau)
    if (
        isinstance(ref_chosen_prob, bool)
        or not isinstance(ref_chosen_prob, Real)
        or not 0 < ref_chosen_prob < 1
    ):
        raise ValueError(f"ref_chosen_prob must be a probability in (0, 1), got {ref_chosen_prob!r}.")
    if not 0 <= answer <= 1:
        raise ValueError(f"answer must be a probability in [0, 1], got {answer}.")
    ref_logit = math.log(ref_chosen_prob / (1 - ref_chosen_prob))
    sigmoid = lambda z: 1 / (1 + math.exp(-z))
    truth = sigmoid(-(ref_logit + 1 / (2 * tau)))
    if _close(answer, truth):
        return Verdict(
            True, f"π_θ(y_l) = σ(−(logit π_ref(y_w) + 1/(2τ))) = {truth:.4g}: finite, unlike DPO's limit 0."
        )
    if answer < 1e-6:
        return Verdict(
            False, "that is DPO's limit on deterministic preferences; IPO's squared loss stops at h = 1/(2τ)."
        )
    if _close(answer, 1 - truth):
        return Verdict(
            False, f"{answer:.4g} is π_θ(y_w); the exercise asks for the rejected response's probability."
        )
    if _close(answer, sigmoid(-(ref_logit + 1 / tau))):
        return Verdict(False, "IPO's target margin is 1/(2τ), not 1/τ: the loss is (h − 1/(2τ))².")
    if ref_logit != 0 and _close(answer, sigmoid(-1 / (2 * tau))):
        return Verdict(
            False, "h is a margin of log-*ratios* to π_ref: add logit π_ref(y_w) = ln(π_ref(y_w)/π_ref(y_l))."
        )
    return Verdict(
        False,
        f"not yet; at the minimum h = 1/(2τ) = {1 / (2 * tau):.4g}, and π_θ(y_w) + π_θ(y_l) = 1 fixes both probabilities.",
    )


__all__ = ["check_cdpo_margin", "check_ipo_rejected_prob"]
