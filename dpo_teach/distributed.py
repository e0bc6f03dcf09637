"""Data-parallel training with ``torch.distributed``: the same trainer on several processes (``torchrun``).

Each of the W processes (ranks) holds a full copy of the policy wrapped in PyTorch's
``DistributedDataParallel`` (DDP), takes its slice of every global micro-batch of B pairs, and computes the loss
on its slice. DDP averages the gradients over the ranks during ``backward()``; each rank scales its loss by
W · B_r / B (B_r = its slice's size) so that the average is the gradient of the mean over all B pairs — the
same gradient, hence the same weights after every optimizer step, as one process on the whole batch.
Communication is DDP's (gloo on CPU, NCCL on CUDA); metrics are summed over ranks with ``all_reduce``.
Only rank 0 writes checkpoints and the final model.

SFT (:func:`dpo_teach.trainers.sft.train_sft`) averages over completion tokens, not pairs: each rank divides its
summed NLL by the global token count N (an ``all_reduce`` of the ranks' counts) and multiplies by W, so DDP's
average is again the single-process gradient of the mean over the global batch's N tokens.

    torchrun --nproc_per_node=2 -m dpo_teach dpo ...      # 2 processes on one machine (CPU: gloo)
    torchrun --nproc_per_node=2 -m dpo_teach sft ...      # the same for SFT

Without ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) every function here is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dpo_teach.device import get_device


def world_size() -> int:
    """Number of processes: the initialised group's size, else ``WORLD_SIZE`` from torchrun, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return (
        dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
    )


def is_main() -> bool:
    """True on rank 0, the one process that writes files."""
    return rank() == 0


def init(device: torch.device) -> bool:
    """Join the process group torchrun describes (NCCL on CUDA, gloo otherwise); True when data-parallel."""
    if world_size() < 2:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def local_device(device=None):
    """Under torchrun on CUDA: this rank's GPU ``cuda:LOCAL_RANK`` (made current); else ``device`` unchanged."""
    if world_size() < 2 or get_device(device).type != "cuda":
        return device
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class ModelCall(torch.nn.Module):
    """A module whose forward is ``fn(model, *args, **kwargs)``: what DDP wraps, so that any forward path of
    the step (the plain concatenated forward, prefix sharing, the head at response positions) runs inside
    DDP's forward, which DDP needs to prepare the gradient averaging of the following backward."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


def wrap(model: torch.nn.Module) -> DistributedDataParallel:
    """``model`` in DDP (rank 0's weights are broadcast to every rank here, so all ranks start equal)."""
    device = next(model.parameters()).device
    ids = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else None
    )
    return DistributedDataParallel(ModelCall(model), device_ids=ids)


def call(model, fn, *args, **kwargs):
    """``fn(model, *args, **kwargs)``, through DDP's forward when ``model`` is a :func:`wrap` result."""
    if isinstance(model, DistributedDataParallel):
        return model(fn, *args, **kwargs)
    return fn(model, *args, **kwargs)


def local_slice(indices: list, total: int) -> tuple[list, float]:
    """This rank's share of a global micro-batch and the factor its mean loss is multiplied by.

    ``indices``: the micro-batch's example indices (the same list on every rank); ``total``: the number of
    pairs in the optimizer step (over all its micro-batches). Rank r takes ``indices[r::W]``; the factor
    W · |slice| / total makes DDP's average over ranks the gradient of the mean over ``total`` pairs.
    """
    share = indices[rank() :: world_size()]
    return share, world_size() * len(share) / total


def all_sum(values: list[float]) -> list[float]:
    """``values`` summed element-wise over the ranks (float64 ``all_reduce``); unchanged without torchrun."""
    if world_size() < 2:
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flat = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    return flat.tolist()


def sum_metrics(sums: dict) -> dict:
    """Metric ``[sum, count]`` totals (:func:`dpo_teach.trainers.common.accumulate_metrics`) summed over ranks."""
    if world_size() < 2 or not sums:
        return sums
    keys = sorted(sums)
    flat = all_sum([v for k in keys for v in sums[k]])
    return {k: flat[2 * i : 2 * i + 2] for i, k in enumerate(keys)}


def check_micro_batches(sizes, unit: str = "pairs") -> None:
    """``ValueError`` unless every micro-batch (``sizes``: their numbers of ``unit``) gives each rank one."""
    if world_size() > 1 and min(sizes) < world_size():
        raise ValueError(
            f"a micro-batch of {min(sizes)} {unit} cannot be split over {world_size()} processes; use batch_size ≥ "
            f"{world_size()} and a number of train rows whose last batch is not smaller (or fewer processes)."
        )
