"""Measurements that diagnose what a preference optimiser did — the instruments of chapters 11 and 12.

On an enumerable world every quantity below is exact: a policy is a table ``[X, K]`` of log π(y|x) (X prompts,
K responses; :meth:`SequenceWorld.logprobs` or a bandit's tabular policy), and the distribution of a sampled
comparison is the table D ``[X, K, K]`` of :func:`dpo_teach.tabular.comparison_probs` (winner, loser), or the
frequencies of a finite sample (:func:`empirical_comparison_probs`).

* :func:`expected_length` — E_{y~π}[|y|]: does training make responses longer?
* :func:`expected_logratio_change` — E_D[log π_θ(y_w|x) − log π_ref(y_w|x)] and the same for y_l: *likelihood
  displacement* is both being negative while their difference (the margin) is positive.
* :func:`pairwise_accuracy`, :func:`expected_pairwise_accuracy` — how often a score (a true reward, a reward
  model, or DPO's implicit reward β log π_θ/π_ref) ranks a pair's chosen response above its rejected one.
* :func:`pair_indices` (TRL rows → indices), :func:`flip_labels` (label noise, or random labels at rate ½),
  :func:`fit_linear_bradley_terry` (a reward model r(x, y) = φ(x, y)·w fitted by maximum likelihood).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from dpo_teach._validate import check_finite, check_nonnegative, check_normalised, check_tensor, is_int


class PairIndex(NamedTuple):
    """n comparisons as long tensors ``[n]``: ``prompt``, ``chosen`` and ``rejected`` response indices."""

    prompt: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor


def _key(text: str) -> str:
    return " ".join(str(text).split())


def pair_indices(world, rows) -> PairIndex:
    """Indices of TRL preference ``rows`` (``prompt``/``chosen``/``rejected``) in ``world.prompts`` and
    ``world.responses`` (a :class:`SequenceWorld` or :class:`BanditWorld`); whitespace is ignored, so a bandit
    completion ``" apple"`` matches its response ``"apple"``. Raises ``ValueError`` naming an unknown row."""
    prompts = {_key(p): i for i, p in enumerate(world.prompts)}
    responses = {_key(r): i for i, r in enumerate(world.responses)}
    out = ([], [], [])
    for n, row in enumerate(rows):
        for j, (field, table) in enumerate(
            (("prompt", prompts), ("chosen", responses), ("rejected", responses))
        ):
            try:
                out[j].append(table[_key(row[field])])
            except (KeyError, TypeError):
                raise ValueError(
                    f"row {n}: {field}={row.get(field) if isinstance(row, dict) else row!r} is not one of the "
                    f"world's {'prompts' if field == 'prompt' else 'responses'}; pass rows of this world."
                ) from None
    return PairIndex(*(torch.tensor(v, dtype=torch.long) for v in out))


def compared_responses(world, rows) -> torch.Tensor:
    """bool ``[P, N]``: True where response y of prompt x is the chosen or the rejected response of some row —
    the (prompt, response) pairs a preference dataset says anything about (:func:`pair_indices` names them)."""
    idx = pair_indices(world, rows)
    seen = torch.zeros(len(world.prompts), len(world.responses), dtype=torch.bool)
    seen[idx.prompt, idx.chosen] = True
    seen[idx.prompt, idx.rejected] = True
    return seen


def covered_mass(policy_logps, seen) -> float:
    """Coverage of a policy by a dataset: Σ_y π(y|x) over the responses ``seen`` for x (:func:`compared_responses`),
    averaged over prompts — 1 when every response π writes is compared, 0 when none is. ``policy_logps``
    ``[P, N]`` normalised log-probs, ``seen`` bool ``[P, N]``; summed in float64."""
    check_normalised("policy_logps", policy_logps)
    if not isinstance(seen, torch.Tensor) or seen.dtype != torch.bool or seen.shape != policy_logps.shape:
        raise ValueError(
            f"seen must be a bool tensor of policy_logps' shape {list(policy_logps.shape)} "
            "(dpo_teach.diagnostics.compared_responses(world, rows))."
        )
    return float((policy_logps.double().exp() * seen).sum(-1).mean())


def expected_length(policy_logps, lengths) -> torch.Tensor:
    """E_{y~π(·|x)}[|y|] = Σ_y π(y|x) |y| per prompt: ``policy_logps`` ``[..., K]`` normalised, ``lengths``
    ``[K]`` (e.g. ``world.response_lengths``); returns float64 ``[...]``."""
    check_normalised("policy_logps", policy_logps)
    if not isinstance(lengths, torch.Tensor) or lengths.shape != policy_logps.shape[-1:]:
        raise ValueError(
            f"lengths must be a tensor [K] = [{policy_logps.shape[-1]}] with one length per response, e.g. "
            f"world.response_lengths; got {getattr(lengths, 'shape', type(lengths).__name__)}."
        )
    return (policy_logps.double().exp() * lengths.double()).sum(-1)


def _check_probs(probs, shape) -> torch.Tensor:
    check_finite("probs", check_tensor("probs", probs))
    if tuple(probs.shape) != (*shape, shape[-1]) or bool((probs < 0).any()):
        raise ValueError(
            f"probs must be a non-negative comparison table [X, K, K] = {[*shape, shape[-1]]} (winner, loser), "
            f"e.g. tabular.comparison_probs(ref_logps, rewards); got {list(probs.shape)}."
        )
    return probs.double()


def expected_logratio_change(policy_logps, ref_logps, probs) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact E_D[log π_θ(y_w|x) − log π_ref(y_w|x)] and E_D[log π_θ(y_l|x) − log π_ref(y_l|x)] per prompt.

    ``policy_logps``, ``ref_logps`` ``[X, K]``; ``probs`` D ``[X, K, K]`` (winner, loser), each prompt's table
    summing to 1. Returns two float64 tensors ``[X]``: (chosen, rejected). Their difference is the expected
    log-ratio margin; both negative with a positive margin is likelihood displacement.
    """
    check_normalised("policy_logps", policy_logps)
    check_normalised("ref_logps", ref_logps)
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 2:
        raise ValueError(
            f"policy_logps and ref_logps must both be [X, K]; got {list(policy_logps.shape)} and "
            f"{list(ref_logps.shape)}."
        )
    probs = _check_probs(probs, tuple(ref_logps.shape))
    change = policy_logps.double() - ref_logps.double()
    return (probs * change[:, :, None]).sum((1, 2)), (probs * change[:, None, :]).sum((1, 2))


