"""Where tensors live and in which precision.

Policy (one place, used by every trainer and the book):

* device: CUDA if present, else Apple MPS, else CPU. ``DPO_TEACH_DEVICE`` (e.g. ``cpu``) overrides it,
  so that an instructor on a GPU laptop can still reproduce the book's stored CPU numbers.
* precision: bf16 *autocast* on CUDA (weights and optimizer state stay float32), float32 elsewhere.
  Log-softmax is always taken in float32 (see :mod:`dpo_teach.logprobs`).
"""

from __future__ import annotations

import contextlib
import os

import torch

_VALID = ("cpu", "cuda", "mps")


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on: ``prefer`` if given, else ``$DPO_TEACH_DEVICE``, else CUDA → MPS → CPU."""
    if prefer is not None and not isinstance(prefer, str | torch.device):
        raise TypeError(f"device must be a str such as 'cpu' or a torch.device, got {type(prefer).__name__}.")
    # Name where a bad value came from, so the message points at the thing to fix.
    source = "device" if prefer is not None else "DPO_TEACH_DEVICE"
    choice = prefer if prefer is not None else os.environ.get("DPO_TEACH_DEVICE")
    if choice is not None:
        try:
            device = torch.device(choice)
        except RuntimeError:
            raise ValueError(f"{source}={str(choice)!r} is not a device; use one of {_VALID}.") from None
        if device.type not in _VALID:
            raise ValueError(f"{source}={str(choice)!r} is not supported; use one of {_VALID}.")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"{source}={str(choice)!r} was requested but torch.cuda.is_available() is False; use 'cpu'."
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"{source}={str(choice)!r} was requested but MPS is not available; use 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """The compute dtype of the forward pass on ``device``: bfloat16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def autocast(device: torch.device | str):
    """Context manager for the forward pass: bf16 autocast on CUDA, a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device | str | None = None) -> str:
    """One line naming the device and the precision policy (printed by the book's environment check)."""
    device = get_device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple MPS"
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    return f"{device.type} ({name}); forward in {str(autocast_dtype(device)).removeprefix('torch.')}"


@contextlib.contextmanager
def single_thread():
    """Run the block with one intra-op thread, then restore the previous count.

    The book's models are 64 wide: a second thread buys nothing, and on a busy 2-core machine a spinning
    OpenMP pool was measured 5–20× slower. Used around every CPU training run the book times.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
