"""One seeding helper, used everywhere: the same ``seed`` gives the same numbers; and the RNG states that a
checkpoint saves and a resumed run restores (:func:`rng_state`, :func:`set_rng_state`)."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import torch

from dpo_teach._validate import is_int


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) and return a fresh ``torch.Generator``.

    Functions that sample take a ``seed=`` argument and call this (or use the returned generator), so a
    notebook cell re-run gives the same output and nbval can compare it strictly.
    """
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}; pass e.g. seed=0.")
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed={seed} is out of range; use an int in [0, 2**63), e.g. seed=0.")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeding the legacy global RNG is the point here
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def _encode_tensor(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_tensor(s: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)


def rng_state() -> dict:
    """The global RNG states (Python, NumPy, torch CPU/CUDA) as a JSON-serialisable dict."""
    np_state = np.random.get_state()  # noqa: NPY002 (seed_everything seeds the legacy global state)
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": _encode_tensor(torch.get_rng_state()),
        "cuda": [_encode_tensor(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(  # noqa: NPY002
        (state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:])
    )
    torch.set_rng_state(_decode_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_tensor(s) for s in state["cuda"]])
