"""Closed forms of the DPO derivation, on discrete distributions, in log space.

Shapes: the *last* dimension indexes responses y; any leading dimensions are batch dimensions (e.g. prompts x),
so ``ref_logps`` ``[X, K]`` holds log π_ref(y|x) for K responses to each of X prompts. Log-probs may be
``-inf`` (a response of probability zero); rewards must be finite.

The central result (DPO paper, Eq. 4): the policy maximising the KL-regularised objective

    max_π  E_{y~π}[r(x, y)] − β KL(π(·|x) ‖ π_ref(·|x))

is π*(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x), with Z(x) = Σ_y π_ref(y|x) exp(r(x, y)/β).

Everything is computed in float64 internally (r/β reaches 1e7 for β = 1e-4 and rewards of 1e3, where float32
spacing is 1) and returned in the inputs' dtype; log Z and log π* use logsumexp, so nothing overflows.
"""

from __future__ import annotations

import torch

from dpo_teach._validate import (
    check_finite,
    check_float_tensors,
    check_logps,
    check_normalised,
    check_positive,
    check_preference_logps,
    check_tensor,
)


def _rewards(name: str, value) -> torch.Tensor:
    return check_finite(name, check_tensor(name, value))


def _out_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _log_z64(ref_logps, rewards, beta) -> torch.Tensor:
    """log Z in float64 (not rounded to the inputs' dtype: at r/β = 1e7 float32 would round it to ±1)."""
    check_logps("ref_logps", ref_logps)
    _rewards("rewards", rewards)
    beta = check_positive("beta", beta)
    return torch.logsumexp(ref_logps.double() + rewards.double() / beta, dim=-1)


def log_partition_function(ref_logps, rewards, beta) -> torch.Tensor:
    """log Z(x) = log Σ_y π_ref(y|x) exp(r(x, y)/β), shape = leading dims of the broadcast inputs."""
    return _log_z64(ref_logps, rewards, beta).to(_out_dtype(ref_logps, rewards))


def partition_function(ref_logps, rewards, beta) -> torch.Tensor:
    """Z(x) = Σ_y π_ref(y|x) exp(r(x, y)/β). Overflows for small β; prefer :func:`log_partition_function`."""
    return log_partition_function(ref_logps, rewards, beta).exp()


def optimal_policy(ref_logps, rewards, beta) -> torch.Tensor:
    """log π*(y|x) = log π_ref(y|x) + r(x, y)/β − log Z(x), normalised over the last dimension.

    β → ∞ gives π_ref; β → 0 puts all the mass on argmax_y r (among responses π_ref can produce).
    """
    log_z = _log_z64(ref_logps, rewards, beta)
    logits = ref_logps.double() + rewards.double() / float(beta)
    return (logits - log_z.unsqueeze(-1)).to(_out_dtype(ref_logps, rewards))


def kl_divergence(p_logps, q_logps) -> torch.Tensor:
    """KL(p ‖ q) = Σ_y p(y) (log p(y) − log q(y)) over the last dimension (0 · log 0 = 0; inf where q = 0 < p)."""
    check_normalised("p_logps", p_logps)
    check_normalised("q_logps", q_logps)
    p = p_logps.double().exp()
    terms = torch.where(p > 0, p * (p_logps.double() - q_logps.double()), torch.zeros_like(p))
    return terms.sum(-1).to(_out_dtype(p_logps, q_logps))


def expected_reward(policy_logps, rewards) -> torch.Tensor:
    """E_{y~π}[r(x, y)] = Σ_y π(y|x) r(x, y) over the last dimension."""
    check_normalised("policy_logps", policy_logps)
    _rewards("rewards", rewards)
    value = (policy_logps.double().exp() * rewards.double()).sum(-1)
    return value.to(_out_dtype(policy_logps, rewards))


