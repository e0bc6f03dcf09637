"""A Bradley–Terry reward model: the second stage of the RLHF pipeline, the one DPO makes implicit.

The reward model is a causal LM with a scalar head: the final hidden state of the last real (non-padding)
token of ``prompt ⊕ response ⊕ EOS`` goes through a linear layer,

    r_φ(x, y) = w · h_L(x ⊕ y)[last] + b.

It is fitted by maximum likelihood under the Bradley–Terry model (DPO paper, Eq. 2):

    L_R(φ) = − E_{(x, y_w, y_l)} log σ(r_φ(x, y_w) − r_φ(x, y_l)).

Rewards are identified only up to a per-prompt constant (the paper's equivalence classes, Lemma 1): adding
f(x) to r_φ changes no preference probability, so only differences between responses to one prompt mean
anything. Logged per step (and by :func:`evaluate_reward_model`): ``loss``, ``accuracy`` (the fraction of
pairs with r_w > r_l) and ``margin`` (mean r_w − r_l).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpo_teach import chat
from dpo_teach._validate import check_positive, check_tokenizer, check_trainer_inputs
from dpo_teach.data import (
    PreferenceCollator,
    encode_completion,
    encode_prompt,
    load_preference_rows,
    pad_sequences,
    pad_token_id,
    tokenize_preference,
)
from dpo_teach.device import autocast
from dpo_teach.seed import seed_everything
from dpo_teach.trainers.common import (
    MetricLogger,
    check_fits,
    clip_and_step,
    make_optimizer,
    micro_batches,
    prepare_model,
    resolve_config,
    warmup_scheduler,
)


class RewardModel(torch.nn.Module):
    """r_φ(x, y): a causal LM's trunk (``lm.base_model``) and a linear head on the last real token.

    ``lm`` is usually a copy of π_ref (so the reward model starts from the same features); it is owned and
    trained by this module. The LM head of ``lm`` is not used. The scalar head's initialisation is fixed by
    ``seed``. ``forward(input_ids, attention_mask)`` takes right-padded ``[B, T]`` tensors and returns float32
    ``[B]``.
    """

    def __init__(self, lm: torch.nn.Module, seed: int = 0):
        super().__init__()
        if not hasattr(lm, "base_model") or not hasattr(lm, "config"):
            raise TypeError(
                f"lm must be a transformers causal LM (e.g. a copy of π_ref), got {type(lm).__name__}."
            )
        self.lm = lm
        self.head = torch.nn.Linear(lm.config.hidden_size, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.nn.init.normal_(self.head.weight, std=1.0 / (lm.config.hidden_size + 1) ** 0.5)
            torch.nn.init.zeros_(self.head.bias)
        self.head.to(next(lm.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if bool((attention_mask.sum(-1) == 0).any()):
            raise ValueError("every row of attention_mask needs at least one real token (1).")
        with autocast(device):
            hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(-1) - 1  # right padding: the last real token is the EOS of the response
        h_last = hidden[torch.arange(hidden.shape[0], device=device), last].float()
        return self.head(h_last).squeeze(-1)

    @torch.no_grad()
    def score(
        self, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 256
    ) -> torch.Tensor:
        """r_φ(x, y) for each (prompt, response) pair, float32 ``[B]`` on the CPU, tokenised exactly as in
        training (prompt with BOS, response + EOS). Usable as the ``reward`` of :func:`~dpo_teach.trainers.ppo.train_ppo`."""
        check_tokenizer(tokenizer)
        if len(prompts) != len(responses):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(responses)} responses; pass one per prompt."
            )
        pad_id = pad_token_id(tokenizer)  # no pad token (GPT-2): EOS, as in training; padding is masked
        out = []
        for i in range(0, len(prompts), batch_size):
            p = [encode_prompt(tokenizer, x) for x in prompts[i : i + batch_size]]
            c = [encode_completion(tokenizer, y) for y in responses[i : i + batch_size]]
            batch = pad_sequences(p, c, pad_id)
            out.append(self(batch["input_ids"], batch["attention_mask"]).cpu())
        return torch.cat(out) if out else torch.zeros(0)


@dataclass
class RewardConfig:
    """Settings of :func:`train_reward_model` (AdamW, linear warm-up, gradient clipping, one pair per row)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int | None = None
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            check_positive(name, getattr(self, name), int)
        check_positive("lr", self.lr)
        check_positive("warmup_steps", self.warmup_steps, int, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.max_grad_norm is not None:
            check_positive("max_grad_norm", self.max_grad_norm)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, torch.Tensor]:
    """−mean log σ(r_w − r_l) over ``[B]`` rewards; returns ``loss`` (with grad), ``accuracy`` and ``margin``."""
    margin = chosen_rewards - rejected_rewards
    return {
        "loss": -F.logsigmoid(margin).mean(),
        "accuracy": (margin > 0).float().mean().detach(),
        "margin": margin.mean().detach(),
    }


