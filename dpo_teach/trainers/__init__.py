"""Trainers for both pipelines: SFT → DPO, and SFT → reward model → PPO.

Each trainer is one module; the loop pieces they share (batches, optimizer + warm-up, progress bar, callback,
history) live in :mod:`dpo_teach.trainers.common`, checkpoints and resuming in
:mod:`dpo_teach.trainers.checkpoints`. Names resolve lazily, so importing one trainer does not import the others.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "train_sft": "sft",
    "sft_loss": "sft",
    "DPOConfig": "dpo",
    "DPOTrainer": "dpo",
    "train_dpo": "dpo",
    "train_reward_model": "reward",
    "train_ppo": "ppo",
    "RLOOConfig": "policy_gradient",
    "GRPOConfig": "policy_gradient",
    "train_rloo": "policy_gradient",
    "train_grpo": "policy_gradient",
    "train_iterative_dpo": "online_dpo",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"dpo_teach.trainers.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dpo_teach.trainers' has no attribute {name!r}")
