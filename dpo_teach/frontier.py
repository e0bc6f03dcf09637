"""The reward–KL frontier: where π*_β lies for every β, exactly, on an enumerable world.

On an enumerable world (:class:`~dpo_teach.worlds.SequenceWorld`) π_ref is a table ``ref_logps`` ``[P, N]``
(every response of every prompt) and so is the true reward r ``[P, N]``. For each β the KL-regularised optimum
π*_β = π_ref exp(r/β)/Z (DPO paper, Eq. 4) is one point

    ( KL(π*_β ‖ π_ref),  E_{π*_β}[r] ),        each averaged uniformly over the P prompts,

and as β falls from ∞ to 0 the points trace a curve from π_ref, (0, E_{π_ref}[r]), towards the argmax of r.
No policy lies above it: for every π and β,

    E_π[r] − β KL(π ‖ π_ref) ≤ β log Z        (the Gibbs rewrite: the left side is β log Z − β KL(π ‖ π*_β)),

with equality only at π*_β, so at the same KL no policy collects more expected reward than π*_β — the curve is
the *frontier* of the reward–KL plane, the ceiling of the paper's Figure 2. Averaged over prompts with one β the
inequality still holds, so the averaged curve is the frontier of averaged points too.

* :func:`optimal_point` — β → π*_β's point (and its log-probs), in closed form with :mod:`dpo_teach.theory`.
* :func:`reward_kl_curve` — the whole curve for a grid of β at once.
* :func:`policy_point` — any policy's point; :func:`frontier_gap` — how far below the curve a point lies.
"""

from __future__ import annotations

import torch

from dpo_teach._validate import check_positive
from dpo_teach.theory import expected_reward, kl_divergence, log_partition_function, optimal_policy

#: The β grid of :func:`reward_kl_curve` by default: 241 values, log-spaced over [0.01, 100].
DEFAULT_BETAS = torch.logspace(-2, 2, 241, dtype=torch.float64)


def _tables(ref_logps, rewards) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 copies of ``ref_logps`` and ``rewards`` after the checks :mod:`dpo_teach.theory` makes."""
    for name, value in (("ref_logps", ref_logps), ("rewards", rewards)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 2:
            raise TypeError(
                f"{name} must be a 2-D float tensor [prompts, responses] (e.g. world.logprobs(ref_model) and "
                f"world.reward_table), got {getattr(value, 'shape', type(value).__name__)}."
            )
    if ref_logps.shape != rewards.shape:
        raise ValueError(
            f"ref_logps {list(ref_logps.shape)} and rewards {list(rewards.shape)} must have the same shape."
        )
    return ref_logps.double(), rewards.double()


def policy_point(policy_logps, ref_logps, rewards) -> dict:
    """Any policy's point in the reward–KL plane: ``kl`` = mean_x KL(π(·|x) ‖ π_ref(·|x)) (nats) and
    ``expected_reward`` = mean_x E_{π(·|x)}[r(x, ·)]. All three tables ``[P, N]`` (log-probs normalised per row)."""
    ref_logps, rewards = _tables(ref_logps, rewards)
    policy_logps, _ = _tables(policy_logps, rewards)
    return {
        "kl": float(kl_divergence(policy_logps, ref_logps).mean()),
        "expected_reward": float(expected_reward(policy_logps, rewards).mean()),
    }


def optimal_point(ref_logps, rewards, beta: float) -> dict:
    """π*_β's point on the reward–KL curve, in closed form.

    Args:
        ref_logps: ``[P, N]`` log π_ref(y|x) over every response of every prompt.
        rewards: ``[P, N]`` the true reward r(x, y).
        beta: the KL coefficient β > 0.

    Returns a dict: ``beta``; ``kl`` = mean_x KL(π*_β ‖ π_ref); ``expected_reward`` = mean_x E_{π*_β}[r];
    ``objective`` = mean_x β log Z(x) (= expected_reward − β·kl, the value of the RLHF objective at its optimum);
    ``log_policy`` ``[P, N]`` float64 log π*_β.
    """
    beta = check_positive("beta", beta)
    ref_logps, rewards = _tables(ref_logps, rewards)
    log_policy = optimal_policy(ref_logps, rewards, beta)
    return {
        "beta": beta,
        "kl": float(kl_divergence(log_policy, ref_logps).mean()),
        "expected_reward": float(expected_reward(log_policy, rewards).mean()),
        "objective": beta * float(log_partition_function(ref_logps, rewards, beta).mean()),
        "log_policy": log_policy,
    }


def reward_kl_curve(ref_logps, rewards, betas=None) -> dict:
    """The exact reward–KL curve of π*_β: ``beta``, ``kl``, ``expected_reward``, ``objective``, float64 ``[M]``,
    one :func:`optimal_point` per β of ``betas`` (a 1-D tensor of β > 0; default :data:`DEFAULT_BETAS`)."""
    betas = DEFAULT_BETAS if betas is None else betas
    if not isinstance(betas, torch.Tensor) or betas.dim() != 1 or betas.numel() == 0:
        raise ValueError(
            "betas must be a non-empty 1-D tensor of β values > 0, e.g. torch.logspace(-2, 2, 100)."
        )
    points = [optimal_point(ref_logps, rewards, float(b)) for b in betas.tolist()]
    keys = ("beta", "kl", "expected_reward", "objective")
    return {k: torch.tensor([p[k] for p in points], dtype=torch.float64) for k in keys}


def frontier_gap(kl: float, reward: float, curve: dict) -> float:
    """How far below the π*_β curve the point (``kl``, ``reward``) lies, in reward units (≥ 0 for every policy).

    ``curve``: a :func:`reward_kl_curve` (its ``beta`` and ``objective``). Every policy satisfies
    E_π[r] ≤ mean_x β log Z_β(x) + β·KL(π‖π_ref) for *every* β (equality at π*_β), so the smallest of these
    upper bounds over the curve's β grid is the curve's height at that KL (a supporting line of the concave
    curve; on a finite grid slightly above it); the gap is that height minus ``reward``. A negative gap would mean
    a policy above the frontier, which the Gibbs rewrite rules out.
    """
    if not isinstance(curve, dict) or "objective" not in curve or "beta" not in curve:
        raise TypeError("curve must be the dict returned by reward_kl_curve(ref_logps, rewards, betas).")
    ceiling = curve["objective"] + curve["beta"] * float(kl)
    return float(ceiling.min()) - float(reward)


__all__ = ["DEFAULT_BETAS", "frontier_gap", "optimal_point", "policy_point", "reward_kl_curve"]
