"""Checkers for chapter 08's exercises (DPO against the RLHF pipeline; best-of-N as the no-training baseline).

* :func:`check_best_of_n_kl` — exercise 8.1: the exact mean KL(π_BoN ‖ π_ref) of best-of-N on the world.
* :func:`check_best_of_n_to_match` — exercise 8.2: the smallest N whose best-of-N reaches a target reward.

Both use the exact best-of-N policy of :func:`dpo_teach.baselines.best_of_n_policy` on the world's tables
``ref_logps`` and ``rewards`` ``[P, N]``, averaged uniformly over prompts as :mod:`dpo_teach.frontier` does.
"""

from __future__ import annotations

import math

from dpo_teach._validate import is_int
from dpo_teach.baselines import best_of_n_kl_bound, best_of_n_policy
from dpo_teach.exercises import Verdict, finite_number, first_slip
from dpo_teach.frontier import policy_point

KL_TOLERANCE = 1e-3  # nats
MAX_N = 4096  # exercise 8.2 searches N up to this many draws


def _count(name: str, value) -> int:
    if not is_int(value):
        raise TypeError(
            f"{name} must be an int (a number of draws), got {type(value).__name__}; pass e.g. {name}=8."
        )
    return value


def best_of_n_point(ref_logps, rewards, n: int) -> dict:
    """The exact reward–KL point of best-of-``n`` from π_ref (:func:`dpo_teach.frontier.policy_point`)."""
    return policy_point(best_of_n_policy(ref_logps, rewards, n), ref_logps, rewards)


def check_best_of_n_kl(answer, ref_logps, rewards, n) -> Verdict:
    """Exercise 8.1: is ``answer`` the mean KL(π_BoN ‖ π_ref) of best-of-``n`` (± :data:`KL_TOLERANCE`)?"""
    answer = finite_number("answer", answer)
    n = _count("n", n)
    if n < 1:
        raise ValueError(f"n={n} must be ≥ 1 (the number of draws).")
    truth = best_of_n_point(ref_logps, rewards, n)["kl"]
    bound = best_of_n_kl_bound(n)
    if abs(answer - truth) <= KL_TOLERANCE:
        return Verdict(
            True,
            f"KL(π_BoN‖π_ref) = {truth:.4f} nats for N = {n}, just under the bound log N − (N−1)/N = {bound:.4f}.",
        )
    slips = [
        (
            bound,
            "that is the bound log N − (N−1)/N; the exact KL is a little smaller — compute it from the policy.",
        ),
        (
            math.log(n),
            "log N is the KL of a policy that keeps 1/N of π_ref's mass; best-of-N is softer than that.",
        ),
    ]
    return first_slip(
        lambda value: abs(answer - value) <= KL_TOLERANCE,
        slips,
        f"{answer:.4f} is off; take best_of_n_policy(ref_logps, rewards, {n}) and average "
        "theory.kl_divergence(policy, ref_logps) over the prompts.",
    )


def check_best_of_n_to_match(answer, ref_logps, rewards, target_reward) -> Verdict:
    """Exercise 8.2: is ``answer`` the smallest N whose best-of-N reaches mean E[r] ≥ ``target_reward``?"""
    answer = _count("answer", answer)
    target_reward = finite_number("target_reward", target_reward)
    best = float(rewards.double().max(-1).values.mean())
    if target_reward >= best:
        raise ValueError(
            f"target_reward={target_reward} is not reachable: best-of-N's reward stays below the mean best "
            f"reward {best:.4f} for every N; pick a smaller target."
        )
    reward = lambda n: best_of_n_point(ref_logps, rewards, n)["expected_reward"]
    if answer < 1:
        return Verdict(False, f"N = {answer} is not a number of draws; N ≥ 1.")
    low, high = 1, 1
    while reward(high) < target_reward:  # doubling, then bisection: E_BoN[r] grows with N
        low, high = high + 1, high * 2
        if high > MAX_N:
            raise ValueError(
                f"target_reward={target_reward} needs more than {MAX_N} draws; pick a smaller target."
            )
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if reward(middle) < target_reward else (low, middle)
    if answer == low:
        return Verdict(
            True,
            f"N = {low}: best-of-{low} reaches E[r] = {reward(low):.4f} ≥ {target_reward:g} at "
            f"KL = {best_of_n_point(ref_logps, rewards, low)['kl']:.4f} nats; best-of-{low - 1} does not.",
        )
    if answer < low:
        return Verdict(
            False,
            f"best-of-{answer} reaches only E[r] = {reward(answer):.4f} < {target_reward:g}; "
            "more draws are needed.",
        )
    return Verdict(False, f"best-of-{answer} does reach it, but so does a smaller N; find the smallest.")


__all__ = ["best_of_n_point", "check_best_of_n_kl", "check_best_of_n_to_match"]
