"""Supervised fine-tuning: how the book makes π_ref.

The loss is the mean negative log-likelihood per completion token (prompt and padding are labelled -100):

    L_SFT(θ) = − Σ_b Σ_t log π_θ(y_{b,t} | x_b, y_{b,<t}) / (number of completion tokens in the batch),

where, in a world with ``allowed_token_ids``, π_θ is the LM's next-token distribution renormalised over the
allowed tokens (the world's policy, :mod:`dpo_teach.logprobs`). Log-probs come from :func:`dpo_teach.logprobs.forward_logps`.

Under ``torchrun`` (:mod:`dpo_teach.distributed`) each of the W ranks takes its slice of every batch and divides
its summed NLL by the batch's global token count N (all ranks' counts summed), times W: DDP's average of the
ranks' gradients is then the gradient of L_SFT over the whole batch, as in one process.
"""

from __future__ import annotations

import torch

from dpo_teach import distributed as DIST
from dpo_teach._validate import check_positive, check_trainer_inputs
from dpo_teach.data import SFTCollator, load_sft_rows, tokenize_sft
from dpo_teach.logprobs import forward_logps, response_lengths
from dpo_teach.seed import seed_everything
from dpo_teach.trainers.common import (
    MetricLogger,
    check_fits,
    clip_and_step,
    make_optimizer,
    micro_batches,
    prepare_model,
    warmup_scheduler,
)


def sft_loss(
    model, batch: dict, allowed_token_ids=None, n_total: int | None = None
) -> tuple[torch.Tensor, int]:
    """NLL of ``batch`` (``input_ids``, ``attention_mask``, ``labels`` [B, T]) summed over its completion
    tokens and divided by ``n_total`` (default: their number n, which makes it the mean NLL per token);
    returns ``(loss, n)``. ``model`` may be a :func:`dpo_teach.distributed.wrap` result."""
    logps = DIST.call(model, forward_logps, **batch, allowed_token_ids=allowed_token_ids)  # [B], token sums
    n_tokens = int(response_lengths(batch["labels"]).sum())
    return -logps.sum() / (n_total if n_total is not None else n_tokens), n_tokens


def train_sft(
    model,
    tokenizer,
    rows,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup_steps: int = 0,
    max_length: int | None = None,
    allowed_token_ids=None,
    seed: int = 0,
    device=None,
    callback=None,
    progress: bool = True,
    max_grad_norm: float | None = 1.0,
) -> list[dict]:
    """Train ``model`` in place on ``rows`` (``prompt``/``completion``: list of dicts, JSON path or Dataset).

    One optimizer step per batch of ``batch_size`` rows, AdamW at ``lr`` with ``warmup_steps`` of linear
    warm-up, gradient norm clipped to ``max_grad_norm``. Returns the metrics history: one dict per step with
    ``step``, ``epoch``, ``loss``, ``lr``, ``grad_norm``, ``num_tokens``. ``callback(metrics)`` is called after
    each step. Deterministic for a given ``seed`` (dropout is turned off). The model is left in eval mode.
    """
    check_positive("epochs", epochs, int)
    check_positive("batch_size", batch_size, int)
    check_positive("lr", lr)
    if max_grad_norm is not None:
        check_positive("max_grad_norm", max_grad_norm)
    seed_everything(seed)
    check_trainer_inputs(model, tokenizer, allowed_token_ids=allowed_token_ids)
    data = tokenize_sft(load_sft_rows(rows), tokenizer, max_length=max_length)
    check_fits(model, data, max_length)
    plan = micro_batches(len(data), batch_size, epochs, seed)
    DIST.check_micro_batches([len(idx) for _, idx in plan], unit="rows")  # each rank needs a row
    model = prepare_model(model, DIST.local_device(device), train=True)
    dev = next(model.parameters()).device
    policy = DIST.wrap(model) if DIST.init(dev) else model  # under torchrun: DDP (rank 0's weights broadcast)
    collate = SFTCollator(tokenizer, allowed_token_ids)
    optimizer = make_optimizer(model, lr)
    scheduler = warmup_scheduler(optimizer, warmup_steps)
    per_epoch = len(plan) / epochs
    logger = MetricLogger(len(plan), "SFT", progress=progress, callback=callback, show=("loss",))
    try:
        for step, (_, idx) in enumerate(plan, start=1):
            idx, _ = DIST.local_slice(idx, len(idx))  # this process's rows (all of them without torchrun)
            batch = {k: v.to(dev) for k, v in collate([data[i] for i in idx]).items()}
            # the global batch's token count N: each rank's loss is its share of the mean over all N tokens
            n_tokens = int(DIST.all_sum([int(response_lengths(batch["labels"]).sum())])[0])
            loss, _ = sft_loss(policy, batch, allowed_token_ids, n_total=n_tokens)
            (loss * DIST.world_size()).backward()  # DDP divides the ranks' summed gradient by W
            loss = DIST.all_sum([float(loss.detach())])[0]  # the ranks' shares add up to the batch mean
            lr_now = scheduler.get_last_lr()[0]
            grad_norm = clip_and_step(model, optimizer, scheduler, max_grad_norm)
            logger.log(
                {
                    "step": step,
                    "epoch": step / per_epoch,
                    "loss": loss,
                    "lr": lr_now,
                    "grad_norm": grad_norm,
                    "num_tokens": n_tokens,
                }
            )
    finally:
        logger.close()
    model.eval()
    return logger.history
