"""Checkers for chapter 13's exercises (scaling up).

* :func:`check_dpo_memory_gb` — exercise 13.1: GB of model states to DPO-train an N-parameter model in bf16
  mixed precision with AdamW and a live reference model.
* :func:`check_bf16_spacing` — exercise 13.2: the gap between adjacent bfloat16 numbers near a value.
"""

from __future__ import annotations

import math

import torch

from dpo_teach.exercises import Verdict, finite_number, first_slip
from dpo_teach.memory import training_memory


def check_dpo_memory_gb(answer, n_params=7e9) -> Verdict:
    """Exercise 13.1: is ``answer`` the GB (10⁹ bytes) of weights, gradients, float32 master copy, AdamW states
    and bf16 reference weights for DPO on a model of ``n_params`` parameters (activations not counted)?

    The truth is :func:`dpo_teach.memory.training_memory` with ``recipe="bf16_mixed"``, ``optimizer="adamw"``,
    ``reference="live"``: n · (2 + 2 + 4 + 8 + 2) bytes = 18 n bytes (126 GB for 7e9).
    """
    answer = finite_number("answer", answer)
    n_params = finite_number("n_params", n_params)
    if n_params <= 0:
        raise ValueError(f"n_params={n_params} must be > 0.")
    gb = lambda **kw: training_memory(n_params, recipe="bf16_mixed", optimizer="adamw", **kw).total / 1e9
    truth, per_param = gb(), n_params / 1e9
    close = lambda value: math.isclose(answer, value, rel_tol=0.01)
    if close(truth):
        return Verdict(
            True,
            f"{truth:.4g} GB: 16 bytes per parameter for the policy (bf16 weights 2 + bf16 grads 2 + float32 "
            f"master copy 4 + Adam m and v 8) and 2 for the frozen bf16 reference.",
        )
    hints = [
        (truth * 1e9, "that is in bytes; the exercise asks for GB (10⁹ bytes)."),
        (truth * 1e9 / 2**30, "that is GiB (2³⁰ bytes); the exercise asks for GB (10⁹ bytes)."),
        (
            gb(reference="none"),
            "the reference model is missing: it must be held too (2 bytes per parameter).",
        ),
        (
            2 * gb(reference="none"),
            "the reference model is frozen: it needs its weights only, no gradients, master copy or Adam states.",
        ),
        (
            gb() + 2 * per_param,
            "the frozen reference needs no float32 copy: bf16 weights, 2 bytes per parameter.",
        ),
        (
            gb() - 4 * per_param,
            "4 bytes per parameter are missing: the float32 master copy of the weights, or one of Adam's two "
            "float32 states (m and v).",
        ),
        (gb() - 8 * per_param, "AdamW keeps two float32 states per parameter, m and v (8 bytes)."),
        (
            4 * per_param,
            "that is the bf16 weights of the policy and the reference only; add gradients and optimizer.",
        ),
    ]
    return first_slip(
        close,
        hints,
        f"{answer:.4g} GB is not it. Count bytes per parameter: policy weights, gradients, float32 master copy, "
        "two Adam states, and the reference model's weights; multiply by the parameter count.",
    )


def bf16_spacing(value) -> float:
    """The gap between ``value`` rounded to bfloat16 and the next bfloat16 number away from zero, read from
    the bit pattern (the int16 view of the bfloat16 + 1)."""
    value = finite_number("value", value)
    if value == 0:
        raise ValueError("value must be non-zero (near 0 the spacing is that of the subnormal numbers).")
    x = torch.tensor([abs(value)], dtype=torch.bfloat16)
    nxt = (x.view(torch.int16) + 1).view(torch.bfloat16)
    return float(nxt.float() - x.float())


def check_bf16_spacing(answer, value=-300.0) -> Verdict:
    """Exercise 13.2: is ``answer`` the spacing of bfloat16 numbers at ``value`` (e.g. a sequence log-prob)?"""
    answer = finite_number("answer", answer)
    truth = bf16_spacing(value)
    close = lambda v: math.isclose(answer, v, rel_tol=1e-3)
    if close(truth):
        return Verdict(
            True,
            f"{truth:g}: bf16 keeps 8 significant bits, so between 2^k and 2^(k+1) the numbers are 2^(k−7) apart. "
            "A summed log-prob held in bf16 is only known to about ± half of that.",
        )
    hints = [
        (truth / 2, "that is the largest rounding error (half the spacing); the spacing is twice that."),
        (
            2.0**-7,
            "that is the relative spacing (ε of bf16, 2⁻⁷); multiply by the power of two below |value|.",
        ),
        (truth * 2.0**-3, "that is the spacing of float16 (11 significant bits); bf16 has 8."),
        (truth * 2.0**-16, "that is the spacing of float32 (24 significant bits); bf16 has 8."),
        (truth * 2, "off by a factor 2: bf16 has 8 significant bits (7 stored + 1 implicit), so ε = 2⁻⁷."),
    ]
    for v, hint in hints:
        if close(v):
            return Verdict(False, hint)
    return Verdict(
        False,
        f"{answer:g} is not it: find the power of two 2^k ≤ |value| < 2^(k+1); bf16's spacing there is 2^(k−7).",
    )


__all__ = ["bf16_spacing", "check_bf16_spacing", "check_dpo_memory_gb"]
