"""Preference optimisation on the bandit with no sampling noise: the *population* loss over every pair.

On a :class:`~dpo_teach.worlds.BanditWorld` the data distribution is a table, so the expected loss over it can
be written down exactly instead of being estimated from a sample. :meth:`BanditWorld.sample_comparisons` draws
x uniformly, y1 ~ π_ref(·|x), y2 ~ π_ref(·|x) among the responses other than y1, and lets y1 win with
probability q(y1, y2) = σ(r(x, y1) − r(x, y2)) (Bradley–Terry; with ``deterministic`` the higher reward wins,
ties to y1). The probability that a comparison reads (winner a, loser b) is therefore

    D(a, b | x) = ρ(a, b) q(a, b) + ρ(b, a) (1 − q(b, a)),    ρ(a, b) = π_ref(a|x) π_ref(b|x) / (1 − π_ref(a|x)),

and if an annotator then flips each label independently with probability ε (``label_noise``, the noise model
of cDPO and robust DPO), D_ε(a, b | x) = (1 − ε) D(a, b | x) + ε D(b, a | x).

and the population loss of a per-pair loss ℓ (DPO's −log σ(βh) or any paired loss of :data:`~dpo_teach.losses.LOSSES`) is

    L(θ) = (1/X) Σ_x Σ_{a ≠ b} D(a, b | x) ℓ(log π_θ(a|x), log π_θ(b|x), log π_ref(a|x), log π_ref(b|x)).

:func:`tabular_dpo` minimises L over free logits θ [X, K] (π_θ = softmax(θ)) with full-batch Adam. For DPO
with Bradley–Terry labels the minimiser is π*_β exactly (chapter 04): each pair's expected loss is a
cross-entropy minimised at β h = r(a) − r(b).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from dpo_teach._validate import check_normalised, check_positive, check_tensor, is_int
from dpo_teach.device import single_thread
from dpo_teach.losses import LossSpec, get_loss


def comparison_probs(
    ref_logps, rewards, deterministic: bool = False, label_noise: float = 0.0
) -> torch.Tensor:
    """D(a, b | x): the probability that a sampled comparison of prompt x has winner a and loser b.

    Args: ``ref_logps`` (log π_ref, normalised) and ``rewards`` float tensors ``[X, K]``; ``deterministic``
    as in :meth:`BanditWorld.sample_comparisons`; ``label_noise`` ε in [0, 0.5), the probability that each
    label is then flipped. Returns float64 ``[X, K, K]`` (winner, loser); the diagonal is 0 and each prompt's
    table sums to 1.
    """
    check_normalised("ref_logps", ref_logps)
    if (
        isinstance(label_noise, bool)
        or not isinstance(label_noise, (int, float))
        or not 0 <= label_noise < 0.5
    ):
        raise ValueError(
            f"label_noise must be a number in [0, 0.5) (the probability that a label is flipped), got "
            f"{label_noise!r}; use 0.0 for clean labels."
        )
    check_tensor("rewards", rewards)
    if ref_logps.shape != rewards.shape or ref_logps.dim() != 2:
        raise ValueError(
            f"ref_logps and rewards must both be [n_prompts, n_responses]; got {list(ref_logps.shape)} "
            f"and {list(rewards.shape)}."
        )
    pi = ref_logps.double().exp()
    if bool((pi >= 1).any()):
        raise ValueError("ref_logps puts all its mass on one response; no pair of distinct responses exists.")
    r = rewards.double()
    rho = pi[:, :, None] * pi[:, None, :] / (1 - pi[:, :, None])  # P(y1 = a, y2 = b), a ≠ b
    rho = rho * (1 - torch.eye(pi.shape[-1], dtype=torch.float64))
    diff = r[:, :, None] - r[:, None, :]
    q = (diff >= 0).double() if deterministic else torch.sigmoid(diff)  # P(y1 wins | y1 = a, y2 = b)
    probs = rho * q + rho.transpose(1, 2) * (1 - q.transpose(1, 2))
    return (1 - label_noise) * probs + label_noise * probs.transpose(1, 2)


def _resolve_loss(loss) -> tuple[Callable, bool]:
    """(function, needs_reference) for a registry name, a :class:`LossSpec` or a callable with DPO's signature."""
    if isinstance(loss, str):
        loss = get_loss(loss)
    if isinstance(loss, LossSpec):
        if not loss.paired:
            raise ValueError(
                f"loss {loss.name!r} is unpaired; the population loss needs a paired loss such as 'sigmoid', "
                "'ipo', 'hinge', 'robust', 'orpo' or 'simpo'."
            )
        return loss.fn, loss.needs_reference
    if callable(loss):
        return loss, True
    raise TypeError(
        f"loss must be a registry name (e.g. 'sigmoid'), a LossSpec or a callable, got {type(loss).__name__}."
    )


