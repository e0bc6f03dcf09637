"""PPO against a reward: the third stage of the RLHF pipeline, the one DPO replaces by a classification loss.

Each *step* is one PPO iteration (Schulman et al., 2017; the RLHF recipe of Ziegler et al., 2019):

1. **Rollouts.** Sample ``batch_size`` prompts x uniformly and a response y ~ π_θ(·|x) for each, from the
   world's policy when ``allowed_token_ids`` is given (the LM renormalised over the allowed tokens,
   see :mod:`dpo_teach.logprobs`). Score it: s = reward(x, y), a learned reward model or the world's true reward.
2. **Per-token rewards.** For response token t (state (x, y_<t), action y_t) with k_t = log π_old(y_t|·) −
   log π_ref(y_t|·), the KL-penalised reward is r_t = −β_KL k_t, plus s at the final token. Summed over t this
   is s − β_KL · log π_old(y|x)/π_ref(y|x): a one-sample estimate of the RLHF objective E[r] − β_KL KL(π‖π_ref).
3. **Advantages by GAE(γ, λ).** δ_t = r_t + γ V(t+1) − V(t) with V = 0 after the last token;
   A_t = δ_t + γλ A_{t+1}; returns R_t = A_t + V(t). Advantages are then whitened over the batch.
4. **PPO epochs.** ``ppo_epochs`` passes over the rollouts in shuffled minibatches, minimising
   L = L_clip + c_V L_V with ratio ρ_t = π_θ(y_t|·)/π_old(y_t|·),
   L_clip = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)) and
   L_V = ½ mean_t max((V_t − R_t)², (clip(V_t, V_old − ε_V, V_old + ε_V) − R_t)²).

**Value function.** A linear head on the policy's final hidden state at the position that predicts y_t
(a shared trunk, as in TRL's ``AutoModelForCausalLMWithValueHead``), initialised to zero: one forward gives
both log-probs and values, and no second model is held in memory. The value loss also trains the trunk,
weighted by ``vf_coef``. The head is internal to the run; the trained policy is ``policy`` (in place).

Metrics per step (TRL's PPO names, without its ``_avg`` suffixes): ``objective/kl`` (mean Σ_t k_t),
``objective/scores``, ``objective/rlhf_reward`` (scores − β_KL·kl), ``objective/entropy`` (mean −log π_old(y|x)),
``loss/policy``, ``loss/value``, ``policy/clipfrac``, ``policy/approxkl``, ``val/clipfrac``, ``val/mean``,
``val/ratio``, ``lr``, ``episode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_teach._validate import (
    check_positive,
    check_token_id,
    check_trainer_inputs,
    model_max_positions,
    model_vocab_size,
)
from dpo_teach.data import encode_prompt, pad_sequences
from dpo_teach.device import autocast
from dpo_teach.logprobs import per_token_logps, response_mask
from dpo_teach.trainers.common import (
    MetricLogger,
    clip_and_step,
    make_optimizer,
    resolve_config,
    warmup_scheduler,
)
from dpo_teach.trainers.rollouts import call_reward, check_prompts, prepare_on_policy, sample_completions


@dataclass
class PPOConfig:
    """Settings of :func:`train_ppo`. ``kl_coef`` is β_KL; ``stop_token_id`` ends a response (None: the
    tokenizer's EOS); ``allowed_token_ids``: the world's alphabet (None: the full vocabulary). The defaults
    were tuned on the sequences world (TRL's differ: 4 PPO epochs, ``vf_coef=0.1``, a much smaller lr)."""

    steps: int = 50
    batch_size: int = 128
    mini_batch_size: int = 64
    ppo_epochs: int = 2
    lr: float = 1e-3  # for the book's tiny models; real LMs want ~1e-5
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.5
    whiten_advantages: bool = True
    max_new_tokens: int = 16
    stop_token_id: int | None = None
    allowed_token_ids: list | None = None
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens"):
            check_positive(name, getattr(self, name), int)
        for name in ("lr", "cliprange", "cliprange_value"):
            check_positive(name, getattr(self, name))
        for name in ("kl_coef", "gamma", "lam", "vf_coef"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.gamma > 1 or self.lam > 1:
            raise ValueError(f"gamma={self.gamma} and lam={self.lam} must be in [0, 1].")
        if self.mini_batch_size > self.batch_size:
            raise ValueError(
                f"mini_batch_size={self.mini_batch_size} must be ≤ batch_size={self.batch_size}."
            )
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        if self.allowed_token_ids is not None:
            self.allowed_token_ids = [int(i) for i in torch.as_tensor(self.allowed_token_ids).tolist()]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` (bool or 0/1, same shape) is set."""
    return (x * mask).sum() / mask.sum().clamp_min(1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x − mean) / std over the masked entries (unbiased variance); zero outside the mask."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1).clamp_min(1)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over ``[B, T]`` per-token ``rewards`` and ``values`` (0/False outside
    the response ``mask``, which marks one contiguous run of positions per row).

    δ_t = r_t + γ V_{t+1} − V_t,  A_t = δ_t + γλ A_{t+1}  (V and A are 0 past the end), R_t = A_t + V_t.
    Returns ``(advantages, returns)``, both ``[B, T]`` and zero outside the mask.
    """
    mask = mask.to(rewards.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = delta + gamma * lam * next_advantage
        next_value, next_advantage = values[:, t], advantages[:, t] * mask[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logps, old_logps, advantages, mask, cliprange: float):
    """PPO's clipped surrogate, masked mean of max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε)), ρ = exp(logps − old_logps).

    All ``[B, T]``. Returns ``(loss, stats)`` with ``policy/clipfrac`` (share of tokens where the clipped term
    is the larger), ``policy/approxkl`` = ½ mean (log ρ)² and ``val/ratio`` = mean ρ (TRL's names).
    """
    log_ratio = logps - old_logps
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    stats = {
        "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask),
        "policy/approxkl": masked_mean(0.5 * log_ratio.detach() ** 2, mask),
        "val/ratio": masked_mean(ratio.detach(), mask),
    }
    return masked_mean(torch.maximum(unclipped, clipped), mask), stats


def clipped_value_loss(values, old_values, returns, mask, cliprange_value: float):
    """½ masked mean of max((V − R)², (clip(V, V_old − ε_V, V_old + ε_V) − R)²), all ``[B, T]``.

    Returns ``(loss, stats)`` with ``val/clipfrac`` (share of tokens where the clipped term is the larger).
    """
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    losses, losses_clipped = (values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(losses, losses_clipped), mask)
    return loss, {"val/clipfrac": masked_mean((losses_clipped > losses).float(), mask)}


def _forward(model, value_head, batch: dict, allowed_token_ids):
    """One forward → per-token log-probs and values, float32 ``[B, T-1]`` aligned with ``labels[:, 1:]``."""
    ids, mask, hidden = batch["input_ids"], batch["attention_mask"], value_head is not None
    with autocast(next(model.parameters()).device):
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden, use_cache=False)
    logps = per_token_logps(out.logits, batch["labels"], allowed_token_ids)
    if value_head is None:
        return logps, None
    return logps, value_head(out.hidden_states[-1][:, :-1].float()).squeeze(-1)


@torch.no_grad()
def sample_and_score(policy, ref_model, value_head, tokenizer, ids, prompt_texts, reward_fn, cfg, seed):
    """Sample one response per prompt in ``ids`` (token-id lists) from ``policy``, score it with ``reward_fn``
    on ``prompt_texts``, and take the per-token log-probs under π_old (= ``policy`` now) and π_ref.

    ``cfg`` supplies ``max_new_tokens``, ``stop_token_id``, ``allowed_token_ids``. Returns ``(batch, old_logps,
    old_values, ref_logps, mask, scores)``: the padded batch, ``[B, T-1]`` tensors (``old_values`` None without
    a ``value_head``; ``mask`` 1.0 on response tokens) and ``scores`` ``[B]``. Shared by PPO, RLOO and GRPO.
    """
    device = next(policy.parameters()).device
    completions, texts = sample_completions(
        policy,
        tokenizer,
        ids,
        max_new_tokens=cfg.max_new_tokens,
        stop_token_id=cfg.stop_token_id,
        allowed_token_ids=cfg.allowed_token_ids,
        seed=seed,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = {k: v.to(device) for k, v in pad_sequences(ids, completions, pad_id).items()}
    old_logps, old_values = _forward(policy, value_head, batch, cfg.allowed_token_ids)
    ref_logps, _ = _forward(ref_model, None, batch, cfg.allowed_token_ids)
    mask = response_mask(batch["labels"]).float()
    scores = call_reward(reward_fn, prompt_texts, texts, device)
    return batch, old_logps, old_values, ref_logps, mask, scores


@torch.no_grad()
def _rollout(policy, ref_model, value_head, tokenizer, prompts, prompt_ids, reward_fn, cfg, generator):
    """Sample, score and turn one batch of rollouts into advantages; returns a dict of ``[B, …]`` tensors."""
    device = next(policy.parameters()).device
    which = torch.randint(len(prompts), (cfg.batch_size,), generator=generator).tolist()
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    ids, texts = [prompt_ids[i] for i in which], [prompts[i] for i in which]
    batch, old_logps, old_values, ref_logps, mask, scores = sample_and_score(
        policy, ref_model, value_head, tokenizer, ids, texts, reward_fn, cfg, seed
    )
    kl = (old_logps - ref_logps) * mask
    rewards = -cfg.kl_coef * kl
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # the final response token of each row
    rewards[torch.arange(len(which), device=device), last] += scores
    advantages, returns = gae(rewards, old_values * mask, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, mask)
    stats = {
        "objective/kl": kl.sum(1).mean(),
        "objective/scores": scores.mean(),
        "objective/rlhf_reward": (scores - cfg.kl_coef * kl.sum(1)).mean(),
        "objective/entropy": -(old_logps * mask).sum(1).mean(),
        "val/mean": masked_mean(old_values, mask),
    }
    data = dict(batch, old_logps=old_logps, old_values=old_values * mask, mask=mask)
    data.update(advantages=advantages, returns=returns)
    return data, {k: float(v) for k, v in stats.items()}


def _update(policy, value_head, mb: dict, cfg: PPOConfig) -> dict:
    """Backward of L_clip + c_V L_V on one minibatch of rollouts (the step is the caller's); returns stats."""
    logps, values = _forward(policy, value_head, mb, cfg.allowed_token_ids)
    pg_loss, pg_stats = clipped_policy_loss(
        logps, mb["old_logps"], mb["advantages"], mb["mask"], cfg.cliprange
    )
    vf_loss, vf_stats = clipped_value_loss(
        values, mb["old_values"], mb["returns"], mb["mask"], cfg.cliprange_value
    )
    (pg_loss + cfg.vf_coef * vf_loss).backward()
    return {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), **pg_stats, **vf_stats}


def _check_inputs(policy, tokenizer, ref_model, prompts, cfg: PPOConfig) -> None:
    """Model, tokenizer, reference, alphabet, stop token and lengths, checked before any rollout."""
    check_trainer_inputs(policy, tokenizer, ref_model=ref_model, allowed_token_ids=cfg.allowed_token_ids)
    vocab = model_vocab_size(policy)
    if cfg.stop_token_id is not None:
        check_token_id("stop_token_id", cfg.stop_token_id, vocab)
    elif tokenizer.eos_token_id is None:
        raise ValueError(
            "stop_token_id is None and the tokenizer has no eos_token, so no response could end; pass "
            "stop_token_id=tokenizer.convert_tokens_to_ids(word) or set tokenizer.eos_token."
        )
    limit = model_max_positions(policy)
    longest = max(len(encode_prompt(tokenizer, p)) for p in prompts)
    if limit is not None and longest + cfg.max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt has {longest} tokens and max_new_tokens={cfg.max_new_tokens}, but the model has "
            f"only {limit} positions; "
            + (f"pass max_new_tokens≤{limit - longest}." if longest < limit else "shorten the prompts.")
        )


def train_ppo(policy, tokenizer, prompts, reward, config=None, *, ref_model=None, callback=None, **overrides):
    """Train ``policy`` (a causal LM, in place) by PPO to maximise E[reward] − β_KL KL(π_θ ‖ π_ref).

    ``prompts``: the prompt strings, drawn uniformly. ``reward``: a :class:`RewardModel` (scored on the decoded
    text) or a callable ``(prompts, responses) -> tensor [B]`` such as the world's true reward. ``ref_model``:
    π_ref, frozen in eval mode (default: a copy of ``policy`` taken before training). Settings: ``config=PPOConfig(...)``
    or its fields as keywords (``kl_coef=0.1, steps=50``), not both. Returns the metrics history (one dict per
    step, module docstring); ``callback(metrics)`` after each step. Same ``seed`` → same history.
    """
    cfg = resolve_config(PPOConfig, config, overrides)
    _check_inputs(policy, tokenizer, ref_model, check_prompts(prompts), cfg)
    policy, ref_model, reward_fn, generator, prompt_ids = prepare_on_policy(
        policy, tokenizer, prompts, reward, ref_model, cfg
    )
    device = next(policy.parameters()).device
    value_head = torch.nn.Linear(policy.config.hidden_size, 1).to(device)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    trained = torch.nn.ModuleList([policy, value_head])
    optimizer = make_optimizer(trained, cfg.lr)
    scheduler = warmup_scheduler(optimizer, cfg.warmup_steps)
    n_updates = cfg.ppo_epochs * -(-cfg.batch_size // cfg.mini_batch_size)
    logger = MetricLogger(
        cfg.steps, "PPO", progress=cfg.progress, callback=callback, show=("objective/scores", "objective/kl")
    )
    try:
        for step in range(1, cfg.steps + 1):
            data, stats = _rollout(
                policy, ref_model, value_head, tokenizer, prompts, prompt_ids, reward_fn, cfg, generator
            )
            lr_now = scheduler.get_last_lr()[0]
            sums = {}
            for _ in range(cfg.ppo_epochs):
                order = torch.randperm(cfg.batch_size, generator=generator).to(device)
                for start in range(0, cfg.batch_size, cfg.mini_batch_size):
                    mb = {k: v[order[start : start + cfg.mini_batch_size]] for k, v in data.items()}
                    for key, value in _update(policy, value_head, mb, cfg).items():
                        sums[key] = sums.get(key, 0.0) + float(value) / n_updates
                    clip_and_step(trained, optimizer, scheduler, cfg.max_grad_norm)
            logger.log({"step": step, "episode": step * cfg.batch_size, **stats, **sums, "lr": lr_now})
    finally:
        logger.close()
    policy.eval()
    return logger.history


__all__ = [
    "PPOConfig",
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae",
    "sample_and_score",
    "train_ppo",
    "whiten",
]
