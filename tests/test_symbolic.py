"""The sympy derivations: residuals are exactly 0, and the expressions agree with the numeric package."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from dpo_teach import losses, symbolic, theory


@pytest.mark.parametrize("n", [2, 3, 4])
def test_gibbs_rewrite_is_an_identity_on_the_simplex(n):
    g = symbolic.gibbs_rewrite(n)
    assert g.residual == 0
    pi = sp.symbols(f"pi_1:{n + 1}", positive=True)
    # the gap is β log Z (Σπ − 1): zero exactly because π is a distribution
    assert sp.simplify(g.gap - symbolic.beta * sp.log(g.partition_function) * (sum(pi) - 1)) == 0
    assert sp.simplify(sum(g.optimal_policy) - 1) == 0


def test_gibbs_rewrite_evaluates_like_theory():
    g = symbolic.gibbs_rewrite(3)
    values = {symbolic.beta: 0.4}
    policy, ref, rewards = [0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [1.0, -0.5, 2.0]
    for i in range(3):
        values[sp.Symbol(f"pi_{i + 1}", positive=True)] = policy[i]
        values[sp.Symbol(f"pi_ref_{i + 1}", positive=True)] = ref[i]
        values[sp.Symbol(f"r_{i + 1}", real=True)] = rewards[i]
    as_log = lambda v: torch.log(torch.tensor(v, dtype=torch.float64))
    want = theory.rlhf_objective(as_log(policy), as_log(ref), torch.tensor(rewards, dtype=torch.float64), 0.4)
    assert float(g.objective.subs(values)) == pytest.approx(float(want), abs=1e-12)
    assert float(g.rewritten.subs(values)) == pytest.approx(float(want), abs=1e-12)


def test_stationary_point_is_the_optimal_policy():
    s = symbolic.stationary_point(3)
    assert s.residual == [0, 0, 0]
    lam = sp.Symbol("lambda", real=True)
    assert all(lam in expr.free_symbols for expr in s.stationary)
    assert all(lam not in expr.free_symbols for expr in s.normalised)


def test_partition_function_cancels_in_bradley_terry():
    c = symbolic.bt_partition_cancels()
    assert c.inversion_residual == 0
    assert c.residual == 0
    assert c.z_cancels
    assert sp.Symbol("Z", positive=True) in c.bt_prob.free_symbols
    # numerically: the BT probability of the substituted rewards = σ of the DPO margin
    subs = {
        symbolic.beta: 0.3,
        sp.Symbol("Z", positive=True): 17.0,
        sp.Symbol("pi_w", positive=True): 0.2,
        sp.Symbol("pi_l", positive=True): 0.05,
        sp.Symbol("pi_ref_w", positive=True): 0.1,
        sp.Symbol("pi_ref_l", positive=True): 0.1,
    }
    margin = 0.3 * math.log(0.2 / 0.1) - 0.3 * math.log(0.05 / 0.1)
    assert float(c.bt_prob.subs(subs)) == pytest.approx(1 / (1 + math.exp(-margin)), abs=1e-12)


def test_dpo_gradient_residuals_and_autograd():
    d = symbolic.dpo_gradient()
    assert d.residual_chosen == 0 and d.residual_rejected == 0
    logp_w, logp_l, ref_w, ref_l = d.symbols
    grad_w = sp.lambdify((logp_w, logp_l, ref_w, ref_l, symbolic.beta), d.grad_chosen)
    values = (-3.0, -2.5, -3.2, -2.0)
    pw = torch.tensor([values[0]], dtype=torch.float64, requires_grad=True)
    loss, _, _ = losses.dpo_loss(pw, *(torch.tensor([v], dtype=torch.float64) for v in values[1:]), beta=0.7)
    (autograd,) = torch.autograd.grad(loss.sum(), pw)
    assert grad_w(*values, 0.7) == pytest.approx(float(autograd), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2.0, True])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        symbolic.gibbs_rewrite(n)
