"""Iterative (online) DPO: rounds of sampling pairs from the *current* policy, labelling them, a few DPO steps.

Offline DPO fits its pairs wherever they came from; its fixed point is π*_β only where the pairs cover the
responses π*_β cares about (chapter 07). Iterating moves the data with the policy. Round t = 1 … T:

1. **Sample.** Draw ``pairs_per_round`` prompts uniformly and two responses y1, y2 ~ π_θ(·|x) for each from the
   current policy (:func:`dpo_teach.trainers.rollouts.sample_completions`; identical pairs carry no preference,
   so they are redrawn, and never sent to the judge).
2. **Label.** A *judge* scores both responses — the world's true reward (an oracle labeller), or a learned
   :class:`~dpo_teach.trainers.reward.RewardModel` (an AI judge) — and the winner is drawn by Bradley–Terry,
   chosen = y1 with probability σ(s(y1) − s(y2)) (``deterministic=True``: the higher score wins).
3. **Train.** DPO on this round's pairs against the *fixed* π_ref (:func:`dpo_teach.trainers.dpo.train_dpo`, the
   package's loss and step; a fresh optimizer each round), so every round optimises the same objective
   E[r] − β KL(π_θ ‖ π_ref) and the fixed point is still π*_β.

Returns one dict per round: ``round``, ``labels`` (pairs labelled so far), ``judge_calls`` (responses scored
so far, two per label), ``redrawn`` (identical pairs redrawn this round), ``loss`` (the round's last DPO loss),
``steps`` (DPO steps so far), ``pairs`` (the round's labelled rows). ``callback(info, policy)`` after each round,
e.g. to evaluate the policy exactly.
"""

from __future__ import annotations

import torch

from dpo_teach._validate import check_positive
from dpo_teach.data import encode_prompt
from dpo_teach.seed import seed_everything
from dpo_teach.trainers.dpo import train_dpo
from dpo_teach.trainers.rollouts import as_reward_fn, call_reward, check_prompts, sample_completions


def sample_on_policy_pairs(policy, tokenizer, prompts, n, generator, *, max_new_tokens, stop_token_id=None,
                           allowed_token_ids=None):  # fmt: skip
    """``n`` prompts drawn uniformly and two *different* responses to each, both sampled from ``policy``.

    Returns ``(prompt_texts, first, second, redrawn)``: three lists of ``n`` strings and the number of
    identical pairs that were redrawn. Each pass samples all missing pairs at once.
    """
    which = torch.randint(len(prompts), (n,), generator=generator).tolist()
    ids = [encode_prompt(tokenizer, prompts[i]) for i in which]
    first, second, redrawn = [None] * n, [None] * n, 0
    todo = list(range(n))
    while todo:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        doubled = [ids[i] for i in todo for _ in range(2)]
        tokens, texts = sample_completions(
            policy, tokenizer, doubled, max_new_tokens=max_new_tokens, stop_token_id=stop_token_id,
            allowed_token_ids=allowed_token_ids, seed=seed,
        )  # fmt: skip
        missing = []
        for j, i in enumerate(todo):
            if tokens[2 * j] == tokens[2 * j + 1]:
                missing.append(i)
            else:
                first[i], second[i] = texts[2 * j], texts[2 * j + 1]
        redrawn += len(missing)
        todo = missing
    return [prompts[i] for i in which], first, second, redrawn


def label_pairs(judge_fn, prompt_texts, first, second, generator, deterministic: bool = False) -> list[dict]:
    """Bradley–Terry labels from a judge: rows ``{prompt, chosen, rejected}``, chosen = first with probability
    σ(s(first) − s(second)) (``deterministic``: when s(first) > s(second), a fair coin on ties)."""
    scores = call_reward(judge_fn, prompt_texts + prompt_texts, first + second).double()
    margin = scores[: len(first)] - scores[len(first) :]
    coin = torch.rand(len(first), generator=generator, dtype=torch.float64)
    if deterministic:
        first_wins = (margin > 0) | ((margin == 0) & (coin < 0.5))
    else:
        first_wins = coin < torch.sigmoid(margin)
    return [
        {"prompt": x, "chosen": a if win else b, "rejected": b if win else a}
        for x, a, b, win in zip(prompt_texts, first, second, first_wins.tolist(), strict=True)
    ]


def train_iterative_dpo(
    policy,
    tokenizer,
    prompts,
    judge,
    *,
    ref_model,
    rounds: int = 4,
    pairs_per_round: int = 2000,
    beta: float = 0.1,
    max_new_tokens: int = 16,
    stop_token_id=None,
    allowed_token_ids=None,
    deterministic: bool = False,
    seed: int = 0,
    progress: bool = True,
    callback=None,
    **dpo_options,
) -> list[dict]:
    """Train ``policy`` in place by ``rounds`` rounds of online DPO (module docstring) against ``ref_model``.

    ``judge``: a :class:`RewardModel` or a callable ``(prompts, responses) -> tensor [B]``; ``dpo_options``:
    :class:`~dpo_teach.trainers.dpo.DPOConfig` fields for every round (e.g. ``lr``, ``epochs``, ``batch_size``).
    Labels used in all: ``rounds · pairs_per_round``. Returns the per-round history.
    """
    for name in ("rounds", "pairs_per_round", "max_new_tokens"):
        check_positive(name, locals()[name], int)
    check_prompts(prompts)
    if ref_model is None or ref_model is policy:
        raise ValueError("ref_model must be a frozen copy of π_ref, not None or the policy itself.")
    judge_fn = as_reward_fn(judge, tokenizer)
    generator = seed_everything(seed)
    history, steps = [], 0
    for t in range(1, rounds + 1):
        policy.eval()
        sampled = sample_on_policy_pairs(
            policy, tokenizer, prompts, pairs_per_round, generator, max_new_tokens=max_new_tokens,
            stop_token_id=stop_token_id, allowed_token_ids=allowed_token_ids,
        )  # fmt: skip
        rows = label_pairs(judge_fn, *sampled[:3], generator, deterministic)
        dpo_history = train_dpo(
            policy, tokenizer, rows, ref_model=ref_model, beta=beta, seed=seed + t,
            allowed_token_ids=allowed_token_ids, progress=progress, **dpo_options,
        )  # fmt: skip
        steps += len(dpo_history)
        info = {"round": t, "labels": t * pairs_per_round, "judge_calls": 2 * t * pairs_per_round,
                "redrawn": sampled[3], "loss": dpo_history[-1]["loss"], "steps": steps, "pairs": rows}  # fmt: skip
        history.append(info)
        if callback is not None:
            callback(info, policy)
    policy.eval()
    return history


__all__ = ["label_pairs", "sample_on_policy_pairs", "train_iterative_dpo"]
