"""TRL as an independent reference: its trainers built on a tiny local GPT-2 (no download), for parity tests.

TRL is *imported* here to compare against, never copied. Everything is built from configs: a word-level
tokenizer (:func:`dpo_teach.models.build_word_tokenizer`), a ``GPT2LMHeadModel`` from a ``GPT2Config``, and a
handful of preference rows. The builders return TRL trainers with ``report_to=[]`` and ``output_dir`` in a
temporary folder; :func:`trl_collate` gives TRL's own collated batch, and :func:`trl_batch_to_ours` turns it into
the batch :func:`dpo_teach.logprobs.concatenated_forward` takes - the *same* token ids, so that the two losses
can be compared number for number.

Used by ``tests/test_trl_parity_losses.py`` (loss level) and by the trainer-level parity test.
"""

from __future__ import annotations

import copy

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_teach.logprobs import IGNORE_INDEX
from dpo_teach.models import build_word_tokenizer

WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "dull",
    "the",
    "film",
    "was",
    "is",
    "very",
    "not",
    "review",
    ":",
]

PREFERENCE_ROWS = [
    {"prompt": "review the film :", "chosen": " great", "rejected": " awful dull"},
    {"prompt": "the film was", "chosen": " very good", "rejected": " bad"},
    {"prompt": "review :", "chosen": " fine", "rejected": " not fine at all"},
    {"prompt": "the film is very", "chosen": " good good", "rejected": " dull"},
]


def tiny_tokenizer():
    """A word-level tokenizer over :data:`WORDS` (pad 0, bos 1, eos 2, unk 3), built locally."""
    return build_word_tokenizer(WORDS)


def tiny_gpt2_model(tokenizer, seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2 with dropout 0, in eval mode, initialised from ``seed``."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def policy_and_reference(tokenizer, seed: int = 0, perturb: float = 0.05):
    """A reference model and a policy that differs from it by Gaussian noise (so log-ratios are not zero)."""
    reference = tiny_gpt2_model(tokenizer, seed)
    policy = copy.deepcopy(reference)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=gen))
    return policy, reference


def _common_args(tmp_path) -> dict:
    return {
        "output_dir": str(tmp_path),
        "report_to": [],
        "per_device_train_batch_size": len(PREFERENCE_ROWS),
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def build_dpo_trainer(policy, reference, tokenizer, tmp_path, *, rows=PREFERENCE_ROWS, **config):
    """``trl.DPOTrainer`` with ``DPOConfig(**config)``, e.g. ``loss_type=["ipo"]``, ``beta``, ``label_smoothing``."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**_common_args(tmp_path), **config)
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
    )


def build_orpo_trainer(policy, tokenizer, tmp_path, *, rows=PREFERENCE_ROWS, **config):
    """``trl.experimental.orpo.ORPOTrainer`` (no reference model); ``beta`` is ORPO's λ."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    args = ORPOConfig(**_common_args(tmp_path), **config)
    return ORPOTrainer(
        model=policy, args=args, train_dataset=Dataset.from_list(list(rows)), processing_class=tokenizer
    )


def build_cpo_trainer(policy, tokenizer, tmp_path, *, rows=PREFERENCE_ROWS, **config):
    """``trl.experimental.cpo.CPOTrainer``; ``loss_type="simpo", cpo_alpha=0.0`` is SimPO."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(**_common_args(tmp_path), **config)
    return CPOTrainer(
        model=policy, args=args, train_dataset=Dataset.from_list(list(rows)), processing_class=tokenizer
    )


def trl_collate(trainer) -> dict:
    """TRL's own collated batch of the whole train dataset (one batch), as its ``compute_loss`` receives it."""
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer.data_collator(examples)


def trl_batch_to_ours(batch: dict) -> dict:
    """TRL's DPO batch (``input_ids`` ``[2B, T]`` chosen then rejected, ``attention_mask``, ``completion_mask``)
    as the six-key batch of :func:`dpo_teach.logprobs.concatenated_forward`: the same ids, labels -100 outside
    the completion."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    n = batch["input_ids"].shape[0] // 2
    out = {}
    for side, rows in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
        out[f"{side}_input_ids"] = batch["input_ids"][rows]
        out[f"{side}_attention_mask"] = batch["attention_mask"][rows]
        out[f"{side}_labels"] = labels[rows]
    return out


def trl_dpo_loss(trainer, batch: dict) -> tuple[float, dict]:
    """TRL's DPO loss on ``batch`` (no gradient step) and the metrics it logged for it (floats)."""
    trainer.model.eval()  # TRL files the metrics of an eval-mode forward under "eval"
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items() if v}
    return float(loss), metrics


def trl_pairwise_loss(trainer, batch: dict) -> tuple[float, dict]:
    """ORPO/CPO trainers' loss and metrics on ``batch`` (their batches already have our six keys)."""
    trainer.model.eval()
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, train_eval="eval")
    return float(loss), {k.removeprefix("eval_"): float(v) for k, v in metrics.items()}
