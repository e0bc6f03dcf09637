"""RSO's statistical rejection sampling (Liu et al., 2023): samples of π*_β drawn from π_ref and a reward.

π*_β(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x) (chapter 02) is π_ref reweighted by exp(r/β). Rejection sampling
turns that weight into a coin: draw y ~ π_ref, accept it with probability

    a(y) = exp((r(x, y) − M)/β),     M ≥ max_y r(x, y)  (so that a ≤ 1),

and the accepted y are distributed as π_ref(y) a(y) / Σ_y' π_ref(y') a(y') = π*_β(y|x): the constant e^{−M/β}
cancels in the normalisation. The price is the acceptance rate Σ_y π_ref(y) a(y) = Z(x) e^{−M/β}, small when β
is small (π*_β far from π_ref). RSO then builds preference pairs from accepted samples, labels them with the
reward (its "sample-rank" variant) and trains DPO (or the hinge loss) on them — so the pairs sit where π*_β puts
its mass rather than where π_ref does.

* :func:`acceptance_probability` — a(y) for a table of rewards;
* :func:`acceptance_distribution` — the exact distribution of an accepted sample on an enumerable world, and
  the acceptance rate (both checked against π*_β by the tests);
* :func:`rejection_sample` — the procedure on a ``[P, N]`` table world: accepted indices per prompt and the
  number of candidates (reward calls) it took;
* :func:`rso_preference_pairs` — pairs of accepted samples labelled by Bradley–Terry, in TRL's row format.

``M`` is the largest reward of each prompt's row (known exactly on an enumerable world; with a finite batch of
candidates the paper uses their maximum, which biases the result slightly towards π_ref).
"""

from __future__ import annotations

import torch

from dpo_teach._validate import check_positive
from dpo_teach.worlds.base import check_count, check_seed


def _max_reward(rewards: torch.Tensor, max_reward) -> torch.Tensor:
    """M per row ``[..., 1]``: ``max_reward`` (a number or ``[..., 1]`` tensor ≥ every reward) or the row max."""
    if max_reward is None:
        return rewards.max(-1, keepdim=True).values
    m = torch.as_tensor(max_reward, dtype=rewards.dtype)
    if bool((rewards > m + 1e-9).any()):
        raise ValueError(
            "max_reward must be ≥ every reward (a(y) = exp((r − M)/β) is a probability); pass max_reward=None "
            "to use each prompt's largest reward."
        )
    return m


def acceptance_probability(rewards: torch.Tensor, beta: float, max_reward=None) -> torch.Tensor:
    """a(y) = exp((r(y) − M)/β) ∈ (0, 1], same shape as ``rewards`` ``[..., N]`` (M: :func:`_max_reward`)."""
    beta = check_positive("beta", beta)
    if not torch.is_tensor(rewards) or not rewards.is_floating_point() or rewards.dim() == 0:
        raise TypeError("rewards must be a float tensor [..., N] of rewards (e.g. world.reward_table).")
    return torch.exp((rewards - _max_reward(rewards, max_reward)) / beta)


