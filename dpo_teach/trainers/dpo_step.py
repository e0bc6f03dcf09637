"""One batch → the preference loss and TRL-named metrics, for any loss of :data:`dpo_teach.losses.LOSSES`.

:func:`dpo_step` (the paired losses: DPO, IPO, hinge, robust, ORPO, SimPO), top to bottom:

1. one forward of the policy over chosen and rejected → log π_θ(y_w|x), log π_θ(y_l|x) ``[B]``
   (:func:`dpo_teach.prefix_sharing.preference_forward`: :func:`dpo_teach.logprobs.concatenated_forward`, or an
   equal, faster path picked by ``config.forward_mode``; length-averaged when the loss is ``length_normalized``);
2. the loss of the registry entry, given the reference log-probs log π_ref(y_w|x), log π_ref(y_l|x) that the
   caller passes (precomputed once, or :func:`reference_logps`: a no-grad forward of π_ref) and the options the
   entry declares (``label_smoothing``, the lengths for IPO, ``loss_kwargs``);
3. the metrics as TRL logs them: ``rewards/*`` = β (log π_θ − log π_ref), ``logps/*``, ``logits/*``.

:func:`kto_step` is KTO's (unpaired rows): log π_θ of each completion and, without gradient, of the mismatched
pairs whose log-ratio estimates its reference point (:func:`dpo_teach.losses.kto_reference_point`).
:func:`preference_step` is the one-call form the book uses: reference log-probs from a model, then either step.
The loop around them is :mod:`dpo_teach.trainers.dpo`. The policy's forwards go through
:func:`dpo_teach.distributed.call`, i.e. through DDP's forward when the trainer runs data-parallel.
"""

from __future__ import annotations

import torch

from dpo_teach.distributed import call
from dpo_teach.logprobs import forward_logps
from dpo_teach.losses import kto_reference_point
from dpo_teach.prefix_sharing import preference_forward

#: the reference log-probs each kind of step takes, as precomputed into the examples (and so the batch)
REF_KEYS = {True: ("ref_chosen_logps", "ref_rejected_logps"), False: ("ref_logps", "ref_kl_logps")}


