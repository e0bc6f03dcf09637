"""The preference-loss family: DPO and its variants, one function each, in the papers' notation.

Every function takes per-example log-prob tensors (float, shape ``[B]`` or any common shape) and returns
``(losses, chosen_rewards, rejected_rewards)``, one value per example and *not* averaged (the trainer takes the
mean). The rewards are the implicit rewards *including β*, detached, as TRL logs ``rewards/chosen``:

    r̂_w = β (log π_θ(y_w|x) − log π_ref(y_w|x)),    r̂_l = β (log π_θ(y_l|x) − log π_ref(y_l|x))

and for the reference-free losses (ORPO, SimPO) β · (length-normalised log π_θ). The letter h is the
log-ratio margin h = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l), so that the DPO loss is −log σ(β h).

Which log-probs go in (see :mod:`dpo_teach.logprobs`): summed over response tokens for ``sigmoid``, ``hinge``,
``robust``, ``kto`` and ``ipo`` (IPO length-normalises itself when given the lengths, as TRL does); averaged
over response tokens (``average=True``) for ``orpo`` and ``simpo``. The registry :data:`LOSSES` records it
(``length_normalized`` for the averaged inputs, ``takes_lengths`` for IPO's own division by |y|).

What ``beta`` means differs from loss to loss (the argument keeps TRL's name everywhere):

* ``sigmoid`` (DPO, cDPO), ``robust``, ``hinge``, ``kto``: β is the KL coefficient of the RLHF objective; the
  implicit reward is β·log π_θ/π_ref. For the hinge it also sets the margin: the loss is zero once h ≥ 1/β.
* ``ipo``: β is the paper's τ, the regularisation strength; the target margin is h = 1/(2τ).
* ``orpo``: β is the paper's λ, the weight of the odds-ratio term next to the NLL term; not a KL coefficient.
* ``simpo``: β scales the length-normalised log-probs into rewards; the margin γ is absolute (in those reward
  units), so the coin-flip point is at a difference of γ/β in average log-prob.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpo_teach._validate import (
    check_float_tensors,
    check_label_smoothing,
    check_nonnegative,
    check_positive,
    check_preference_logps,
    check_tensor,
)


def _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Validate the four log-prob tensors and β; return (chosen log-ratio, rejected log-ratio, β)."""
    check_preference_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    beta = check_positive("beta", beta)
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps, beta


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    label_smoothing=0.0,
):
    """DPO (Rafailov et al. 2023, Eq. 7), TRL's ``"sigmoid"``; conservative DPO (cDPO, Mitchell 2023) when ε > 0.

        L = −(1 − ε) log σ(β h) − ε log σ(−β h),   h = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l)

    ε = ``label_smoothing`` is the probability that a label was flipped; ε = 0 is the paper's loss. Inputs:
    summed log-probs ``[B]``. TRL 1.16's ``"sigmoid"`` *ignores* its ``label_smoothing`` (there it only affects
    ``"robust"``, ``"exo_pair"`` and ``"aot"``), so cDPO is this function with ε > 0, not a TRL setting.
    Gradient w.r.t. log π_θ(y_w): −β σ(r̂_l − r̂_w) (for ε = 0) - see :func:`dpo_teach.theory.dpo_gradient_weight`.
    """
    chosen_logratios, rejected_logratios, beta = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    eps = check_label_smoothing(label_smoothing)
    h = chosen_logratios - rejected_logratios
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _lengths(name, lengths, like):
    check_tensor(name, lengths, floating=False)
    if lengths.shape != like.shape or bool((lengths <= 0).any()):
        raise ValueError(f"{name} must have shape {list(like.shape)} and hold response token counts >= 1.")
    return lengths.to(like.dtype)


