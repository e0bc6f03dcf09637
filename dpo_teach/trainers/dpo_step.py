"""One batch → the preference loss and TRL-named metrics, for any loss of :data:`dpo_teach.losses.LOSSES`.

Paired losses (DPO, IPO, hinge, robust, ORPO, SimPO): one concatenated forward of the policy over chosen and
rejected (:func:`dpo_teach.logprobs.concatenated_forward`, length-averaged when the loss is
``length_normalized``; ``config.forward_mode`` picks it or an equal, faster path of
:func:`dpo_teach.prefix_sharing.preference_forward`: the shared prompt once, logits at response positions only),
the reference log-probs (precomputed in the batch, or one no-grad forward of π_ref) when the loss
``needs_reference``, then the loss function. KTO (unpaired): log-probs of each completion and of the mismatched
pairs that estimate its reference point. The loop around it is :mod:`dpo_teach.trainers.dpo`.
The policy's forwards go through :func:`dpo_teach.distributed.call`, i.e. through DDP's forward when the
trainer runs data-parallel (``model`` is then the DDP-wrapped policy).
"""

from __future__ import annotations

import inspect

import torch

from dpo_teach.distributed import call
from dpo_teach.logprobs import forward_logps
from dpo_teach.prefix_sharing import preference_forward

#: arguments of a loss function that the step supplies itself (all others may be passed as ``loss_kwargs``)
FILLED_IN = {
    "policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps", "beta",
    "label_smoothing", "chosen_lengths", "rejected_lengths", "policy_logps", "ref_logps", "labels",
    "kl_policy_logps", "kl_ref_logps", "chosen_nll",
}  # fmt: skip
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_kl_logps")


def _logps(model, batch: dict, prefix: str, allowed_token_ids) -> torch.Tensor:
    keys = ("input_ids", "attention_mask", "labels")
    args = (batch[f"{prefix}_{k}"] for k in keys)
    return call(model, forward_logps, *args, allowed_token_ids=allowed_token_ids)


def reference_logps(
    ref_model, batch: dict, paired: bool, allowed_token_ids=None, forward_mode="plain"
) -> dict:
    """π_ref's log-probs ``[B]`` for ``batch``: the precomputed ones it carries, else one no-grad forward."""
    if any(k in batch for k in REF_KEYS):
        device = batch["label" if not paired else "chosen_input_ids"].device
        return {k: batch[k].to(device) for k in REF_KEYS if k in batch}
    with torch.no_grad():
        if paired:
            out = preference_forward(ref_model, batch, allowed_token_ids=allowed_token_ids, mode=forward_mode)
            return {"ref_chosen_logps": out.chosen_logps, "ref_rejected_logps": out.rejected_logps}
        return {
            "ref_logps": _logps(ref_model, batch, "completion", allowed_token_ids),
            "ref_kl_logps": _logps(ref_model, batch, "kl", allowed_token_ids),
        }


def preference_step(model, ref_model, batch: dict, config) -> tuple[torch.Tensor, dict]:
    """Mean loss over ``batch`` (differentiable) and per-example metric tensors named as TRL logs them.

    ``config``: a :class:`dpo_teach.trainers.dpo.DPOConfig` (``spec``, ``beta``, ``label_smoothing``,
    ``loss_kwargs``, ``allowed_token_ids``). A metric is a tensor of per-example values, or a ``(sum, count)``
    pair when its batch value is a ratio of sums (TRL's ``logits/*``: a mean over all response tokens).
    """
    spec, allowed, mode = config.spec, config.allowed_token_ids, getattr(config, "forward_mode", "plain")
    ref = reference_logps(ref_model, batch, spec.paired, allowed, mode) if spec.needs_reference else {}
    kwargs = {"beta": config.beta, **config.loss_kwargs}
    if config.label_smoothing:
        kwargs["label_smoothing"] = config.label_smoothing
    if not spec.paired:  # KTO
        policy = _logps(model, batch, "completion", allowed)
        with torch.no_grad():
            kl_policy = _logps(model, batch, "kl", allowed)
        labels = batch["label"]
        losses, r_w, r_l = spec(policy, ref["ref_logps"], labels, kl_policy, ref["ref_kl_logps"], **kwargs)
        z_ref = (kl_policy - ref["ref_kl_logps"]).mean().clamp(min=0)
        metrics = {"rewards/chosen": r_w, "rewards/rejected": r_l, "logps/chosen": policy.detach()[labels],
                   "logps/rejected": policy.detach()[~labels], "kl": z_ref[None]}  # fmt: skip
        return losses.mean(), metrics
    out = call(
        model, preference_forward, batch, average=spec.length_normalized, allowed_token_ids=allowed, mode=mode
    )
    if spec.needs_reference:
        if "chosen_lengths" in inspect.signature(spec.fn).parameters:  # IPO, length-normalised as in TRL
            kwargs.update(chosen_lengths=out.chosen_lengths, rejected_lengths=out.rejected_lengths)
        refs = (ref["ref_chosen_logps"], ref["ref_rejected_logps"])
        losses, r_w, r_l = spec(out.chosen_logps, out.rejected_logps, *refs, **kwargs)
    else:
        losses, r_w, r_l = spec(out.chosen_logps, out.rejected_logps, **kwargs)
    n_w, n_l = out.chosen_lengths.float(), out.rejected_lengths.float()
    metrics = {
        "rewards/chosen": r_w, "rewards/rejected": r_l, "rewards/margins": r_w - r_l,
        "rewards/accuracies": (r_w > r_l).float(),
        "logps/chosen": out.chosen_logps.detach(), "logps/rejected": out.rejected_logps.detach(),
        "logits/chosen": (out.mean_chosen_logits * n_w, n_w), "logits/rejected": (out.mean_rejected_logits * n_l, n_l),
    }  # fmt: skip
    return losses.mean(), metrics