def _pair_rewards(reward_model: RewardModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards ``[B]`` from one forward of the stacked ``[2B, T]`` batch."""
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    ids, mask = (
        torch.cat(
            [
                F.pad(batch[f"{s}_{k}"], (0, width - batch[f"{s}_{k}"].shape[1]))
                for s in ("chosen", "rejected")
            ]
        )
        for k in ("input_ids", "attention_mask")
    )
    rewards = reward_model(ids, mask)
    n = batch["chosen_input_ids"].shape[0]
    return rewards[:n], rewards[n:]


def _check_reward_model(reward_model) -> None:
    if not isinstance(reward_model, RewardModel):
        raise TypeError(
            f"reward_model must be a dpo_teach.trainers.reward.RewardModel, got {type(reward_model).__name__}; "
            "wrap a causal LM with RewardModel(copy.deepcopy(ref_model))."
        )


def train_reward_model(
    reward_model: RewardModel,
    tokenizer,
    rows,
    config: RewardConfig | None = None,
    *,
    callback=None,
    **overrides,
) -> list[dict]:
    """Fit ``reward_model`` in place on preference ``rows`` (``prompt``/``chosen``/``rejected``) by minimising
    the Bradley–Terry loss −log σ(r_φ(x, y_w) − r_φ(x, y_l)).

    Settings: ``config=RewardConfig(...)`` or its fields as keywords (``lr=3e-4, epochs=2``), not both.
    One optimizer step per batch; returns the metrics history, one dict per step: ``step``, ``epoch``,
    ``loss``, ``accuracy``, ``margin``, ``lr``, ``grad_norm``; ``callback(metrics)`` is called after each step.
    Dropout is off and the same ``seed`` gives the same history. The model is left in eval mode.
    """
    _check_reward_model(reward_model)
    cfg = resolve_config(RewardConfig, config, overrides)
    check_trainer_inputs(reward_model.lm, tokenizer)
    seed_everything(cfg.seed)
    data = tokenize_preference(load_preference_rows(rows), tokenizer, max_length=cfg.max_length)
    check_fits(reward_model.lm, data, cfg.max_length)
    prepare_model(reward_model, cfg.device, train=True)
    collate = PreferenceCollator(tokenizer)
    plan = micro_batches(len(data), cfg.batch_size, cfg.epochs, cfg.seed)
    optimizer = make_optimizer(reward_model, cfg.lr, cfg.weight_decay)
    scheduler = warmup_scheduler(optimizer, cfg.warmup_steps)
    logger = MetricLogger(
        len(plan), "reward model", progress=cfg.progress, callback=callback, show=("loss", "accuracy")
    )
    try:
        for step, (_, idx) in enumerate(plan, start=1):
            out = bradley_terry_loss(*_pair_rewards(reward_model, collate([data[i] for i in idx])))
            out["loss"].backward()
            lr_now = scheduler.get_last_lr()[0]
            grad_norm = clip_and_step(reward_model, optimizer, scheduler, cfg.max_grad_norm)
            metrics = {k: float(v.detach()) for k, v in out.items()}
            logger.log(
                {
                    "step": step,
                    "epoch": step * cfg.epochs / len(plan),
                    **metrics,
                    "lr": lr_now,
                    "grad_norm": grad_norm,
                }
            )
    finally:
        logger.close()
    reward_model.eval()
    return logger.history


@torch.no_grad()
def evaluate_reward_model(
    reward_model: RewardModel, tokenizer, rows, batch_size: int = 256
) -> dict[str, float]:
    """``loss``, ``accuracy`` and ``margin`` of ``reward_model`` on preference ``rows`` (means over all pairs).

    ``rows`` are standard (strings) or TRL's conversational format (lists of ``{"role", "content"}`` messages);
    the latter go through the tokenizer's chat template (:func:`dpo_teach.chat.encode_conversation`), so each
    pair is scored on exactly the ids it was trained on: ``template(prompt + answer)``, no EOS appended.
    """
    _check_reward_model(reward_model)
    rows = load_preference_rows(rows)
    if rows and chat.is_conversation(rows[0]["prompt"]):
        return _evaluate_conversations(reward_model, tokenizer, rows, batch_size)
    chosen = reward_model.score(
        tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows], batch_size
    )
    rejected = reward_model.score(
        tokenizer, [r["prompt"] for r in rows], [r["rejected"] for r in rows], batch_size
    )
    return {k: float(v) for k, v in bradley_terry_loss(chosen, rejected).items()}


def _evaluate_conversations(reward_model, tokenizer, rows, batch_size) -> dict[str, float]:
    """Conversational rows tokenised as in training (chat template), scored in batches of ``batch_size`` pairs."""
    check_tokenizer(tokenizer)
    data = tokenize_preference(rows, tokenizer)
    collate = PreferenceCollator(tokenizer)
    pairs = [
        _pair_rewards(reward_model, collate(data.examples[i : i + batch_size]))
        for i in range(0, len(data), batch_size)
    ]
    chosen, rejected = (torch.cat([p[k].float().cpu() for p in pairs]) for k in (0, 1))
    return {k: float(v) for k, v in bradley_terry_loss(chosen, rejected).items()}


__all__ = ["RewardConfig", "RewardModel", "bradley_terry_loss", "evaluate_reward_model", "train_reward_model"]