def ipo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    chosen_lengths=None,
    rejected_lengths=None,
):
    """IPO (Azar et al. 2023, Eq. 17), TRL's ``"ipo"``; τ = ``beta``.

        L = (h − 1/(2τ))²

    IPO regresses the margin onto 1/(2τ) instead of pushing it to infinity, so it stays bounded even when the
    preferences are deterministic. Without lengths h uses the *summed* log-ratios (the paper's formula, which
    scales with |y|). With ``chosen_lengths``/``rejected_lengths`` (``[B]`` token counts) each log-ratio is
    divided by its length first - what TRL's DPOTrainer does and what the IPO authors' experiments used.
    Rewards are β × the summed log-ratios in both cases, as TRL logs them.
    """
    chosen_logratios, rejected_logratios, tau = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError(
            "pass both chosen_lengths and rejected_lengths (length-normalised IPO) or neither (summed)."
        )
    if chosen_lengths is None:
        h = chosen_logratios - rejected_logratios
    else:
        h = chosen_logratios / _lengths("chosen_lengths", chosen_lengths, chosen_logratios) - (
            rejected_logratios / _lengths("rejected_lengths", rejected_lengths, rejected_logratios)
        )
    losses = (h - 1 / (2 * tau)) ** 2
    return losses, tau * chosen_logratios.detach(), tau * rejected_logratios.detach()


def hinge_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """The hinge loss on the log-ratio margin of RSO (Liu et al. 2023), TRL's ``"hinge"``.

        L = max(0, 1 − β h),    h = log π_θ(y_w)/π_ref(y_w) − log π_θ(y_l)/π_ref(y_l)

    The loss is zero once h ≥ 1/β (the margin on h is 1/β): unlike DPO it stops pushing. It descends from
    SLiC-HF (Zhao et al. 2023), whose calibration loss max(0, δ − log π_θ(y_w|x) + log π_θ(y_l|x)) has no
    reference model (SLiC keeps the policy near the SFT model with a separate regulariser); the π_ref
    log-ratios and the margin 1/β are RSO's.
    """
    chosen_logratios, rejected_logratios, beta = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    losses = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def robust_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    label_smoothing=0.0,
):
    """Robust DPO (Chowdhury et al. 2024, Eq. 8), TRL's ``"robust"``: an unbiased loss under label noise ε.

        L = [(1 − ε)(−log σ(β h)) − ε(−log σ(−β h))] / (1 − 2ε)

    Its expectation over labels flipped with probability ε equals the clean DPO loss. Unlike cDPO the second
    term enters with a minus sign, so on a single pair L is unbounded below: L ≈ −βεh/(1 − 2ε) as h → ∞. A pair
    seen only one way is therefore pushed at a constant rate forever (harder than DPO, whose pull decays), and a
    batch loss below zero is normal, not a bug: only the expectation over noisy labels is a DPO loss. ε = 0 gives
    plain DPO.
    """
    chosen_logratios, rejected_logratios, beta = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    eps = check_label_smoothing(label_smoothing)
    h = chosen_logratios - rejected_logratios
    losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def kto_reference_point(kl_policy_logps, kl_ref_logps):
    """KTO's reference point z_ref = max(0, mean_j [log π_θ(y'_j|x_j) − log π_ref(y'_j|x_j)]), detached.

    A batch estimate of KL(π_θ ‖ π_ref) from *mismatched* pairs (x_j, y'_j): y'_j is the completion of a row
    with a *different* prompt, so it is a sample of the data's responses that x_j did not produce.
    :func:`dpo_teach.data.tokenize_kto` takes the nearest earlier row whose prompt differs; TRL's KTOTrainer
    rotates the completions by one within each batch, pairing x_j with y_{j−1} whatever its prompt. Returns a
    0-d tensor.
    """
    check_float_tensors(kl_policy_logps=kl_policy_logps, kl_ref_logps=kl_ref_logps)
    if kl_policy_logps.numel() == 0:
        raise ValueError(
            "kl_policy_logps is empty; KTO needs at least one mismatched pair to estimate z_ref."
        )
    return (kl_policy_logps - kl_ref_logps).mean().detach().clamp(min=0)


