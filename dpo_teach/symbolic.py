"""The algebra of chapters 02–04, done by sympy so that each step is checked rather than asserted.

Each function builds the expressions of one derivation step and returns them in a small dataclass whose
fields are sympy objects (a notebook displays them as formulas) plus a ``residual`` that simplifies to 0 when
the step is right. Notation: π for the policy, π_ref for the reference, r for the reward, β > 0, Z for the
partition function. Distributions are over n responses with symbols π_1..π_n (n = 3 by default: generic, yet
small enough to read).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dpo_teach._validate import is_int

beta = sp.Symbol("beta", positive=True)


def sigmoid(x: sp.Expr) -> sp.Expr:
    """σ(x) = 1 / (1 + e^(−x)), written out so that sympy can differentiate and simplify it."""
    return 1 / (1 + sp.exp(-x))


def _distribution_symbols(n: int):
    if not is_int(n) or n < 2:
        raise ValueError(f"n must be an int >= 2 (the number of responses), got {n!r}.")
    pi = sp.symbols(f"pi_1:{n + 1}", positive=True)
    pi_ref = sp.symbols(rf"pi_ref_1:{n + 1}", positive=True)
    r = sp.symbols(f"r_1:{n + 1}", real=True)
    return pi, pi_ref, r


@dataclass(frozen=True)
class GibbsRewrite:
    """E_π[r] − β KL(π‖π_ref) = −β KL(π‖π*) + β log Z  (the step behind the DPO paper's Eq. 4).

    ``objective`` and ``rewritten`` are the two sides; ``partition_function`` Z = Σ π_ref,i e^(r_i/β);
    ``optimal_policy`` the list π*_i = π_ref,i e^(r_i/β) / Z. ``gap`` is objective − rewritten *before* using
    Σ π_i = 1: it equals β log Z (Σ π_i − 1), so the identity holds exactly because π is normalised.
    ``residual`` is the gap with π_n = 1 − Σ_{i<n} π_i substituted: 0. Since KL(π‖π*) ≥ 0 with equality only
    at π = π* (Gibbs' inequality) and β log Z does not depend on π, π* maximises the objective.
    """

    objective: sp.Expr
    rewritten: sp.Expr
    partition_function: sp.Expr
    optimal_policy: list
    gap: sp.Expr
    residual: sp.Expr


def gibbs_rewrite(n: int = 3) -> GibbsRewrite:
    """Build and check the Gibbs rewrite of the KL-regularised objective for a distribution over n responses."""
    pi, pi_ref, r = _distribution_symbols(n)
    z = sum(p * sp.exp(ri / beta) for p, ri in zip(pi_ref, r, strict=True))
    pi_star = [p * sp.exp(ri / beta) / z for p, ri in zip(pi_ref, r, strict=True)]
    objective = sum(p * ri for p, ri in zip(pi, r, strict=True)) - beta * sum(
        p * sp.log(p / q) for p, q in zip(pi, pi_ref, strict=True)
    )
    rewritten = -beta * sum(p * sp.log(p / q) for p, q in zip(pi, pi_star, strict=True)) + beta * sp.log(z)
    gap = sp.factor_terms(sp.expand(sp.expand_log(objective - rewritten, force=True)))
    residual = sp.simplify(gap.subs(pi[-1], 1 - sum(pi[:-1])))
    return GibbsRewrite(objective, rewritten, z, pi_star, gap, residual)


@dataclass(frozen=True)
class StationaryPoint:
    """The same optimum by Lagrange multipliers: ∂/∂π_i [objective + λ(1 − Σ π)] = 0 for every i.

    ``stationary`` is π_i solved from its equation (it still contains λ); ``normalised`` divides by the sum,
    which removes λ; ``residual`` lists normalised_i − π*_i, each 0.
    """

    lagrangian: sp.Expr
    stationary: list
    normalised: list
    residual: list


def stationary_point(n: int = 3) -> StationaryPoint:
    """Solve the stationarity conditions of the KL-regularised objective and compare with π* = π_ref e^(r/β)/Z."""
    pi, pi_ref, r = _distribution_symbols(n)
    lam = sp.Symbol("lambda", real=True)
    lagrangian = (
        sum(p * ri for p, ri in zip(pi, r, strict=True))
        - beta * sum(p * sp.log(p / q) for p, q in zip(pi, pi_ref, strict=True))
        + lam * (1 - sum(pi))
    )
    stationary = [sp.solve(sp.diff(lagrangian, p), p)[0] for p in pi]
    total = sum(stationary)
    normalised = [sp.simplify(s / total) for s in stationary]
    z = sum(p * sp.exp(ri / beta) for p, ri in zip(pi_ref, r, strict=True))
    residual = [
        sp.simplify(a - p * sp.exp(ri / beta) / z) for a, p, ri in zip(normalised, pi_ref, r, strict=True)
    ]
    return StationaryPoint(lagrangian, stationary, normalised, residual)


@dataclass(frozen=True)
class PartitionCancellation:
    """Your reward is secretly a policy: Z(x) cancels in Bradley–Terry (DPO paper, Eqs. 5–6).

    ``reward`` = β log π*(y)/π_ref(y) + β log Z solves π*(y) = π_ref(y) e^(r/β) / Z for r
    (``inversion_residual`` = π_ref e^(reward/β)/Z − π* is 0). ``bt_prob`` is
    e^(r_w) / (e^(r_w) + e^(r_l)) with that reward substituted for both responses (Z appears);
    ``simplified`` is the same after cancelling (no Z); ``dpo_form`` is σ(β log π_w/π_ref,w − β log π_l/π_ref,l);
    ``residual`` = simplified − dpo_form simplifies to 0 and ``z_cancels`` says Z left the expression.
    """

    reward: sp.Expr
    inversion_residual: sp.Expr
    bt_prob: sp.Expr
    simplified: sp.Expr
    dpo_form: sp.Expr
    residual: sp.Expr
    z_cancels: bool


def bt_partition_cancels() -> PartitionCancellation:
    """Substitute r = β log π/π_ref + β log Z into Bradley–Terry and show Z cancels."""
    pi, pi_ref, z = sp.symbols("pi pi_ref Z", positive=True)
    reward = beta * sp.log(pi / pi_ref) + beta * sp.log(z)
    inversion_residual = sp.simplify(pi_ref * sp.exp(reward / beta) / z - pi)
    pi_w, pi_l, ref_w, ref_l = sp.symbols("pi_w pi_l pi_ref_w pi_ref_l", positive=True)
    r_w = reward.subs({pi: pi_w, pi_ref: ref_w})
    r_l = reward.subs({pi: pi_l, pi_ref: ref_l})
    bt_prob = sp.exp(r_w) / (sp.exp(r_w) + sp.exp(r_l))
    simplified = sp.simplify(
        sp.cancel(sp.expand_power_base(sp.powsimp(sp.expand_log(bt_prob, force=True)), force=True))
    )
    dpo_form = sigmoid(beta * sp.log(pi_w / ref_w) - beta * sp.log(pi_l / ref_l))
    residual = sp.simplify(sp.expand_log(simplified - dpo_form, force=True))
    return PartitionCancellation(
        reward, inversion_residual, bt_prob, simplified, dpo_form, residual, z not in simplified.free_symbols
    )


@dataclass(frozen=True)
class DPOGradient:
    """The DPO loss and its derivatives w.r.t. the policy log-probs (DPO paper, Sec. 4).

    Symbols: ``logp_w``, ``logp_l`` = log π_θ(y_w|x), log π_θ(y_l|x); ``ref_w``, ``ref_l`` the reference's.
    ``loss`` = −log σ(r̂_w − r̂_l) with r̂ = β (log π_θ − log π_ref); ``grad_chosen``/``grad_rejected`` are
    ∂loss/∂logp_w and ∂loss/∂logp_l; ``weight`` = σ(r̂_l − r̂_w); the residuals grad_chosen + β·weight and
    grad_rejected − β·weight are 0.
    """

    symbols: tuple
    loss: sp.Expr
    grad_chosen: sp.Expr
    grad_rejected: sp.Expr
    weight: sp.Expr
    residual_chosen: sp.Expr
    residual_rejected: sp.Expr


def dpo_gradient() -> DPOGradient:
    """Differentiate the DPO loss symbolically and compare with −β σ(r̂_l − r̂_w) and +β σ(r̂_l − r̂_w)."""
    logp_w, logp_l, ref_w, ref_l = sp.symbols("logp_w logp_l ref_w ref_l", real=True)
    reward_w, reward_l = beta * (logp_w - ref_w), beta * (logp_l - ref_l)
    loss = -sp.log(sigmoid(reward_w - reward_l))
    grad_chosen, grad_rejected = sp.diff(loss, logp_w), sp.diff(loss, logp_l)
    weight = sigmoid(reward_l - reward_w)
    return DPOGradient(
        (logp_w, logp_l, ref_w, ref_l),
        loss,
        grad_chosen,
        grad_rejected,
        weight,
        sp.simplify(grad_chosen + beta * weight),
        sp.simplify(grad_rejected - beta * weight),
    )


__all__ = [
    "DPOGradient",
    "GibbsRewrite",
    "PartitionCancellation",
    "StationaryPoint",
    "beta",
    "bt_partition_cancels",
    "dpo_gradient",
    "gibbs_rewrite",
    "sigmoid",
    "stationary_point",
]
