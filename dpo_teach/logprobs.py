"""From logits to sequence log-probabilities: log π(y | x) = Σ_t log π(y_t | x, y_<t).

Every loss in :mod:`dpo_teach.losses` starts from these numbers, so this module fixes three conventions:

* **Shift by one.** ``logits[:, t]`` predicts token ``t + 1``, so the log-prob of ``labels[:, t + 1]`` is read
  from ``logits[:, t]``. Positions whose label is ``-100`` (the prompt and the padding) are ignored: the sum
  runs over the response tokens only.
* **Float32.** Logits are upcast to float32 before the log-softmax, whatever dtype the model ran in (bf16 on CUDA);
  float64 logits (tests, exact enumeration) stay float64.
* **Summed** over response tokens, as in the DPO paper; ``average=True`` divides by the number of response
  tokens (what IPO-as-in-TRL, ORPO and SimPO use). Sum and mean give different losses; say which you use.

The computation is :func:`plain_token_logps`: ``log_softmax(logits).gather(...)``, read first. It materialises a
second ``batch × length × vocab`` tensor (1.6 GB for batch 16, length 512, GPT-2's vocabulary), so the trainers
use an equal, memory-saving option (:func:`blockwise_token_logps`, at the end of the module): log π(y_t) =
logit[y_t] − logsumexp(logits), taken block by block over response positions only, in a custom autograd function
whose backward writes softmax − one-hot into the one gradient tensor autograd needs anyway
(``benchmarks/logps_memory.py`` measures it; a test proves the two equal, values and gradients).

The *world's policy*: with ``allowed_token_ids`` the softmax runs over those vocabulary columns
only, so that the probabilities of all responses a world can enumerate sum to exactly 1 for any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_teach.device import autocast

IGNORE_INDEX = -100
_BLOCK_ELEMENTS = 1 << 22  # float32 elements per block (16 MiB): the only full-vocabulary temporaries

BATCH_KEYS = (
    "chosen_input_ids",
    "chosen_attention_mask",
    "chosen_labels",
    "rejected_input_ids",
    "rejected_attention_mask",
    "rejected_labels",
)


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, T-1]``: True where ``labels[:, 1:]`` is a response token (not -100); aligned with logits[:, :-1]."""
    return labels[:, 1:] != IGNORE_INDEX


def response_lengths(labels: torch.Tensor) -> torch.Tensor:
    """Long ``[B]``: the number of response tokens |y| per row (labels other than ``-100`` after the shift)."""
    return response_mask(labels).sum(-1)


def plain_token_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y_t) = log_softmax(logits[t])[y_t]: the textbook computation, ``[B, T-1]``, 0 where ``mask`` is False.

    ``logits`` ``[B, T, V]`` (any float dtype; upcast to float32, float64 stays), ``targets`` ``[B, T-1]`` valid
    ids (the labels shifted by one), ``mask`` ``[B, T-1]`` the response positions. It holds a second
    ``B × T × V`` tensor (the log-softmax) for the backward pass; :func:`blockwise_token_logps` does not.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logps = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return logps.masked_fill(~mask, 0.0)


