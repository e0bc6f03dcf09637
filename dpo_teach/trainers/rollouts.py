"""Sampling responses from a policy and scoring them: what PPO's, RLOO/GRPO's and online DPO's rollouts and
best-of-N sampling share, and the set-up before an on-policy trainer's first step.

A *reward* here is either a :class:`~dpo_teach.trainers.reward.RewardModel` (scored on the decoded text, tokenised
exactly as in its training) or any callable ``(prompts, responses) -> tensor [B]`` — e.g. a world's true reward
``lambda ps, ys: torch.tensor([world.true_reward(p, y) for p, y in zip(ps, ys)])``.
"""

from __future__ import annotations

import copy

import torch

from dpo_teach.data import encode_prompt
from dpo_teach.models import sample_token_ids
from dpo_teach.seed import seed_everything
from dpo_teach.trainers.common import prepare_model
from dpo_teach.trainers.reward import RewardModel


def check_prompts(prompts) -> list[str]:
    """``prompts`` if it is a non-empty list of strings (the prompts an on-policy trainer draws from)."""
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a non-empty list of strings (e.g. world.prompts).")
    return prompts


def prepare_on_policy(policy, tokenizer, prompts, reward, ref_model, cfg):
    """What PPO, RLOO and GRPO do before their first step, in this order: the reward as a function, the seeded
    generator, π_ref (a frozen copy of ``policy`` when None) in eval mode, the policy in train mode, the
    prompts' token ids. Returns ``(policy, ref_model, reward_fn, generator, prompt_ids)``."""
    reward_fn = as_reward_fn(reward, tokenizer)
    generator = seed_everything(cfg.seed)
    ref_model = copy.deepcopy(policy) if ref_model is None else ref_model
    prepare_model(ref_model, cfg.device, train=False)
    policy = prepare_model(policy, cfg.device, train=True)
    return policy, ref_model, reward_fn, generator, [encode_prompt(tokenizer, p) for p in prompts]


def sample_completions(
    model, tokenizer, prompt_ids, *, max_new_tokens, stop_token_id=None, allowed_token_ids=None, seed=0
) -> tuple[list[list[int]], list[str]]:
    """Sample one response per prompt (token-id lists) from ``model``; returns ``(completion_ids, texts)``.

    Tokens are drawn from the world's policy when ``allowed_token_ids`` is given (:func:`dpo_teach.models.
    sample_token_ids`, seeded by ``seed``). A response ends at ``stop_token_id`` (None: the tokenizer's EOS),
    which is kept as its last token because the policy chose it, or after ``max_new_tokens`` tokens.
    ``texts`` are the decoded responses without special tokens (a non-special stop word stays in the text).
    """
    stop = stop_token_id if stop_token_id is not None else tokenizer.eos_token_id
    sampled = sample_token_ids(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop,
        allowed_token_ids=allowed_token_ids,
        seed=seed,
    )
    # sample_token_ids strips the stop token: a response shorter than max_new_tokens ended with it
    completions = [y + [stop] if len(y) < max_new_tokens else y for y in sampled]
    return completions, [tokenizer.decode(y, skip_special_tokens=True) for y in completions]


def as_reward_fn(reward, tokenizer):
    """``reward`` as a callable ``(prompts, responses) -> scores``; a :class:`RewardModel` is wrapped."""
    if isinstance(reward, RewardModel):
        return lambda prompts, responses: reward.score(tokenizer, prompts, responses)
    if not callable(reward):
        raise TypeError(
            f"reward must be a RewardModel or a callable (prompts, responses) -> tensor [B], got "
            f"{type(reward).__name__}."
        )
    return reward


def call_reward(reward_fn, prompts: list[str], responses: list[str], device=None) -> torch.Tensor:
    """``reward_fn(prompts, responses)`` checked to be ``len(responses)`` finite floats: float32 ``[B]``."""
    scores = reward_fn(prompts, responses)
    try:
        scores = torch.as_tensor(scores, dtype=torch.float32).to(device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"reward(prompts, responses) must return a float tensor [B], got {type(scores).__name__}."
        ) from None
    if scores.shape != (len(responses),) or not bool(torch.isfinite(scores).all()):
        raise ValueError(
            f"reward(prompts, responses) must return {len(responses)} finite scores (shape "
            f"[{len(responses)}]), got shape {list(scores.shape)}."
        )
    return scores


__all__ = ["as_reward_fn", "call_reward", "check_prompts", "prepare_on_policy", "sample_completions"]
