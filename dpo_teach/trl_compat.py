"""TRL's ``DPOTrainer`` as an independent reference: build it on our models and rows, and read its loss.

TRL is *imported* here to compare against, never copied (it is a test/book dependency, imported lazily).
:func:`trl_dpo_trainer` builds a CPU, float32, no-logging ``trl.DPOTrainer``; :func:`trl_collate` returns TRL's
own collated batch (its tokenisation: ``input_ids`` ``[2B, T]``, chosen rows then rejected rows, and a
``completion_mask``); :func:`trl_batch_to_ours` turns that into the six-key batch of
:func:`dpo_teach.logprobs.concatenated_forward` — the *same* token ids — so that the two losses can be compared
number for number (:func:`trl_dpo_loss` gives TRL's). Used by chapter 13 and by the TRL parity tests.
"""

from __future__ import annotations

import torch

from dpo_teach.logprobs import IGNORE_INDEX


def trl_training_args(output_dir, **overrides) -> dict:
    """The arguments every reference trainer shares: CPU, float32, no reports, no progress bar, seed 0."""
    args = {
        "output_dir": str(output_dir),
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "save_strategy": "no",
        "seed": 0,
    }
    return {**args, **overrides}


def trl_dpo_trainer(policy, reference, tokenizer, rows, output_dir, **config):
    """``trl.DPOTrainer(model=policy, ref_model=reference, …)`` on ``rows`` (dicts with ``prompt``/``chosen``/
    ``rejected``) with ``trl.DPOConfig(**config)``, e.g. ``beta=0.1, loss_type=["sigmoid"]``; the batch size
    defaults to all rows (one batch)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = list(rows)
    config.setdefault("per_device_train_batch_size", len(rows))
    args = DPOConfig(**trl_training_args(output_dir, **config))
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def trl_collate(trainer, indices=None) -> dict:
    """TRL's own collated batch of the train rows at ``indices`` (default: all), as its ``compute_loss`` gets it."""
    indices = range(len(trainer.train_dataset)) if indices is None else indices
    return trainer.data_collator([trainer.train_dataset[i] for i in indices])


def trl_batch_to_ours(batch: dict) -> dict:
    """TRL's DPO batch (``input_ids`` ``[2B, T]`` chosen then rejected, ``attention_mask``, ``completion_mask``)
    → ``chosen_input_ids``/``_attention_mask``/``_labels`` and the same for ``rejected`` ``[B, T]``: the same ids,
    labels -100 outside the completion."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    n = batch["input_ids"].shape[0] // 2
    out = {}
    for side, rows in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
        out[f"{side}_input_ids"] = batch["input_ids"][rows]
        out[f"{side}_attention_mask"] = batch["attention_mask"][rows]
        out[f"{side}_labels"] = labels[rows]
    return out


def trl_dpo_loss(trainer, batch: dict) -> tuple[float, dict]:
    """TRL's DPO loss on ``batch`` (no gradient, no step) and the metrics it logged for it, as floats."""
    trainer.model.eval()  # TRL files the metrics of an eval-mode forward under "eval"
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items() if v}
    return float(loss), metrics