def population_loss(policy_logps, ref_logps, probs, beta, loss="sigmoid", **loss_kwargs) -> torch.Tensor:
    """L(θ) = (1/X) Σ_x Σ_{a,b} D(a, b|x) ℓ(a, b): the expected loss over the whole comparison distribution.

    Args: ``policy_logps`` and ``ref_logps`` ``[X, K]``; ``probs`` = :func:`comparison_probs` ``[X, K, K]``;
    ``loss`` a name from :data:`~dpo_teach.losses.LOSSES`, a spec, or a callable
    ``(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=...)`` returning
    ``(losses, chosen_rewards, rejected_rewards)``; ``loss_kwargs`` go to the loss (e.g. ``label_smoothing``).
    Returns a 0-d tensor, differentiable w.r.t. ``policy_logps``.
    """
    fn, needs_reference = _resolve_loss(loss)
    beta = check_positive("beta", beta)
    x, winner, loser = torch.nonzero(probs > 0, as_tuple=True)  # only the pairs that can occur
    chosen, rejected = policy_logps[x, winner], policy_logps[x, loser]
    if needs_reference:
        losses = fn(chosen, rejected, ref_logps[x, winner], ref_logps[x, loser], beta=beta, **loss_kwargs)[0]
    else:
        losses = fn(chosen, rejected, beta=beta, **loss_kwargs)[0]
    return (probs[x, winner, loser] * losses).sum() / probs.shape[0]


@dataclass
class TabularRun:
    """The result of :func:`tabular_dpo`: the final ``policy_logps`` [X, K] and the metrics ``history``."""

    policy_logps: torch.Tensor
    history: list[dict] = field(default_factory=list)


def tabular_dpo(
    world,
    beta: float,
    loss="sigmoid",
    *,
    steps: int = 1000,
    lr: float = 0.1,
    deterministic: bool = False,
    label_noise: float = 0.0,
    probs=None,
    loss_kwargs: dict | None = None,
    init_logps=None,
    log_every: int = 10,
    progress: bool = False,
) -> TabularRun:
    """Minimise the population loss over free logits θ [X, K] on ``world``, from θ = log π_ref (or ``init_logps``).

    Args: ``world`` a :class:`~dpo_teach.worlds.BanditWorld` (``ref_logps``, ``rewards``, ``evaluate``);
    ``loss`` as in :func:`population_loss`, with ``loss_kwargs``; ``deterministic`` and ``label_noise`` (each
    label flipped with probability ε) as in :func:`comparison_probs`; ``probs`` a table ``[X, K, K]`` (winner,
    loser) that replaces the world's exact comparison distribution, e.g. the frequencies of a finite sample
    (:func:`dpo_teach.diagnostics.empirical_comparison_probs`: then the loss is the one a DPO run on those
    pairs minimises); with ``probs``, ``deterministic`` and ``label_noise`` must keep their defaults.
    Full-batch Adam in float64, with lr halved whenever the loss stops improving; nothing is sampled, so a run
    is deterministic. The ``history`` gets one dict at step 0 (the start), every ``log_every`` updates and after
    the last: ``step`` (updates so far), ``loss`` and the exact metrics of ``world.evaluate(π_θ, beta)``
    (``kl_to_optimal``, ``kl_to_ref``, ``expected_reward``, ``objective``). Returns a :class:`TabularRun`.
    """
    beta = check_positive("beta", beta)
    lr = check_positive("lr", lr)
    for name, value in (("steps", steps), ("log_every", log_every)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    _resolve_loss(loss)  # fail before any work on a bad loss
    ref_logps, rewards = world.ref_logps.double(), world.rewards.double()
    if probs is None:
        probs = comparison_probs(ref_logps, rewards, deterministic, label_noise)
    else:
        check_tensor("probs", probs)
        shape = (*rewards.shape, rewards.shape[-1])
        if tuple(probs.shape) != shape or not bool(torch.isfinite(probs).all() and (probs >= 0).all()):
            raise ValueError(
                f"probs must be a finite, non-negative [X, K, K] = {list(shape)} table of comparison "
                f"probabilities (winner, loser); got shape {list(probs.shape)}."
            )
        if deterministic or label_noise:
            raise ValueError(
                "pass either probs or deterministic/label_noise (which build the table), not both."
            )
        probs = probs.double()
    start = ref_logps if init_logps is None else check_normalised("init_logps", init_logps).double()
    theta = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    # Near the optimum Adam's step stays ~lr however small the gradient gets, so a converged run jitters
    # (KL(π_θ‖π*) jumps from 1e-16 back to 1e-6). Halving lr whenever the loss stops improving settles it.
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=20, threshold=0.0)
    kwargs = loss_kwargs or {}
    history = []

    def record(step: int, value: torch.Tensor) -> None:
        policy = torch.log_softmax(theta.detach(), -1)
        history.append({"step": step, "loss": value.item(), **world.evaluate(policy, beta)})

    with single_thread():  # tiny tensors: a thread pool only adds overhead (60x on a busy 2-core CPU)
        label = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", "loss"))
        for step in tqdm(range(steps), desc=f"tabular {label}", disable=not progress):
            optimizer.zero_grad()
            value = population_loss(torch.log_softmax(theta, -1), ref_logps, probs, beta, loss, **kwargs)
            if step % log_every == 0:
                record(step, value)
            value.backward()
            optimizer.step()
            schedule.step(value.item())
        with torch.no_grad():
            record(
                steps, population_loss(torch.log_softmax(theta, -1), ref_logps, probs, beta, loss, **kwargs)
            )
    return TabularRun(torch.log_softmax(theta.detach(), -1), history)


__all__ = ["TabularRun", "comparison_probs", "population_loss", "tabular_dpo"]