def rlhf_objective(policy_logps, ref_logps, rewards, beta) -> torch.Tensor:
    """J(π) = E_{y~π}[r(x, y)] − β KL(π(·|x) ‖ π_ref(·|x)), the objective :func:`optimal_policy` maximises.

    At the optimum J(π*) = β log Z(x); in general J(π) = β log Z(x) − β KL(π ‖ π*) (the Gibbs rewrite).
    """
    beta = check_positive("beta", beta)
    return expected_reward(policy_logps, rewards) - beta * kl_divergence(policy_logps, ref_logps)


def bradley_terry_prob(reward_chosen, reward_rejected) -> torch.Tensor:
    """P(y_w ≻ y_l | x) = exp(r_w) / (exp(r_w) + exp(r_l)) = σ(r_w − r_l) (DPO paper, Eq. 1), elementwise."""
    check_float_tensors(reward_chosen=reward_chosen, reward_rejected=reward_rejected)
    return torch.sigmoid(reward_chosen - reward_rejected)


def plackett_luce_logprob(rewards, ranking) -> torch.Tensor:
    """log P(τ | x) = Σ_k [r(y_τ(k)) − log Σ_{j ≥ k} exp r(y_τ(j))] (DPO paper, Eq. 18), shape = leading dims.

    ``rewards`` ``[..., K]``; ``ranking`` long ``[..., m]`` with m ≤ K distinct indices, best first. For m < K
    (a top-m ranking) the unranked responses stay in every denominator. K = 2, m = 1 is Bradley–Terry.
    """
    _rewards("rewards", rewards)
    if not isinstance(ranking, torch.Tensor) or ranking.is_floating_point() or ranking.dtype == torch.bool:
        raise TypeError("ranking must be an integer torch.Tensor of response indices, best first.")
    k = rewards.shape[-1]
    if ranking.shape[:-1] != rewards.shape[:-1] or not 1 <= ranking.shape[-1] <= k:
        raise ValueError(
            f"ranking must have shape [..., m] with leading dims {list(rewards.shape[:-1])} and m <= {k}."
        )
    if bool(((ranking < 0) | (ranking >= k)).any()):
        raise ValueError(f"ranking holds indices outside [0, {k}).")
    sorted_ranking = ranking.sort(-1).values
    if bool((sorted_ranking[..., 1:] == sorted_ranking[..., :-1]).any()):
        raise ValueError("ranking repeats a response; each index may appear once.")
    r = rewards.double()
    remaining = torch.ones_like(r, dtype=torch.bool)
    total = torch.zeros(r.shape[:-1], dtype=torch.float64, device=r.device)
    for step in range(ranking.shape[-1]):
        idx = ranking[..., step : step + 1]
        total = (
            total + r.gather(-1, idx).squeeze(-1) - torch.logsumexp(r.masked_fill(~remaining, -torch.inf), -1)
        )
        remaining = remaining.scatter(-1, idx, False)
    return total.to(rewards.dtype)


def implicit_reward(policy_logps, ref_logps, beta) -> torch.Tensor:
    """r̂(x, y) = β log π_θ(y|x)/π_ref(y|x) (DPO paper, Sec. 5): the reward a policy implicitly defines.

    It equals the true reward up to β log Z(x), a per-prompt constant that Bradley–Terry ignores.
    """
    check_float_tensors(policy_logps=policy_logps, ref_logps=ref_logps)
    return check_positive("beta", beta) * (policy_logps - ref_logps)


def dpo_gradient_weight(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
):
    """σ(r̂_l − r̂_w): how strongly the DPO gradient (paper, Sec. 4) weighs a pair - large when the implicit
    reward ranks it wrongly. ∂L_DPO/∂log π_θ(y_w) = −β σ(r̂_l − r̂_w) and ∂L_DPO/∂log π_θ(y_l) = +β σ(r̂_l − r̂_w).
    """
    check_preference_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    beta = check_positive("beta", beta)
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return torch.sigmoid(-beta * margin)


__all__ = [
    "bradley_terry_prob",
    "dpo_gradient_weight",
    "expected_reward",
    "implicit_reward",
    "kl_divergence",
    "log_partition_function",
    "optimal_policy",
    "partition_function",
    "plackett_luce_logprob",
    "rlhf_objective",
]
