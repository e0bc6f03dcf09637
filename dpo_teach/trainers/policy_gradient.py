"""RLOO and GRPO: critic-free policy gradients for E[r] − β KL(π_θ ‖ π_ref), in one loop.

Both maximise the RLHF objective J(θ) = E_x E_{y~π_θ}[s(x, y)] − β KL(π_θ ‖ π_ref) without PPO's value head.
Its gradient is the score-function (REINFORCE) estimator

    ∇J = E_{y~π_θ}[ (R(x, y) − b(x)) ∇ log π_θ(y|x) ],   R = s − β log π_θ(y|x)/π_ref(y|x),

for any baseline b(x) that does not depend on y (E_y[∇ log π_θ(y|x)] = Σ_y ∇π_θ(y|x) = ∇1 = 0). Instead of a
learned value, both draw ``k`` responses per prompt and take the baseline from the *other* responses of the group:

* **RLOO** (Ahmadian et al., 2024): R_i = s_i − β Σ_t log π_old/π_ref (the KL penalty inside the reward, per
  sequence); the leave-one-out baseline b_i = mean_{j≠i} R_j is independent of y_i, so the estimator stays
  unbiased: A_i = R_i − b_i = k/(k−1) (R_i − mean_j R_j). Loss: −mean_i A_i log π_θ(y_i|x) (one step per batch).
* **GRPO** (Shao et al., 2024): A_i = (s_i − mean_j s_j)/(std_j s_j + 1e-4) (the group-normalised score, no KL in
  it), the clipped ratio ρ_t = π_θ(y_t|·)/π_old(y_t|·) of PPO, and the KL in the loss through the k3 estimator
  k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1 (≥ 0, unbiased for KL(π_θ ‖ π_ref) under y ~ π_θ):

      L = mean_i (1/|y_i|) Σ_t [ −min(ρ_t A_i, clip(ρ_t, 1 − ε, 1 + ε) A_i) + β k3_t ],

  ``num_iterations`` (μ) updates per batch. This is TRL 1.16's ``GRPOTrainer`` with ``loss_type="grpo"``
  (per-sequence token mean, then mean over sequences), ``importance_sampling_level="token"``,
  ``scale_rewards="group"``, ``epsilon_high = epsilon`` and ``use_bias_correction_kl=False`` (the paper's k3;
  TRL's default ``True`` weights k3_t by ρ_t, which ``kl_bias_correction=True`` reproduces); a test checks
  :func:`grpo_loss` against TRL's loss on the same per-token log-probs, both settings.

The rollouts (sampling, scoring, per-token log-probs of π_old and π_ref) are PPO's
(:func:`dpo_teach.trainers.ppo.sample_and_score`); logging is the trainers' :class:`MetricLogger`. Metrics per
step: ``objective/kl`` (mean Σ_t log π_old/π_ref), ``objective/scores``, ``objective/rlhf_reward``
(scores − β·kl), ``loss/policy``, ``policy/clipfrac`` (GRPO), ``lr``, ``episode`` (responses so far).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_teach._validate import check_positive
from dpo_teach.trainers.common import (
    MetricLogger,
    clip_and_step,
    make_optimizer,
    resolve_config,
    warmup_scheduler,
)
from dpo_teach.trainers.ppo import _forward, masked_mean, sample_and_score
from dpo_teach.trainers.rollouts import check_prompts, prepare_on_policy


@dataclass
class RLOOConfig:
    """Settings of :func:`train_rloo`: ``prompts_per_step`` prompts a step, ``k`` responses each (a batch of
    ``prompts_per_step · k``); ``kl_coef`` is β. The rest as in :class:`~dpo_teach.trainers.ppo.PPOConfig`."""

    steps: int = 50
    prompts_per_step: int = 32
    k: int = 4
    lr: float = 1e-3  # for the book's tiny models; real LMs want ~1e-6 to 1e-5
    kl_coef: float = 0.05
    max_new_tokens: int = 16
    stop_token_id: int | None = None
    allowed_token_ids: list | None = None
    max_grad_norm: float | None = 1.0
    warmup_steps: int = 0
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "prompts_per_step", "max_new_tokens", *self._counts()):
            check_positive(name, getattr(self, name), int)
        if self.k < 2:
            raise ValueError(
                f"k={self.k} must be ≥ 2: the baseline comes from the other responses of a group."
            )
        check_positive("lr", self.lr)
        check_positive("kl_coef", self.kl_coef, allow_zero=True)
        check_positive("warmup_steps", self.warmup_steps, int, allow_zero=True)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)
        if self.allowed_token_ids is not None:
            self.allowed_token_ids = [int(i) for i in torch.as_tensor(self.allowed_token_ids).tolist()]

    def _counts(self) -> tuple:
        return ("k",)


@dataclass
class GRPOConfig(RLOOConfig):
    """Settings of :func:`train_grpo`: those of :class:`RLOOConfig` plus the clip range ``epsilon`` (ε),
    ``num_iterations`` (μ, updates per batch) and ``scale_rewards`` (divide by the group's std, as the paper)."""

    epsilon: float = 0.2
    num_iterations: int = 2
    scale_rewards: bool = True
    kl_bias_correction: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_positive("epsilon", self.epsilon)

    def _counts(self) -> tuple:
        return ("k", "num_iterations")


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages over groups: ``rewards`` ``[G, k]`` → A_i = R_i − mean_{j≠i} R_j, ``[G, k]``."""
    k = rewards.shape[-1]
    baseline = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def group_advantages(scores: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """GRPO's advantages over groups: ``scores`` ``[G, k]`` → (s − mean)/(std + 1e-4) per group (unbiased std,
    as TRL), or s − mean with ``scale=False`` (Dr. GRPO)."""
    centred = scores - scores.mean(-1, keepdim=True)
    return centred / (scores.std(-1, keepdim=True) + 1e-4) if scale else centred


def rloo_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """REINFORCE with the leave-one-out advantage: −mean_i A_i Σ_t log π_θ(y_i,t|·).

    ``logps``, ``mask`` ``[B, T]`` (per-token log-probs, 1.0 on response tokens); ``advantages`` ``[B]``.
    """
    loss = -(advantages * (logps * mask).sum(-1)).mean()
    return loss, {}


def grpo_loss(logps, old_logps, ref_logps, advantages, mask, beta: float, epsilon: float,
              kl_bias_correction: bool = False):  # fmt: skip
    """GRPO's loss (TRL ``loss_type="grpo"``): mean_i (1/|y_i|) Σ_t [−min(ρ A_i, clip(ρ, 1−ε, 1+ε) A_i) + β k3].

    ``logps``, ``old_logps``, ``ref_logps``, ``mask`` ``[B, T]``; ``advantages`` ``[B]``; ρ = exp(logps −
    old_logps), k3 = exp(ref − logps) − (ref − logps) − 1 (times ρ with ``kl_bias_correction``: the samples
    come from π_old, not π_θ). Returns ``(loss, stats)`` with ``policy/clipfrac`` (share of tokens whose ratio
    was clipped in the direction the advantage pushes) and ``kl`` (mean k3).
    """
    advantages = advantages.unsqueeze(-1)
    ratio = (logps - old_logps).exp()
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    log_ref_ratio = ref_logps - logps
    k3 = log_ref_ratio.exp() - log_ref_ratio - 1
    per_token = per_token + beta * (k3 * ratio if kl_bias_correction else k3)
    loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    was_clipped = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon) & (advantages > 0))
    stats = {"policy/clipfrac": masked_mean(was_clipped.float(), mask), "kl": masked_mean(k3.detach(), mask)}
    return loss, stats


def train_rloo(
    policy, tokenizer, prompts, reward, config=None, *, ref_model=None, callback=None, **overrides
):
    """Train ``policy`` (in place) by RLOO to maximise E[reward] − β KL(π_θ ‖ π_ref); see the module docstring.

    Arguments as :func:`dpo_teach.trainers.ppo.train_ppo`, with ``config=RLOOConfig(...)`` or its fields as
    keywords. Returns the metrics history (one dict per step). Same ``seed`` → same history.
    """
    cfg = resolve_config(RLOOConfig, config, overrides)
    return _train(policy, tokenizer, prompts, reward, cfg, ref_model, callback, "RLOO")


def train_grpo(
    policy, tokenizer, prompts, reward, config=None, *, ref_model=None, callback=None, **overrides
):
    """Train ``policy`` (in place) by GRPO (the module docstring's loss); ``config=GRPOConfig(...)`` or its
    fields as keywords. Returns the metrics history (one dict per step). Same ``seed`` → same history."""
    cfg = resolve_config(GRPOConfig, config, overrides)
    return _train(policy, tokenizer, prompts, reward, cfg, ref_model, callback, "GRPO")


def _advantages(cfg, scores, kl) -> torch.Tensor:
    """``[B]`` advantages from the ``[B]`` scores and sequence KLs of ``B = G·k`` responses in groups of k."""
    if isinstance(cfg, GRPOConfig):
        return group_advantages(scores.view(-1, cfg.k), cfg.scale_rewards).flatten()
    return rloo_advantages((scores - cfg.kl_coef * kl).view(-1, cfg.k)).flatten()


def _train(policy, tokenizer, prompts, reward, cfg, ref_model, callback, name):
    """The loop both share: rollouts in groups of k, advantages, ``num_iterations`` updates per batch."""
    policy, ref_model, reward_fn, generator, prompt_ids = prepare_on_policy(
        policy, tokenizer, check_prompts(prompts), reward, ref_model, cfg
    )
    optimizer = make_optimizer(policy, cfg.lr)
    scheduler = warmup_scheduler(optimizer, cfg.warmup_steps)
    iterations = getattr(cfg, "num_iterations", 1)
    logger = MetricLogger(
        cfg.steps, name, progress=cfg.progress, callback=callback, show=("objective/scores", "objective/kl")
    )
    try:
        for step in range(1, cfg.steps + 1):
            which = torch.randint(len(prompts), (cfg.prompts_per_step,), generator=generator)
            which = which.repeat_interleave(cfg.k).tolist()  # k responses to each drawn prompt, side by side
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            batch, old_logps, _, ref_logps, mask, scores = sample_and_score(
                policy,
                ref_model,
                None,
                tokenizer,
                [prompt_ids[i] for i in which],
                [prompts[i] for i in which],
                reward_fn,
                cfg,
                seed,
            )
            kl = ((old_logps - ref_logps) * mask).sum(-1)
            advantages = _advantages(cfg, scores, kl)
            lr_now = scheduler.get_last_lr()[0]
            sums = {}
            for _ in range(iterations):
                logps, _ = _forward(policy, None, batch, cfg.allowed_token_ids)
                if isinstance(cfg, GRPOConfig):
                    loss, stats = grpo_loss(logps, old_logps, ref_logps, advantages, mask, cfg.kl_coef,
                                            cfg.epsilon, cfg.kl_bias_correction)  # fmt: skip
                else:
                    loss, stats = rloo_loss(logps, advantages, mask)
                loss.backward()
                clip_and_step(policy, optimizer, scheduler, cfg.max_grad_norm)
                for key, value in {"loss/policy": loss.detach(), **stats}.items():
                    sums[key] = sums.get(key, 0.0) + float(value) / iterations
            logger.log(
                {
                    "step": step,
                    "episode": step * len(which),
                    "objective/kl": float(kl.mean()),
                    "objective/scores": float(scores.mean()),
                    "objective/rlhf_reward": float((scores - cfg.kl_coef * kl).mean()),
                    **sums,
                    "lr": lr_now,
                }
            )
    finally:
        logger.close()
    policy.eval()
    return logger.history


__all__ = [
    "GRPOConfig",
    "RLOOConfig",
    "group_advantages",
    "grpo_loss",
    "rloo_advantages",
    "rloo_loss",
    "train_grpo",
    "train_rloo",
]