def kto_loss(
    policy_logps,
    ref_logps,
    labels,
    kl_policy_logps,
    kl_ref_logps,
    beta=0.1,
    desirable_weight=1.0,
    undesirable_weight=1.0,
):
    """KTO (Ethayarajh et al. 2024, Eq. 7), unpaired: each completion y is labelled desirable or undesirable.

        r_θ(x, y) = log π_θ(y|x)/π_ref(y|x),   z_ref = :func:`kto_reference_point` (detached, ≥ 0)
        L(x, y) = λ_D (1 − σ(β (r_θ − z_ref)))   if y is desirable (``labels`` True)
                  λ_U (1 − σ(β (z_ref − r_θ)))   if y is undesirable

    Args: ``policy_logps``, ``ref_logps`` ``[B]`` summed log-probs of the completions; ``labels`` bool ``[B]``;
    ``kl_policy_logps``, ``kl_ref_logps`` ``[M]`` on the mismatched pairs; λ_D = ``desirable_weight``,
    λ_U = ``undesirable_weight``. Returns ``losses`` ``[B]`` in input order, then ``chosen_rewards`` (β r_θ of
    the desirable rows) and ``rejected_rewards`` (of the undesirable rows), each in input order.
    """
    check_float_tensors(policy_logps=policy_logps, ref_logps=ref_logps)
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.bool:
        raise TypeError(
            "labels must be a bool torch.Tensor (True = desirable); e.g. torch.tensor([True, False])."
        )
    if labels.shape != policy_logps.shape:
        raise ValueError(
            f"labels shape {list(labels.shape)} must equal policy_logps shape {list(policy_logps.shape)}."
        )
    beta = check_positive("beta", beta)
    lam_d = check_positive("desirable_weight", desirable_weight)
    lam_u = check_positive("undesirable_weight", undesirable_weight)
    z_ref = kto_reference_point(kl_policy_logps, kl_ref_logps)
    logratios = policy_logps - ref_logps
    desirable = lam_d * (1 - torch.sigmoid(beta * (logratios - z_ref)))
    undesirable = lam_u * (1 - torch.sigmoid(beta * (z_ref - logratios)))
    losses = torch.where(labels, desirable, undesirable)
    rewards = beta * logratios.detach()
    return losses, rewards[labels], rewards[~labels]


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, stable at both ends (Mächler 2012): log(−expm1(x)) near 0, else log1p(−eˣ)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


#: Averaged log-probs are capped here inside the odds so that log(1 − P) stays finite when P rounds to 1. Where
#: the cap binds (mean token probability P > 1 − 1e-6, odds > 10⁶) the odds-ratio term has zero gradient with
#: respect to that log-prob; the NLL term's gradient is untouched (a test checks both).
ORPO_MAX_LOGP = -1e-6


