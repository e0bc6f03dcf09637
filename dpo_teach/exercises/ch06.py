"""Checkers for chapter 06's exercises (DPO on the sequences world).

* :func:`check_loss_at_optimum` — exercise 6.1: the DPO loss that π*_β reaches on a set of preference pairs.
* :func:`check_implicit_reward_offset` — exercise 6.2: the per-prompt constant β log Z(x) by which the implicit
  reward of π*_β differs from the true reward.
"""

from __future__ import annotations

import math

import torch

from dpo_teach import theory
from dpo_teach._validate import check_normalised, check_positive, is_int
from dpo_teach.exercises import Verdict, finite_number


def _rewards_of_pairs(world, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """True rewards ``[n]`` (float64) of the chosen and the rejected response of every row."""
    if not hasattr(world, "true_reward"):
        raise TypeError(f"world must be a dpo_teach world with true_reward, got {type(world).__name__}.")
    rows = list(rows)
    if not rows or not all(isinstance(r, dict) and {"prompt", "chosen", "rejected"} <= set(r) for r in rows):
        raise ValueError(
            "rows must be non-empty preference rows with prompt/chosen/rejected, e.g. the dataset."
        )
    chosen = [world.true_reward(r["prompt"], r["chosen"]) for r in rows]
    rejected = [world.true_reward(r["prompt"], r["rejected"]) for r in rows]
    return torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)


def check_loss_at_optimum(answer, world, rows) -> Verdict:
    """Exercise 6.1: is ``answer`` the mean DPO loss of π*_β on ``rows``, i.e. mean −log σ(r(x,y_w) − r(x,y_l))?

    At π*_β the implicit reward is r(x, y) − β log Z(x); the constant cancels inside a pair, so the loss of a pair
    is the Bradley–Terry negative log-likelihood of the *true* reward, whatever β is. ``rows``: the preference
    rows (list of dicts or a ``datasets.Dataset``); ``world`` supplies the true reward.
    """
    answer = finite_number("answer", answer)
    r_w, r_l = _rewards_of_pairs(world, rows)
    margin = r_w - r_l
    truth = float(-torch.nn.functional.logsigmoid(margin).mean())
    close = lambda value: math.isclose(answer, value, rel_tol=1e-3, abs_tol=1e-4)  # noqa: E731
    if close(truth):
        return Verdict(True, f"{truth:.4f} nats: the labels are random, so even the true reward cannot bring the "
                       "loss to 0; DPO's loss plateaus here.")  # fmt: skip
    if close(math.log(2)):
        return Verdict(False, "ln 2 is the loss at the start, π_θ = π_ref, where every implicit reward is 0; the "
                       "exercise asks for the loss at π*.")  # fmt: skip
    if close(-truth):
        return Verdict(False, "wrong sign: the loss is −log σ(·), a positive number.")
    if close(float(torch.sigmoid(margin).mean())) or close(float(1 - torch.sigmoid(margin).mean())):
        return Verdict(False, "take the log: the loss of a pair is −log σ(r_w − r_l), averaged over pairs.")
    if close(float((margin > 0).double().mean())):
        return Verdict(False, "this is the accuracy of the true reward on the pairs, not the loss.")
    if close(float(-torch.nn.functional.logsigmoid(-margin).mean())):
        return Verdict(False, "chosen and rejected are swapped: use σ(r(chosen) − r(rejected)).")
    return Verdict(False, f"{answer:.4f} is not it. At π* the implicit-reward margin of a pair equals the true "
                   "reward margin r(x, y_w) − r(x, y_l): average −log σ of it over the rows.")  # fmt: skip


def check_implicit_reward_offset(answer, ref_logps, rewards, beta, prompt: int = 0) -> Verdict:
    """Exercise 6.2: is ``answer`` the constant r(x, y) − β log π*_β(y|x)/π_ref(y|x) = β log Z(x) of ``prompt``?

    Args: ``ref_logps`` and ``rewards`` ``[P, N]`` (e.g. ``world.logprobs(ref_model)``, ``world.reward_table``),
    ``beta`` > 0, ``prompt`` a row index. The truth is :func:`dpo_teach.theory.log_partition_function` times β.
    """
    answer = finite_number("answer", answer)
    beta = check_positive("beta", beta)
    check_normalised("ref_logps", ref_logps)
    if not isinstance(rewards, torch.Tensor) or rewards.shape != ref_logps.shape:
        raise ValueError(f"rewards must be a tensor of the shape of ref_logps {list(ref_logps.shape)}.")
    if not is_int(prompt) or not 0 <= prompt < ref_logps.shape[0]:
        raise ValueError(f"prompt={prompt!r} must be a row index in [0, {ref_logps.shape[0]}).")
    log_z = float(theory.log_partition_function(ref_logps[prompt].double(), rewards[prompt].double(), beta))
    truth = beta * log_z
    close = lambda value: math.isclose(answer, value, rel_tol=1e-3, abs_tol=1e-4)  # noqa: E731
    if close(truth):
        return Verdict(True, f"β log Z(x) = {truth:.4f}: the same for every response of the prompt, so it cancels "
                       "in every comparison.")  # fmt: skip
    if close(log_z):
        return Verdict(
            False, "this is log Z(x); the implicit reward carries a factor β, so the constant is β log Z."
        )
    if close(-truth):
        return Verdict(False, "wrong sign: r = β log π*/π_ref + β log Z, so r − β log π*/π_ref = +β log Z.")
    if close(math.exp(min(log_z, 700.0))):
        return Verdict(False, "this is Z(x) itself; take β times its logarithm.")
    if close(beta * float(torch.logsumexp(rewards[prompt].double() / beta, -1))):
        return Verdict(False, "Z(x) weights exp(r/β) by π_ref(y|x): Z = Σ_y π_ref(y|x) exp(r(x, y)/β).")
    return Verdict(False, f"{answer:.4f} is not it. Compute log Z(x) = log Σ_y π_ref(y|x) exp(r(x, y)/β) with "
                   "torch.logsumexp and multiply by β.")  # fmt: skip


__all__ = ["check_implicit_reward_offset", "check_loss_at_optimum"]
