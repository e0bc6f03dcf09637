"""One seeding helper, used everywhere: the same ``seed`` gives the same numbers."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) and return a fresh ``torch.Generator``.

    Functions that sample take a ``seed=`` argument and call this (or use the returned generator), so a
    notebook cell re-run gives the same output and nbval can compare it strictly.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}; pass e.g. seed=0.")
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed={seed} is out of range; use an int in [0, 2**63), e.g. seed=0.")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeding the legacy global RNG is the point here
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)