def acceptance_distribution(
    ref_logps, rewards, beta: float, max_reward=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact law of an accepted sample when candidates come from π_ref, float64.

    ``ref_logps``, ``rewards``: ``[P, N]``. Returns ``(log_accepted [P, N], rate [P])`` with
    log_accepted = log π_ref + log a − log Σ_y π_ref a  (which equals log π*_β) and rate = Σ_y π_ref(y) a(y).
    """
    if ref_logps.shape != rewards.shape:
        raise ValueError(f"ref_logps {list(ref_logps.shape)} and rewards {list(rewards.shape)} must match.")
    log_joint = ref_logps.double() + acceptance_probability(rewards.double(), beta, max_reward).log()
    log_rate = torch.logsumexp(log_joint, -1, keepdim=True)
    return log_joint - log_rate, log_rate.squeeze(-1).exp()


def rejection_sample(ref_logps, rewards, beta: float, n_per_prompt: int, seed: int = 0, max_reward=None):
    """Draw candidates y ~ π_ref(·|x) and keep each with probability a(y) until ``n_per_prompt`` are accepted.

    ``ref_logps``, ``rewards``: ``[P, N]`` tables. Returns ``(accepted [P, n_per_prompt] long indices,
    candidates [P] long)``: the accepted responses in the order drawn and how many candidates each prompt took
    (each needs one reward evaluation). Candidates are drawn in chunks sized by the exact acceptance rate.
    """
    check_count("n_per_prompt", n_per_prompt)
    generator = check_seed(seed)
    accept = acceptance_probability(rewards.double(), beta, max_reward)
    _, rate = acceptance_distribution(ref_logps, rewards, beta, max_reward)
    probs = ref_logps.double().exp()
    accepted, candidates = [], torch.zeros(len(probs), dtype=torch.long)
    for p in range(len(probs)):
        kept, chunk = [], int(1.2 * n_per_prompt / float(rate[p])) + 16
        while len(kept) < n_per_prompt:
            y = torch.multinomial(probs[p], chunk, replacement=True, generator=generator)
            coins = torch.rand(chunk, generator=generator, dtype=torch.float64) < accept[p, y]
            hits = coins.nonzero().flatten()[: n_per_prompt - len(kept)]
            kept.extend(y[hits].tolist())
            # a sequential sampler stops at the last acceptance it needs: later candidates are never scored
            candidates[p] += int(hits[-1]) + 1 if len(kept) == n_per_prompt else chunk
        accepted.append(torch.tensor(kept))
    return torch.stack(accepted), candidates


def rso_preference_pairs(
    world, ref_logps, rewards, beta: float, n: int, *, label_rewards=None, seed: int = 0
):
    """``n`` preference rows built from accepted samples (:func:`rejection_sample` with ``rewards``).

    Prompts are drawn uniformly (as :meth:`~dpo_teach.worlds.base.World.preference_pairs`); each pair is two
    accepted samples of its prompt, different from each other (identical ones carry no preference and are
    skipped), labelled by Bradley–Terry with ``label_rewards`` ``[P, N]`` (default ``rewards``): chosen = y1
    with probability σ(r(y1) − r(y2)). Returns ``(rows, stats)``; ``stats``: ``candidates`` (reward calls of
    the sampling), ``accepted`` (samples used), ``skipped`` (identical pairs).
    """
    check_count("n", n)
    label_rewards = rewards if label_rewards is None else label_rewards
    generator = check_seed(seed)
    prompt_index = torch.randint(len(world.prompts), (n,), generator=generator)
    need = torch.bincount(prompt_index, minlength=len(world.prompts))
    rows, stats = [], {"candidates": 0, "accepted": 0, "skipped": 0}
    for p in range(len(world.prompts)):
        pairs, draw = [], 0
        while len(pairs) < int(need[p]):
            k = 2 * (int(need[p]) - len(pairs)) + 8
            samples, used = rejection_sample(
                ref_logps[p : p + 1], rewards[p : p + 1], beta, k, seed=seed + 1000 * p + draw
            )
            draw += 1
            stats["candidates"] += int(used)
            stats["accepted"] += k
            for y1, y2 in samples[0].view(-1, 2).tolist():
                if y1 == y2:
                    stats["skipped"] += 1
                elif len(pairs) < int(need[p]):
                    pairs.append((y1, y2))
        for y1, y2 in pairs:
            margin = label_rewards[p, y1].double() - label_rewards[p, y2].double()
            first_wins = bool(
                torch.rand((), generator=generator, dtype=torch.float64) < torch.sigmoid(margin)
            )
            win, lose = (y1, y2) if first_wins else (y2, y1)
            rows.append(
                {
                    "prompt": world.prompts[p],
                    "chosen": world.responses[win],
                    "rejected": world.responses[lose],
                }
            )
    order = torch.randperm(len(rows), generator=generator).tolist()  # interleave the prompts again
    return [rows[i] for i in order], stats


__all__ = ["acceptance_distribution", "acceptance_probability", "rejection_sample", "rso_preference_pairs"]
