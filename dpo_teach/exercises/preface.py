"""Checker for the preface's exercise: how many networks each pipeline holds while it trains."""

from __future__ import annotations

from dpo_teach._validate import is_int
from dpo_teach.exercises import Verdict
from dpo_teach.plotting import DPO_PIPELINE, RLHF_PIPELINE, models_in_memory


def _count(name: str, value) -> int:
    if not is_int(value):
        raise TypeError(
            f"{name} must be an int (a number of networks), got {type(value).__name__}; e.g. {name}=3."
        )
    if value < 0:
        raise ValueError(f"{name}={value} is negative; it counts networks, so pass an int >= 0.")
    return value


def check_models_in_memory(rlhf_ppo: int, dpo: int) -> Verdict:
    """Check the number of networks in memory during RLHF's PPO stage and during DPO training.

    Args:
        rlhf_ppo: networks that must be held (and run forward) at each PPO step.
        dpo: networks that must be held at each DPO step.
    """
    rlhf_ppo, dpo = _count("rlhf_ppo", rlhf_ppo), _count("dpo", dpo)
    truth_ppo, truth_dpo = models_in_memory(RLHF_PIPELINE), models_in_memory(DPO_PIPELINE)
    hints = []
    if rlhf_ppo != truth_ppo:
        hints.append(
            f"rlhf_ppo={rlhf_ppo}: count every network that runs at a PPO step — the one that generates, the one "
            "that scores the samples, the one the KL term compares against, and the one that estimates advantages."
        )
    if dpo != truth_dpo:
        hints.append(
            f"dpo={dpo}: the DPO loss needs log π_θ(y|x) and log π_ref(y|x) for y_w and y_l; "
            "count the networks that produce those numbers."
        )
    if hints:
        return Verdict(False, " ".join(hints))
    return Verdict(
        True,
        f"PPO holds {truth_ppo} networks (π_θ and V_ψ trained, π_ref and r_φ frozen); DPO holds {truth_dpo} "
        "(π_θ trained, π_ref frozen). Chapter 13 shows how precomputing the reference log-probs frees π_ref too.",
    )


__all__ = ["check_models_in_memory"]