def _logps(model, batch: dict, prefix: str, allowed_token_ids) -> torch.Tensor:
    """log π(y|x) ``[B]`` of the ``{prefix}_*`` sequences of ``batch`` (KTO's ``completion`` or ``kl``)."""
    args = (batch[f"{prefix}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
    return call(model, forward_logps, *args, allowed_token_ids=allowed_token_ids)


def _loss_options(config) -> dict:
    """β, ε (for the entries that declare ``label_smoothing``) and ``loss_kwargs``, as keyword arguments."""
    options = {"beta": config.beta, **config.loss_kwargs}
    if config.label_smoothing:
        options["label_smoothing"] = config.label_smoothing
    return options


@torch.no_grad()
def reference_logps(
    ref_model, batch: dict, paired: bool, allowed_token_ids=None, forward_mode="plain"
) -> dict:
    """π_ref's log-probs ``[B]`` for ``batch`` by one no-grad forward, under the names of :data:`REF_KEYS`."""
    if paired:
        out = preference_forward(ref_model, batch, allowed_token_ids=allowed_token_ids, mode=forward_mode)
        return {"ref_chosen_logps": out.chosen_logps, "ref_rejected_logps": out.rejected_logps}
    return {
        "ref_logps": _logps(ref_model, batch, "completion", allowed_token_ids),
        "ref_kl_logps": _logps(ref_model, batch, "kl", allowed_token_ids),
    }


def stored_reference_logps(batch: dict, paired: bool) -> dict:
    """The reference log-probs precomputed into ``batch`` (``DPOTrainer.precompute_reference``), by name."""
    missing = [key for key in REF_KEYS[paired] if key not in batch]
    if missing:
        raise ValueError(
            f"the batch carries no precomputed {missing}; pass ref_model=... or precompute them first "
            "(DPOTrainer.precompute_reference(), which train() runs when precompute_ref_logps=True)."
        )
    device = batch["chosen_input_ids" if paired else "label"].device
    return {key: batch[key].to(device) for key in REF_KEYS[paired]}


def dpo_step(policy, batch: dict, config, ref_chosen_logps=None, ref_rejected_logps=None):
    """Mean loss over a paired ``batch`` (differentiable) and per-example metric tensors named as TRL logs them.

    ``config``: a :class:`~dpo_teach.trainers.dpo.DPOConfig` (``spec``, ``beta``, ``label_smoothing``,
    ``loss_kwargs``, ``allowed_token_ids``, ``forward_mode``). ``ref_chosen_logps``/``ref_rejected_logps``
    ``[B]``: log π_ref(y_w|x), log π_ref(y_l|x), for the losses that need a reference (None for ORPO/SimPO).
    A metric is a tensor of per-example values, or a ``(sum, count)`` pair when its batch value is a ratio of
    sums (TRL's ``logits/*``: a mean over all response tokens).
    """
    spec, options = config.spec, _loss_options(config)
    out = call(policy, preference_forward, batch, average=spec.length_normalized,
               allowed_token_ids=config.allowed_token_ids, mode=getattr(config, "forward_mode", "plain"))  # fmt: skip
    policy_chosen_logps, policy_rejected_logps = out.chosen_logps, out.rejected_logps
    if spec.takes_lengths:  # IPO, length-normalised as in TRL
        options.update(chosen_lengths=out.chosen_lengths, rejected_lengths=out.rejected_lengths)
    refs = (ref_chosen_logps, ref_rejected_logps) if spec.needs_reference else ()
    losses, chosen_rewards, rejected_rewards = spec(
        policy_chosen_logps, policy_rejected_logps, *refs, **options
    )
    n_w, n_l = out.chosen_lengths.float(), out.rejected_lengths.float()
    metrics = {
        "rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen_logps.detach(), "logps/rejected": policy_rejected_logps.detach(),
        "logits/chosen": (out.mean_chosen_logits * n_w, n_w), "logits/rejected": (out.mean_rejected_logits * n_l, n_l),
    }  # fmt: skip
    return losses.mean(), metrics


def kto_step(policy, batch: dict, config, ref_logps, ref_kl_logps):
    """KTO's mean loss over an unpaired ``batch`` and its metrics: the ``rewards/*`` and ``logps/*`` of the
    desirable ("chosen") and undesirable ("rejected") rows, and ``kl``, the reference point z_ref.

    ``ref_logps`` ``[B]``: log π_ref(y|x) of the completions; ``ref_kl_logps`` ``[B]``: of the mismatched pairs.
    """
    allowed = config.allowed_token_ids
    policy_logps = _logps(policy, batch, "completion", allowed)
    with torch.no_grad():
        kl_policy_logps = _logps(policy, batch, "kl", allowed)
    labels = batch["label"]
    losses, chosen_rewards, rejected_rewards = config.spec(
        policy_logps, ref_logps, labels, kl_policy_logps, ref_kl_logps, **_loss_options(config)
    )
    z_ref = kto_reference_point(kl_policy_logps, ref_kl_logps)
    metrics = {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
               "logps/chosen": policy_logps.detach()[labels], "logps/rejected": policy_logps.detach()[~labels],
               "kl": z_ref[None]}  # fmt: skip
    return losses.mean(), metrics


def reference_for(ref_model, batch: dict, config) -> dict:
    """The reference log-probs a step takes, by name: none when the loss needs no reference; with
    ``ref_model=None`` the ones precomputed into the batch (:func:`stored_reference_logps`); else one no-grad
    forward of ``ref_model`` (:func:`reference_logps`)."""
    spec = config.spec
    if not spec.needs_reference:
        return {}
    if ref_model is None:
        return stored_reference_logps(batch, spec.paired)
    mode = getattr(config, "forward_mode", "plain")
    return reference_logps(ref_model, batch, spec.paired, config.allowed_token_ids, mode)


def preference_step(model, ref_model, batch: dict, config) -> tuple[torch.Tensor, dict]:
    """One call: π_ref's log-probs (:func:`reference_for`), then :func:`dpo_step` (paired) or :func:`kto_step`.

    Returns the mean loss and the metrics under TRL's names (``"rewards/chosen"``, ``"rewards/rejected"``,
    ``"logps/chosen"``, …; the step functions list them all).
    """
    step = dpo_step if config.spec.paired else kto_step
    return step(model, batch, config, **reference_for(ref_model, batch, config))