def blockwise_token_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`plain_token_logps`, computed block by block over response positions in a custom autograd function
    whose backward writes softmax − one-hot into the one gradient tensor autograd needs anyway: no second
    ``B × T × V`` tensor (the memory-saving option; equal to the plain path by test, values and gradients)."""
    return _TokenLogps.apply(logits, targets, mask)


def _allowed_tensor(allowed_token_ids, vocab: int, device) -> torch.Tensor:
    if isinstance(allowed_token_ids, torch.Tensor):
        ids = allowed_token_ids
    elif isinstance(allowed_token_ids, (list, tuple)):
        ids = torch.tensor(list(allowed_token_ids), dtype=torch.long)
    else:
        raise TypeError(
            "allowed_token_ids must be a 1-D LongTensor or a list of ints, got "
            f"{type(allowed_token_ids).__name__}; pass world.allowed_token_ids (or None for the full vocabulary)."
        )
    if ids.dim() != 1 or ids.numel() == 0 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(
            "allowed_token_ids must be a non-empty 1-D list/tensor of integer token ids; pass "
            "world.allowed_token_ids (or None for the full vocabulary)."
        )
    ids = ids.to(device=device, dtype=torch.long)
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(
            f"allowed_token_ids must lie in [0, {vocab}) (the logits' vocabulary), got {ids.tolist()}."
        )
    if ids.unique().numel() != ids.numel():
        raise ValueError("allowed_token_ids contains repeated ids; pass each allowed token once.")
    return ids


def _check_logits_labels(logits, labels) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 3:
        raise TypeError(
            "logits must be a floating torch.Tensor of shape [batch, length, vocab] (model(...).logits)."
        )
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            "labels must be an integer torch.Tensor [batch, length] (token ids, -100 where ignored)."
        )
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels shape {list(labels.shape)} must equal logits.shape[:2] = {list(logits.shape[:2])}; "
            "labels are the input ids with prompt and padding set to -100 (not shifted - the shift happens here)."
        )
    if labels.shape[1] < 2:
        raise ValueError("sequences must have length >= 2 (a prompt token and at least one response token).")
    valid = (labels == IGNORE_INDEX) | ((labels >= 0) & (labels < logits.shape[-1]))
    if not bool(valid.all()):
        raise ValueError(f"labels must be -100 or token ids in [0, {logits.shape[-1]}); found other values.")
    empty = (response_lengths(labels) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"rows {empty} of labels have no response token after the shift (all -100); every sequence needs "
            "at least one completion token - drop those examples or lengthen max_length (with allowed_token_ids, "
            "check that the responses' tokens are in it)."
        )


def per_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, allowed_token_ids=None, *, memory_saving: bool = True
) -> torch.Tensor:
    """Per-token log-probs ``[B, T-1]``: log π(labels[:, t+1] | ·) at response positions, 0 at ignored ones.

    Float32 (float64 for float64 logits).
    ``logits`` ``[B, T, V]``; ``labels`` ``[B, T]`` (-100 on prompt and padding). With ``allowed_token_ids``
    (K ids) the log-softmax is over ``logits[..., allowed_token_ids]`` and every response label must be allowed.
    ``memory_saving``: :func:`blockwise_token_logps` (the trainers' path: its float rounding is what every
    stored number of the book was computed with) or, False, :func:`plain_token_logps`; equal up to rounding.
    """
    # the alphabet first: a bad one empties the labels, and the length check would then blame max_length
    ids = None
    if allowed_token_ids is not None and isinstance(logits, torch.Tensor):
        ids = _allowed_tensor(allowed_token_ids, logits.shape[-1], logits.device)
    _check_logits_labels(logits, labels)
    mask = response_mask(labels)
    targets = labels[:, 1:].clamp(min=0)
    if ids is not None:
        position = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=logits.device)
        position[ids] = torch.arange(ids.numel(), device=logits.device)
        targets = position[targets]
        if bool((targets[mask] < 0).any()):
            raise ValueError(
                "a response label is not in allowed_token_ids; the world's alphabet must contain every response "
                "token (and EOS for variable-length responses)."
            )
        targets = targets.clamp(min=0)
        logits = logits.index_select(-1, ids)  # [B, T, K]: small, K is the world's alphabet
    out = (blockwise_token_logps if memory_saving else plain_token_logps)(logits, targets, mask)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            "logits produced a non-finite log-prob at a response position; check logits for NaN/inf."
        )
    return out


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False, allowed_token_ids=None):
    """Sequence log-probs ``[B]``: Σ_t log π(y_t | x, y_<t) over response tokens (the mean if ``average``).

    Float32 whatever the logits' dtype (float64 for float64 logits).

    Args:
        logits: ``[B, T, V]`` model output for the whole sequence ``x ⊕ y`` (any float dtype; upcast here).
        labels: ``[B, T]`` the input ids with prompt and padding positions set to ``-100`` (unshifted).
        average: False → log π(y|x) (the DPO paper); True → (1/|y|) log π(y|x), |y| = response tokens.
        allowed_token_ids: None (full vocabulary) or the world's alphabet (see module docstring).
    """
    logps = per_token_logps(logits, labels, allowed_token_ids).sum(-1)
    return logps / response_lengths(labels) if average else logps


def _model_logits(model, input_ids, attention_mask) -> torch.Tensor:
    device = next(model.parameters()).device
    with autocast(device):
        out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
    return out.logits if hasattr(out, "logits") else out


def forward_logps(model, input_ids, attention_mask, labels, *, average=False, allowed_token_ids=None):
    """One forward of ``model`` (bf16 autocast on CUDA, handled here) → :func:`sequence_logps`, float32 ``[B]``.

    For SFT, KTO and PPO: a single batch of right-padded sequences ``[B, T]``; tensors are moved to the
    model's device. Gradients flow unless the caller wraps it in ``torch.no_grad()`` (the reference model).
    """
    logits = _model_logits(model, input_ids, attention_mask)
    return sequence_logps(logits, labels.to(logits.device), average, allowed_token_ids)


@dataclass
class ConcatenatedOutput:
    """What :func:`concatenated_forward` returns; every field is ``[B]``, float32 unless stated.

    ``chosen_logps``/``rejected_logps``: log π(y|x) summed over response tokens (divided by the lengths when
    the forward was asked for ``average=True``). ``chosen_lengths``/``rejected_lengths`` (long): |y|. ``mean_chosen_logits``/
    ``mean_rejected_logits`` (detached): the mean over the full vocabulary and the response positions of the
    logits that predict the response, as TRL logs ``logits/chosen``; TRL's batch value is
    ``(mean_chosen_logits * chosen_lengths).sum() / chosen_lengths.sum()``.
    """

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    mean_chosen_logits: torch.Tensor
    mean_rejected_logits: torch.Tensor


def _pad_right(x: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, length - x.shape[1]), value=value)


def _check_batch(batch) -> None:
    if not isinstance(batch, dict):
        raise TypeError(f"batch must be a dict with keys {BATCH_KEYS}, got {type(batch).__name__}.")
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"batch is missing {missing}; a preference batch needs {BATCH_KEYS} (see dpo_teach.data)."
        )
    for side in ("chosen", "rejected"):
        shapes = {k: tuple(batch[f"{side}_{k}"].shape) for k in ("input_ids", "attention_mask", "labels")}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
            raise ValueError(
                f"{side}_input_ids/attention_mask/labels must share one 2-D shape [B, T], got {shapes}."
            )
    if batch["chosen_input_ids"].shape[0] != batch["rejected_input_ids"].shape[0]:
        raise ValueError("chosen_* and rejected_* must have the same batch size (one rejected per chosen).")


def concatenated_forward(
    model, batch: dict, *, average: bool = False, allowed_token_ids=None
) -> ConcatenatedOutput:
    """Chosen and rejected in ONE forward: right-pad both to one length, stack ``[2B, T]``, split back.

    ``batch`` holds ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels`` and the same three for
    ``rejected`` (right-padded, possibly of different lengths ``T_w``, ``T_l``; labels -100 on prompt and padding).
    Tensors are moved to the model's device; bf16 autocast on CUDA is applied here. Call it under
    ``torch.no_grad()`` for the reference model. One pass instead of two halves the kernel launches; with right
    padding and the attention mask, each row's log-probs equal those of a forward on that row alone.
    """
    _check_batch(batch)
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    cat = {
        key: torch.cat(
            [
                _pad_right(batch[f"chosen_{key}"], length, pad),
                _pad_right(batch[f"rejected_{key}"], length, pad),
            ]
        )
        for key, pad in (("input_ids", 0), ("attention_mask", 0), ("labels", IGNORE_INDEX))
    }
    logits = _model_logits(model, cat["input_ids"], cat["attention_mask"])
    labels = cat["labels"].to(logits.device)
    logps = sequence_logps(logits, labels, average, allowed_token_ids)
    lengths = response_lengths(labels)
    with torch.no_grad():
        vocab_mean = logits[:, :-1].mean(-1, dtype=torch.float32)
        mean_logits = (vocab_mean * response_mask(labels)).sum(-1) / lengths
    n = batch["chosen_input_ids"].shape[0]
    return ConcatenatedOutput(
        chosen_logps=logps[:n],
        rejected_logps=logps[n:],
        chosen_lengths=lengths[:n],
        rejected_lengths=lengths[n:],
        mean_chosen_logits=mean_logits[:n],
        mean_rejected_logits=mean_logits[n:],
    )


# ---------------------------------------------------------------- the memory-saving path, equal by test
def _blocks(mask: torch.Tensor, vocab: int):
    """Yield ``(b0, b1, t0, t1)`` blocks of ≤ ``_BLOCK_ELEMENTS`` logits covering every True entry of ``mask``."""
    batch, steps = mask.shape
    rows = max(1, _BLOCK_ELEMENTS // max(1, steps * vocab))
    for b0 in range(0, batch, rows):
        b1 = min(batch, b0 + rows)
        used = mask[b0:b1].any(0).nonzero().flatten()
        if used.numel() == 0:
            continue
        first, last = int(used[0]), int(used[-1]) + 1  # prompt tokens before `first` are never touched
        span = max(1, _BLOCK_ELEMENTS // ((b1 - b0) * vocab))
        for t0 in range(first, last, span):
            yield b0, b1, t0, min(last, t0 + span)


class _TokenLogps(torch.autograd.Function):
    """log π(y_t) = logits[t, y_t] − logsumexp(logits[t]) for t < T-1, computed and differentiated in blocks.

    Inputs: logits ``[B, T, V]`` (any float dtype), targets ``[B, T-1]`` (valid ids), mask ``[B, T-1]``.
    Output: ``[B, T-1]`` in float32 (float64 for float64 logits), zero where ``mask`` is False.
    Gradient w.r.t. logits[t]: mask · g · (one_hot(y_t) − softmax(logits[t])), written block by block.
    """

    @staticmethod
    def forward(ctx, logits, targets, mask):
        dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16/fp16 → float32; float64 stays
        out = torch.zeros(mask.shape, dtype=dtype, device=logits.device)
        lse = torch.zeros_like(out)
        for b0, b1, t0, t1 in _blocks(mask, logits.shape[-1]):
            block = logits[b0:b1, t0:t1].to(dtype)
            lse[b0:b1, t0:t1] = torch.logsumexp(block, dim=-1)
            picked = block.gather(-1, targets[b0:b1, t0:t1, None]).squeeze(-1)
            out[b0:b1, t0:t1] = picked - lse[b0:b1, t0:t1]
        ctx.save_for_backward(logits, targets, mask, lse)
        return out.masked_fill_(~mask, 0.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        logits, targets, mask, lse = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)
        g = grad_out.to(lse.dtype).masked_fill(~mask, 0.0)
        for b0, b1, t0, t1 in _blocks(mask, logits.shape[-1]):
            gb = g[b0:b1, t0:t1, None]
            d = (logits[b0:b1, t0:t1].to(lse.dtype) - lse[b0:b1, t0:t1, None]).exp_().mul_(-gb)
            d.scatter_add_(-1, targets[b0:b1, t0:t1, None], gb)
            grad_logits[b0:b1, t0:t1] = d
        return grad_logits, None, None
