"""Input checks shared by :mod:`dpo_teach.losses`, :mod:`dpo_teach.theory` and :mod:`dpo_teach.logprobs`.

Each check raises a ``TypeError`` or ``ValueError`` whose message names the argument and says how to fix it,
so that a student who passes a list, a NaN or a negative β learns what went wrong from the message alone.
"""

from __future__ import annotations

import math
from numbers import Real

import torch


def check_tensor(name: str, value, *, floating: bool = True) -> torch.Tensor:
    """Return ``value`` if it is a tensor (of a floating dtype when ``floating``), else raise ``TypeError``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(value).__name__}; "
            "wrap it with torch.tensor(..., dtype=torch.float32)."
        )
    if floating and not value.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype, got {value.dtype}; convert it with {name}.float()."
        )
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``value`` holds a NaN or ±inf (a log-prob of -inf: a zero-probability response)."""
    if not bool(torch.isfinite(value).all()):
        bad = "NaN" if bool(torch.isnan(value).any()) else "inf"
        raise ValueError(
            f"{name} contains {bad}; every entry must be finite (a log-prob of -inf means probability 0 - "
            "check the masking and the inputs that produced it)."
        )
    return value


def check_float_tensors(**tensors: torch.Tensor) -> None:
    """Check that every keyword argument is a finite floating tensor and that all have one shape."""
    shapes = {}
    for name, value in tensors.items():
        check_finite(name, check_tensor(name, value))
        shapes[name] = tuple(value.shape)
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}{list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"shapes differ: {listed}; pass one value per example, all of the same shape.")


def check_preference_logps(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
) -> None:
    """The four log-prob tensors of a preference pair: finite floating tensors of one shape."""
    check_float_tensors(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )


def check_logps(name: str, value) -> torch.Tensor:
    """Return ``value`` if it is a floating tensor of log-probs: finite or -inf (probability 0), never NaN/+inf."""
    check_tensor(name, value)
    if bool(torch.isnan(value).any()) or bool((value == float("inf")).any()):
        raise ValueError(f"{name} contains NaN or +inf; log-probs must be finite or -inf (probability 0).")
    return value


def check_normalised(name: str, value) -> torch.Tensor:
    """Return ``value`` if it holds log-probs whose exponentials sum to 1 (±1e-4) over the last dimension."""
    check_logps(name, value)
    total = torch.logsumexp(value.double(), dim=-1)
    if bool((total.abs() > 1e-4).any()):
        raise ValueError(
            f"{name} is not normalised over the last dimension (log-sum-exp = {total.abs().max().item():.3g}, "
            "should be 0); pass log-probabilities, e.g. torch.log_softmax(logits, dim=-1)."
        )
    return value


def check_positive(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number > 0, else raise (β, τ, weights)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a positive number, got {type(value).__name__}; pass e.g. {name}=0.1."
        )
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}; pass e.g. {name}=0.1.")
    return value


def check_nonnegative(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number ≥ 0, else raise (margins such as SimPO's γ)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number >= 0, got {type(value).__name__}; pass e.g. {name}=0.5.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def check_label_smoothing(value) -> float:
    """Return ε as a float if 0 ≤ ε < 0.5 (the probability that a preference label is flipped)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"label_smoothing must be a number in [0, 0.5), got {type(value).__name__}.")
    value = float(value)
    if not (0.0 <= value < 0.5):
        raise ValueError(
            f"label_smoothing must be in [0, 0.5), got {value}: it is the probability that a label is flipped, "
            "and at 0.5 the labels carry no information. Use 0.0 for plain DPO."
        )
    return value