def orpo_loss(policy_chosen_logps, policy_rejected_logps, beta=0.1, chosen_nll=None):
    """ORPO (Hong et al. 2024, Eqs. 6-7): SFT plus an odds-ratio penalty, no reference model.

        odds(y|x) = P/(1 − P),  P = exp((1/|y|) log π_θ(y|x))   (inputs are *length-normalised* log-probs)
        L = NLL_w − β log σ(log odds(y_w|x) − log odds(y_l|x))      (β is the paper's λ)

    NLL_w defaults to −``policy_chosen_logps``, the chosen response's mean token NLL (response tokens only, one
    value per example, as in the paper). TRL's ORPOTrainer instead uses one token-mean cross-entropy over the
    prompt *and* response tokens of all chosen rows; pass ``chosen_nll`` (broadcastable to ``[B]``) to use
    another NLL. Inside the odds, averaged log-probs are capped at ``ORPO_MAX_LOGP`` = −1e-6 so log(1 − P)
    stays finite; above the cap that term passes no gradient (the NLL term still does).
    Rewards: β × the length-normalised log-probs (as TRL logs them).
    """
    check_float_tensors(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    beta = check_positive("beta", beta)
    for name, value in (
        ("policy_chosen_logps", policy_chosen_logps),
        ("policy_rejected_logps", policy_rejected_logps),
    ):
        if bool((value > 0).any()):
            raise ValueError(
                f"{name} has positive entries; log-probs are <= 0 (pass average=True log-probs)."
            )
    if chosen_nll is None:
        chosen_nll = -policy_chosen_logps
    else:
        check_tensor("chosen_nll", chosen_nll)
    a_w = policy_chosen_logps.clamp(max=ORPO_MAX_LOGP)
    a_l = policy_rejected_logps.clamp(max=ORPO_MAX_LOGP)
    log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
    losses = chosen_nll - beta * F.logsigmoid(log_odds)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


def simpo_loss(policy_chosen_logps, policy_rejected_logps, beta=2.0, gamma=1.0):
    """SimPO (Meng et al. 2024, Eq. 6): a length-normalised, reference-free DPO with a target margin γ.

        L = −log σ(β/|y_w| log π_θ(y_w|x) − β/|y_l| log π_θ(y_l|x) − γ)

    Inputs are length-normalised log-probs (``average=True``). Defaults β = 2, γ = 1 are in the paper's range
    (β ∈ [2, 2.5], γ/β ≈ 0.5). β is a reward scale here, not a KL coefficient; γ is absolute, in reward
    units. TRL runs it as ``CPOTrainer(loss_type="simpo", cpo_alpha=0)`` with ``simpo_gamma`` = γ.
    Rewards: β × the length-normalised log-probs.
    """
    check_float_tensors(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    beta = check_positive("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    losses = -F.logsigmoid(beta * (policy_chosen_logps - policy_rejected_logps) - gamma)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the loss function and what it needs. Calling the spec calls the function.

    The step reads everything it passes from here, never from the function's signature: ``options`` are the
    keyword arguments a user may set through ``DPOConfig.loss_kwargs``; ``label_smoothing`` says whether it
    takes ε (``DPOConfig.label_smoothing``); ``takes_lengths`` whether it divides the summed log-ratios by the
    response lengths itself (IPO, as in TRL), so that the step passes ``chosen_lengths``/``rejected_lengths``.
    """

    name: str
    fn: Callable
    needs_reference: bool  # takes ref_*_logps (a frozen reference model's log-probs)
    length_normalized: bool  # expects average=True log-probs
    paired: bool  # needs (chosen, rejected) pairs; False = KTO's unpaired desirable/undesirable rows
    summary: str
    options: tuple[str, ...] = ()
    label_smoothing: bool = False
    takes_lengths: bool = False

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("sigmoid", dpo_loss, True, False, True, "DPO; cDPO with label_smoothing ε > 0",
                 label_smoothing=True),
        LossSpec("ipo", ipo_loss, True, False, True, "IPO: squared per-token margin to 1/(2τ), τ = β",
                 takes_lengths=True),
        LossSpec("hinge", hinge_loss, True, False, True, "RSO's hinge: margin 1/β on the log-ratios"),
        LossSpec("robust", robust_loss, True, False, True, "robust DPO: unbiased under label flips at ε",
                 label_smoothing=True),
        LossSpec("kto", kto_loss, True, False, False, "KTO: unpaired desirable/undesirable completions",
                 options=("desirable_weight", "undesirable_weight")),
        LossSpec("orpo", orpo_loss, False, True, True, "ORPO: NLL + odds-ratio term, no reference model"),
        LossSpec("simpo", simpo_loss, False, True, True, "SimPO: length-normalised margin with target γ",
                 options=("gamma",)),
    )
}  # fmt: skip

#: other names of registry entries: ``"dpo"`` is the paper's name of TRL's ``"sigmoid"``
ALIASES = {"dpo": "sigmoid"}


def get_loss(name: str) -> LossSpec:
    """The registry entry for a TRL loss name (``"sigmoid"``, also called ``"dpo"``, is DPO); a clear error
    lists the valid names."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(
            f"unknown loss {name!r}; choose one of {sorted(LOSSES)} ('sigmoid', also 'dpo', is DPO)."
        )
    return LOSSES[name]
