"""TRL as an independent reference: its trainers built on a tiny local GPT-2 (no download), for parity tests.

TRL is *imported* here to compare against, never copied. Everything is built from configs: a word-level
tokenizer (:func:`dpo_teach.models.build_word_tokenizer`), a ``GPT2LMHeadModel`` from a ``GPT2Config``, and a
handful of preference rows. The builders return TRL trainers with ``report_to=[]`` and ``output_dir`` in a
temporary folder. The DPO builder and the batch helpers (:func:`trl_collate`: TRL's own collated batch;
:func:`trl_batch_to_ours`: the same token ids as the batch of :func:`dpo_teach.logprobs.concatenated_forward`;
:func:`trl_dpo_loss`) live in :mod:`dpo_teach.trl_compat`, which chapter 13 uses too, and are re-exported here.

Used by ``tests/test_trl_parity_losses.py`` (loss level) and by the trainer-level parity test.
"""

from __future__ import annotations

import copy

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_teach.models import build_word_tokenizer
from dpo_teach.trl_compat import (  # noqa: F401 (re-exported for the parity tests)
    trl_batch_to_ours,
    trl_collate,
    trl_dpo_loss,
    trl_dpo_trainer,
    trl_training_args,
)

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
    return trl_training_args(tmp_path, per_device_train_batch_size=len(PREFERENCE_ROWS))


def build_dpo_trainer(policy, reference, tokenizer, tmp_path, *, rows=PREFERENCE_ROWS, **config):
    """``trl.DPOTrainer`` with ``DPOConfig(**config)``, e.g. ``loss_type=["ipo"]``, ``beta``, ``label_smoothing``."""
    return trl_dpo_trainer(policy, reference, tokenizer, rows, tmp_path, **config)


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


def trl_pairwise_loss(trainer, batch: dict) -> tuple[float, dict]:
    """ORPO/CPO trainers' loss and metrics on ``batch`` (their batches already have our six keys)."""
    trainer.model.eval()
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, train_eval="eval")
    return float(loss), {k.removeprefix("eval_"): float(v) for k, v in metrics.items()}
