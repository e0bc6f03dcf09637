"""Train a copy of π_ref with one loss of the registry and measure it exactly — the unit of Part III's comparisons.

One run is: copy the reference model, train the copy with :class:`~dpo_teach.trainers.dpo.DPOTrainer` under a
``loss_type`` of :data:`dpo_teach.losses.LOSSES` on given rows, then score every response of every prompt
(:meth:`SequenceWorld.logprobs`) and compare the trained policy π_θ with the world's truth
(:meth:`SequenceWorld.evaluate`):

    KL(π_θ ‖ π_ref),   E_{π_θ}[r],   KL(π_θ ‖ π*_β)   with  π*_β ∝ π_ref exp(r/β)   (mean over prompts).

π*_β is the optimum of the KL-regularised objective, which DPO targets; for the reference-free losses (ORPO,
SimPO) it is still a well-defined distance to that optimum, but not their target. :func:`format_table` prints
the results as a plain-text table (no pandas).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from dpo_teach.losses import get_loss
from dpo_teach.trainers.dpo import train_dpo

#: the metric keys of :meth:`SequenceWorld.evaluate` that a run reports
METRICS = ("kl_to_ref", "expected_reward", "kl_to_optimal", "implicit_reward_corr")


@dataclass
class VariantRun:
    """One trained variant: its ``name``, ``loss_type``, the trained ``model``, its log-prob table ``logps``
    ``[P, N]``, the exact ``metrics`` (:data:`METRICS`) and the trainer's ``history`` (one dict per step)."""

    name: str
    loss_type: str
    model: torch.nn.Module
    logps: torch.Tensor
    metrics: dict
    history: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        """``{"name", "loss_type", **metrics}``: one line of a :func:`format_table` table."""
        return {"name": self.name, "loss_type": self.loss_type, **self.metrics}


def run_variant(
    world, ref_model, rows, *, eval_beta: float, ref_logps=None, name: str | None = None, **config
) -> VariantRun:
    """Train a deep copy of ``ref_model`` on ``rows`` with ``config`` and evaluate it exactly on ``world``.

    Args:
        world: a :class:`~dpo_teach.worlds.SequenceWorld` (exact ``logprobs``/``evaluate``; its ``tokenizer``
            and ``allowed_token_ids`` are used).
        ref_model: π_ref; left unchanged. It is the frozen reference of the losses that need one.
        rows: preference rows (``prompt``/``chosen``/``rejected``) or, for ``loss_type="kto"``, unpaired rows
            (``prompt``/``completion``/``label``, e.g. ``world.kto_dataset(...)``; pairs are unpaired by the
            trainer); list or ``datasets.Dataset``.
        eval_beta: the β of π*_β that ``kl_to_optimal`` and ``implicit_reward_corr`` are measured against (for a
            run of β-DPO, that β; a run's own β may mean something else, e.g. IPO's τ).
        ref_logps: ``world.logprobs(ref_model)`` ``[P, N]`` if already computed (saves one enumeration).
        name: the label in tables (default: ``loss_type``).
        config: :class:`~dpo_teach.trainers.dpo.DPOConfig` fields (``loss_type``, ``beta``, ``lr``, ...);
            ``allowed_token_ids`` defaults to the world's, ``progress`` to False and ``precompute_ref_logps`` to
            True (π_ref's log-probs of the rows are computed once, before training).

    Returns a :class:`VariantRun`. Deterministic for a ``seed`` (a DPOConfig field, default 0).
    """
    if not isinstance(ref_model, torch.nn.Module):
        raise TypeError(
            f"ref_model must be the reference causal LM (a torch Module), got {type(ref_model).__name__}."
        )
    if not hasattr(world, "evaluate") or not hasattr(world, "logprobs"):
        raise TypeError(
            f"world must be an enumerable world with exact evaluation (SequenceWorld), got {type(world).__name__}."
        )
    spec = get_loss(config.get("loss_type", "sigmoid"))
    if len(rows) == 0:
        raise ValueError(
            "rows is empty; pass preference rows, e.g. world.preference_pairs(ref_logps, n=...)."
        )
    first = rows[0]
    fields = ("prompt", "chosen", "rejected")
    if spec.paired and not all(k in first for k in fields):
        raise ValueError(
            f"loss_type={spec.name!r} trains on pairs with fields {list(fields)}; the first row has "
            f"{sorted(first)}. Use world.preference_pairs(...) (world.kto_dataset(...) is for loss_type='kto')."
        )
    if ref_logps is None:
        ref_logps = world.logprobs(ref_model)
    config.setdefault("allowed_token_ids", world.allowed_token_ids)
    config.setdefault("progress", False)
    config.setdefault("precompute_ref_logps", True)
    policy = copy.deepcopy(ref_model)
    history = train_dpo(
        policy, world.tokenizer, rows, ref_model=ref_model if spec.needs_reference else None, **config
    )
    policy.eval()
    logps = world.logprobs(policy)
    evaluation = world.evaluate(logps, ref_logps, eval_beta)
    metrics = {key: evaluation[key] for key in METRICS}
    return VariantRun(name or spec.name, spec.name, policy, logps, metrics, history)


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table: one line per dict of ``rows``, one column per ``(key, header, format)``.

    ``format`` is a format spec such as ``".3f"`` or ``""`` (``str``); a missing key or a value of None prints
    as ``—``. Columns are left-aligned for strings and right-aligned for numbers, separated by two spaces, with
    a rule of ``-`` under the header.
    """
    if not isinstance(columns, list) or not all(isinstance(c, tuple) and len(c) == 3 for c in columns):
        raise TypeError(
            "columns must be a list of (key, header, format) tuples, e.g. [('kl_to_ref', 'KL', '.3f')]."
        )
    cells = [[header for _, header, _ in columns]]
    numeric = [False] * len(columns)
    for row in rows:
        line = []
        for j, (key, _, fmt) in enumerate(columns):
            value = row.get(key)
            if value is None:
                line.append("—")
            else:
                numeric[j] = numeric[j] or isinstance(value, (int, float))
                line.append(format(value, fmt))
        cells.append(line)
    widths = [max(len(line[j]) for line in cells) for j in range(len(columns))]

    def render(line):
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(line, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(cells[0]), rule, *(render(line) for line in cells[1:])])


__all__ = ["METRICS", "VariantRun", "format_table", "run_variant"]