def _wins(scores_chosen, scores_rejected) -> torch.Tensor:
    """1 where the chosen score is higher, ½ on a tie, 0 otherwise."""
    return (scores_chosen > scores_rejected).double() + 0.5 * (scores_chosen == scores_rejected).double()


def _check_indices(prompt, chosen, rejected) -> None:
    """Raise unless ``prompt``, ``chosen``, ``rejected`` are non-empty integer tensors of one shape [n]."""
    for name, index in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.dtype == torch.bool:
            raise TypeError(
                f"{name} must be a long tensor of indices, got {getattr(index, 'dtype', type(index).__name__)}."
            )
    if not prompt.numel() or not prompt.shape == chosen.shape == rejected.shape:
        raise ValueError("prompt, chosen and rejected must be non-empty long tensors of one shape [n].")


def pairwise_accuracy(scores, prompt, chosen, rejected) -> float:
    """The fraction of pairs whose chosen response scores higher: mean of 1[s(x, y_w) > s(x, y_l)] (ties ½).

    ``scores`` ``[X, K]`` (rewards, reward-model outputs or implicit rewards); ``prompt``, ``chosen``,
    ``rejected`` long ``[n]`` (e.g. a :class:`PairIndex` or a bandit's ``Comparisons`` unpacked).
    """
    check_tensor("scores", scores)
    if scores.dim() != 2:
        raise ValueError(
            f"scores must be [X, K] (one score per prompt and response), got {list(scores.shape)}."
        )
    _check_indices(prompt, chosen, rejected)
    return float(_wins(scores[prompt, chosen], scores[prompt, rejected]).mean())


