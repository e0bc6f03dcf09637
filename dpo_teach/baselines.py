"""Best-of-N sampling, exactly: the policy that draws N responses from π_ref and keeps the best one.

Best-of-N is the simplest way to spend a reward model without training: sample N responses from π_ref,
score them, return the highest. On an enumerable world its output distribution has a closed form. Sort
the responses by reward and let F(r) = Σ_{r(y') ≤ r} π_ref(y') be the reference CDF of the reward. The
maximum of N i.i.d. draws has CDF F(r)^N, so the group G of responses sharing reward r is selected with
probability F(r)^N − F(r⁻)^N, where F(r⁻) = Σ_{r(y') < r} π_ref(y'). Ties are broken uniformly among the
N draws, so inside G the winner is distributed like π_ref restricted to G:

    π_BoN(y) = π_ref(y) / π_ref(G) · (F(r)^N − F(r⁻)^N),        r = r(y), G = {y' : r(y') = r}.

Its KL to the reference obeys KL(π_BoN ‖ π_ref) ≤ log N − (N − 1)/N (Beirami et al., 2024, "Theoretical
guarantees on the best-of-n alignment policy"), with equality in the limit of many responses with
distinct rewards — the analytic formula often quoted for best-of-N.

:func:`best_of_n_policy` is that closed form on an enumerable world; :func:`best_of_n_sample` is the procedure
itself, for any model and reward (e.g. on the reviews world, where responses cannot be enumerated).
"""

from __future__ import annotations

import math

import torch

from dpo_teach._validate import is_int


def best_of_n_policy(ref_logps: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Exact log-probabilities of best-of-``n`` sampling from π_ref, per prompt.

    Args:
        ref_logps: ``[..., K]`` log π_ref(y | x) over all K responses of each prompt (each row sums to 1
            in probability, e.g. ``world.logprobs(ref_model)``).
        rewards: ``[..., K]`` the reward r(x, y) that picks the best draw (e.g. ``world.reward_table``).
        n: number of draws, ``n >= 1`` (``n = 1`` returns π_ref).

    Returns:
        ``[..., K]`` float32 log π_BoN(y | x) = log π_ref(y) + log Σ_{k<n} F(r)^k F(r⁻)^(n−1−k), the
        module docstring's formula with (F^n − F⁻^n)/π_ref(G) expanded (no division by a small group
        mass); computed in float64, memory ``[..., K, n]``.
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the number of draws), got {n!r}; pass e.g. n=4.")
    if not torch.is_tensor(ref_logps) or not torch.is_tensor(rewards):
        raise TypeError("ref_logps and rewards must be torch tensors of shape [..., K].")
    if ref_logps.shape != rewards.shape or ref_logps.dim() == 0:
        raise ValueError(
            f"ref_logps {tuple(ref_logps.shape)} and rewards {tuple(rewards.shape)} must have the same "
            "shape [..., K] (one entry per response)."
        )
    p = ref_logps.double().exp()
    if not torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype), atol=1e-4):
        raise ValueError("ref_logps must be normalised: exp(ref_logps).sum(-1) should be 1 for every prompt.")
    p = p / p.sum(-1, keepdim=True)
    r = rewards.double().contiguous()
    sorted_r, order = r.sort(dim=-1)
    cum = torch.nn.functional.pad(p.gather(-1, order).cumsum(-1), (1, 0))  # cum[..., j] = mass of j lowest
    cdf = cum.gather(-1, torch.searchsorted(sorted_r, r, right=True)).clamp(0.0, 1.0)  # F(r)
    cdf_below = cum.gather(-1, torch.searchsorted(sorted_r, r, right=False)).clamp(0.0, 1.0)  # F(r⁻)
    # (F^n − F⁻^n) / π_ref(G) = Σ_{k<n} F^k F⁻^(n−1−k): the division by a tiny group mass never happens
    k = torch.arange(n, dtype=p.dtype, device=p.device)
    ratio = (cdf.unsqueeze(-1).pow(k) * cdf_below.unsqueeze(-1).pow(n - 1 - k)).sum(-1)
    probs = p * ratio
    probs = probs / probs.sum(-1, keepdim=True)  # removes float rounding only
    return probs.log().float()


def best_of_n_sample(
    model,
    tokenizer,
    prompts: list[str],
    reward,
    n: int,
    *,
    max_new_tokens: int,
    stop_token_id=None,
    allowed_token_ids=None,
    seed: int = 0,
) -> tuple[list[str], torch.Tensor]:
    """Best-of-``n`` sampling: ``n`` responses per prompt from ``model``, keep the one ``reward`` scores highest.

    ``reward``: a :class:`~dpo_teach.trainers.reward.RewardModel` or a callable ``(prompts, responses) -> [B]``
    (:mod:`dpo_teach.trainers.rollouts`). Sampling follows :func:`~dpo_teach.trainers.rollouts.sample_completions`
    (the world's policy with ``allowed_token_ids``; seeded by ``seed``). Ties go to the first drawn of the tied
    responses, which — the draws being i.i.d. — is a uniform choice among them, as :func:`best_of_n_policy`
    assumes. Returns the chosen response texts (one per prompt) and their scores, float32 ``[len(prompts)]``.
    """
    from dpo_teach.data import encode_prompt
    from dpo_teach.trainers.rollouts import as_reward_fn, call_reward, check_prompts, sample_completions

    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the number of draws), got {n!r}; pass e.g. n=4.")
    check_prompts(prompts)
    repeated = [p for p in prompts for _ in range(n)]  # prompt i's draws are rows i·n … i·n + n − 1
    ids = [encode_prompt(tokenizer, p) for p in repeated]
    _, texts = sample_completions(
        model,
        tokenizer,
        ids,
        max_new_tokens=max_new_tokens,
        stop_token_id=stop_token_id,
        allowed_token_ids=allowed_token_ids,
        seed=seed,
    )
    scores = call_reward(as_reward_fn(reward, tokenizer), repeated, texts).view(len(prompts), n)
    best = scores.argmax(-1)  # the first maximum
    chosen = [texts[i * n + int(j)] for i, j in enumerate(best)]
    return chosen, scores.gather(-1, best[:, None]).squeeze(-1)


def best_of_n_kl_bound(n: int) -> float:
    """The bound KL(π_BoN ‖ π_ref) ≤ log n − (n − 1)/n, in nats."""
    if not is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int (the number of draws), got {n!r}; pass e.g. n=4.")
    return math.log(n) - (n - 1) / n


__all__ = ["best_of_n_kl_bound", "best_of_n_policy", "best_of_n_sample"]