def expected_pairwise_accuracy(scores, probs) -> float:
    """The exact accuracy on a fresh comparison: (1/X) Σ_x Σ_{a,b} D(a, b|x) 1[s(x, a) > s(x, b)] (ties ½).

    ``scores`` ``[X, K]``; ``probs`` D ``[X, K, K]`` (winner, loser). With D from the true reward, the accuracy
    of the true reward itself is the ceiling that label noise allows; a constant score gets exactly ½.
    """
    check_tensor("scores", scores)
    if scores.dim() != 2:
        raise ValueError(
            f"scores must be [X, K] (one score per prompt and response), got {list(scores.shape)}."
        )
    probs = _check_probs(probs, tuple(scores.shape))
    s = scores.double()
    return float((probs * _wins(s[:, :, None], s[:, None, :])).sum((1, 2)).mean())


def empirical_comparison_probs(prompt, chosen, rejected, n_prompts: int, n_responses: int) -> torch.Tensor:
    """The frequencies of n sampled comparisons as a table ``[X, K, K]`` (winner, loser), each prompt's table
    summing to 1 (all zeros for a prompt with no comparison): the empirical D that a DPO run on exactly these
    pairs sees. Pass it to :func:`dpo_teach.tabular.tabular_dpo` as ``probs``."""
    _check_indices(prompt, chosen, rejected)
    if int(prompt.max()) >= n_prompts or int(torch.maximum(chosen, rejected).max()) >= n_responses:
        raise ValueError(f"indices exceed n_prompts={n_prompts} or n_responses={n_responses}.")
    counts = torch.zeros(n_prompts, n_responses, n_responses, dtype=torch.float64)
    counts.index_put_(
        (prompt, chosen, rejected), torch.ones(prompt.numel(), dtype=torch.float64), accumulate=True
    )
    return counts / counts.sum((1, 2), keepdim=True).clamp(min=1.0)


def flip_labels(rows, rate: float, seed: int = 0) -> list[dict]:
    """A copy of preference ``rows`` in which each pair's chosen and rejected are swapped with probability
    ``rate`` (independently, from ``torch.Generator().manual_seed(seed)``). ``rate=0.5``: random labels with no
    information left; ``rate=1``: every label reversed."""
    rate = check_nonnegative("rate", rate)
    if rate > 1:
        raise ValueError(f"rate is a probability in [0, 1], got {rate}.")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}; pass e.g. seed=0.")
    rows = [dict(row) for row in rows]
    flips = torch.rand(len(rows), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < rate
    for row, flip in zip(rows, flips.tolist(), strict=True):
        if flip:
            row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
    return rows


def fit_linear_bradley_terry(features, prompt, chosen, rejected, l2: float = 1e-2) -> torch.Tensor:
    """The weights w ``[d]`` of a linear reward model r_w(x, y) = φ(x, y)·w fitted by Bradley–Terry:

        w = argmin_w  −(1/n) Σ_i log σ(φ(x_i, y_w,i)·w − φ(x_i, y_l,i)·w) + l2 ‖w‖²

    ``features`` φ ``[X, K, d]``; the comparisons as long tensors ``[n]``. Convex (strictly, for l2 > 0), solved
    in float64 by L-BFGS. The fitted reward of *every* response, compared or not, is ``features @ w``.
    """
    check_finite("features", check_tensor("features", features))
    if features.dim() != 3:
        raise ValueError(
            f"features must be [X, K, d] (one vector per prompt and response), got {list(features.shape)}."
        )
    _check_indices(prompt, chosen, rejected)
    l2 = check_nonnegative("l2", l2)
    diff = (features[prompt, chosen] - features[prompt, rejected]).double()  # [n, d]
    w = torch.zeros(features.shape[-1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=0.0, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = -F.logsigmoid(diff @ w).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


__all__ = [
    "PairIndex",
    "compared_responses",
    "covered_mass",
    "empirical_comparison_probs",
    "expected_length",
    "expected_logratio_change",
    "expected_pairwise_accuracy",
    "fit_linear_bradley_terry",
    "flip_labels",
    "pair_indices",
    "pairwise_accuracy",
]
