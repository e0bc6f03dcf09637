"""The closed forms against direct numerical optimisation, brute force and plain-Python formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dpo_teach import theory


def random_problem(shape, seed, reward_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.log_softmax(torch.randn(shape, generator=gen, dtype=torch.float64), -1)
    rewards = reward_scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    return ref, rewards


def maximise_objective(ref, rewards, beta):
    """Maximise E_π[r] − β KL(π‖π_ref) over softmax logits with L-BFGS, knowing nothing of the closed form.

    Each prompt (row) is its own K-dimensional problem; the objective is divided by β to keep it well scaled.
    """
    rows = []
    for ref_row, reward_row in zip(
        ref.reshape(-1, ref.shape[-1]), rewards.reshape(-1, ref.shape[-1]), strict=True
    ):
        logits = ref_row.clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [logits],
            lr=1,
            max_iter=200,
            tolerance_grad=1e-12,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def closure(logits=logits, opt=opt, ref_row=ref_row, reward_row=reward_row):
            opt.zero_grad()
            log_pi = torch.log_softmax(logits, -1)
            objective = (log_pi.exp() * (reward_row - beta * (log_pi - ref_row))).sum() / beta
            (-objective).backward()
            return -objective

        opt.step(closure)
        rows.append(torch.softmax(logits.detach(), -1))
    return torch.stack(rows).reshape(ref.shape)


@pytest.mark.parametrize("shape", [(5,), (3, 6), (2, 2, 4)])
@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_optimal_policy_matches_direct_optimisation(shape, beta):
    ref, rewards = random_problem(shape, seed=len(shape))
    closed = theory.optimal_policy(ref, rewards, beta).exp()
    numeric = maximise_objective(ref, rewards, beta)
    torch.testing.assert_close(closed, numeric, rtol=0, atol=1e-6)


def test_optimal_policy_is_the_explicit_formula():
    ref, rewards = random_problem((4, 7), seed=1)
    beta = 0.3
    for x in range(4):
        weights = [
            math.exp(lp) * math.exp(r / beta)
            for lp, r in zip(ref[x].tolist(), rewards[x].tolist(), strict=True)
        ]
        z = sum(weights)
        assert theory.partition_function(ref[x], rewards[x], beta).item() == pytest.approx(z, rel=1e-12)
        want = torch.tensor([w / z for w in weights], dtype=torch.float64)
        torch.testing.assert_close(theory.optimal_policy(ref, rewards, beta)[x].exp(), want)


@pytest.mark.parametrize("beta", [0.05, 1.0])
def test_gibbs_rewrite_holds_for_any_policy(beta):
    """J(π) = β log Z − β KL(π‖π*) for every π, so J is maximal (= β log Z) exactly at π*."""
    ref, rewards = random_problem((3, 5), seed=2)
    gen = torch.Generator().manual_seed(3)
    policy = torch.log_softmax(torch.randn(3, 5, generator=gen, dtype=torch.float64), -1)
    star = theory.optimal_policy(ref, rewards, beta)
    log_z = theory.log_partition_function(ref, rewards, beta)
    torch.testing.assert_close(
        theory.rlhf_objective(policy, ref, rewards, beta),
        beta * log_z - beta * theory.kl_divergence(policy, star),
    )
    torch.testing.assert_close(theory.rlhf_objective(star, ref, rewards, beta), beta * log_z)
    assert bool((theory.rlhf_objective(policy, ref, rewards, beta) < beta * log_z).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_optimal_policy_extreme_beta_and_rewards(dtype):
    """β = 1e-4 and rewards of ±1e3 (r/β = 1e7): finite, normalised, all mass on the best response."""
    rewards = torch.tensor([[1e3, -1e3, 999.0, 0.0], [-1e3, -1e3, 1e3, -999.0]], dtype=dtype)
    ref = torch.log_softmax(torch.tensor([[0.0, 5.0, 1.0, 2.0], [1.0, 1.0, -3.0, 0.0]], dtype=dtype), -1)
    log_star = theory.optimal_policy(ref, rewards, 1e-4)
    assert log_star.dtype == dtype
    assert bool(torch.isfinite(log_star).all())
    torch.testing.assert_close(log_star.exp().sum(-1), torch.ones(2, dtype=dtype))
    assert log_star.argmax(-1).tolist() == [0, 2]
    assert bool(torch.isfinite(theory.log_partition_function(ref, rewards, 1e-4)).all())
    # the runner-up (reward 999 vs 1000) is exp(-1/1e-4) = exp(-1e4) below the best: in log space exactly
    assert float(log_star[0, 2] - log_star[0, 0]) == pytest.approx(
        (999.0 - 1e3) / 1e-4 + float(ref[0, 2] - ref[0, 0])
    )


def test_optimal_policy_limits_in_beta():
    ref, rewards = random_problem((6,), seed=4)
    torch.testing.assert_close(theory.optimal_policy(ref, rewards, 1e6), ref, rtol=0, atol=1e-5)
    assert int(theory.optimal_policy(ref, rewards, 1e-3).argmax()) == int(rewards.argmax())


def test_zero_probability_responses_stay_zero():
    ref = torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    rewards = torch.tensor([0.0, 1.0, 100.0], dtype=torch.float64)
    star = theory.optimal_policy(ref, rewards, 0.5)
    assert float(star[2]) == -math.inf
    assert float(theory.kl_divergence(star, ref)) == pytest.approx(
        sum(p * math.log(p / q) for p, q in zip(star.exp()[:2].tolist(), [0.5, 0.5], strict=True))
    )


def test_adding_a_prompt_function_changes_neither_optimum_nor_preferences():
    """Lemma 1-2 of the DPO paper: r and r + f(x) are equivalent."""
    ref, rewards = random_problem((4, 6), seed=5)
    f = torch.tensor([[3.0], [-100.0], [0.5], [1e3]], dtype=torch.float64)
    shifted = rewards + f
    torch.testing.assert_close(
        theory.optimal_policy(ref, shifted, 0.2), theory.optimal_policy(ref, rewards, 0.2)
    )
    torch.testing.assert_close(
        theory.bradley_terry_prob(shifted[:, :3], shifted[:, 3:]),
        theory.bradley_terry_prob(rewards[:, :3], rewards[:, 3:]),
    )
    torch.testing.assert_close(
        theory.log_partition_function(ref, shifted, 0.2),
        theory.log_partition_function(ref, rewards, 0.2) + f[:, 0] / 0.2,
    )


def test_bradley_terry_is_exp_ratio_and_stable():
    rw, rl = torch.tensor([1.0, -2.0, 1e3, -1e3]), torch.tensor([0.0, 3.0, -1e3, 1e3])
    got = theory.bradley_terry_prob(rw, rl)
    want = [
        math.exp(a) / (math.exp(a) + math.exp(b))
        for a, b in zip(rw[:2].tolist(), rl[:2].tolist(), strict=True)
    ]
    torch.testing.assert_close(got[:2], torch.tensor(want))
    assert got[2:].tolist() == [1.0, 0.0]


def test_plackett_luce_sums_to_one_over_rankings():
    rewards = torch.tensor([0.3, -1.0, 2.0, 0.7], dtype=torch.float64)
    perms = list(itertools.permutations(range(4)))
    total = sum(math.exp(theory.plackett_luce_logprob(rewards, torch.tensor(p)).item()) for p in perms)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_matches_formula_and_top_m_marginal():
    rewards = torch.tensor([[0.3, -1.0, 2.0, 0.7], [1.0, 1.0, 0.0, -2.0]], dtype=torch.float64)
    ranking = torch.tensor([[2, 0, 3, 1], [3, 1, 0, 2]])
    for x in range(2):
        r, order = rewards[x].tolist(), ranking[x].tolist()
        want = sum(r[order[k]] - math.log(sum(math.exp(r[j]) for j in order[k:])) for k in range(4))
        assert theory.plackett_luce_logprob(rewards, ranking)[x].item() == pytest.approx(want, abs=1e-12)
    # a top-2 ranking's probability is the sum over the full rankings that start with it
    top = torch.tensor([2, 0])
    full = sum(
        math.exp(theory.plackett_luce_logprob(rewards[0], torch.tensor(p)).item())
        for p in itertools.permutations(range(4))
        if list(p[:2]) == top.tolist()
    )
    assert math.exp(theory.plackett_luce_logprob(rewards[0], top).item()) == pytest.approx(full, abs=1e-12)


def test_plackett_luce_with_two_items_is_bradley_terry():
    rewards = torch.tensor([0.4, -1.1])
    torch.testing.assert_close(
        theory.plackett_luce_logprob(rewards, torch.tensor([0])).exp(),
        theory.bradley_terry_prob(rewards[0], rewards[1]),
    )


def test_kl_divergence_and_expected_reward_match_numpy_style_sums():
    p, rewards = random_problem((5,), seed=6)
    q, _ = random_problem((5,), seed=7)
    pp, qq = p.exp().tolist(), q.exp().tolist()
    assert theory.kl_divergence(p, q).item() == pytest.approx(
        sum(a * math.log(a / b) for a, b in zip(pp, qq, strict=True)), abs=1e-12
    )
    assert theory.expected_reward(p, rewards).item() == pytest.approx(
        sum(a * r for a, r in zip(pp, rewards.tolist(), strict=True)), abs=1e-12
    )
    assert theory.kl_divergence(p, p).item() == 0.0


def test_implicit_reward_recovers_true_reward_up_to_beta_log_z():
    """r̂ = β log π*/π_ref = r − β log Z(x): the true reward up to a per-prompt constant."""
    ref, rewards = random_problem((3, 4), seed=8)
    beta = 0.7
    implied = theory.implicit_reward(theory.optimal_policy(ref, rewards, beta), ref, beta)
    torch.testing.assert_close(
        implied, rewards - beta * theory.log_partition_function(ref, rewards, beta)[:, None]
    )


def test_dpo_gradient_weight_is_sigma_of_reward_gap():
    pw, pl, rw, rl = (torch.tensor([v]) for v in (-3.0, -5.0, -4.0, -4.5))
    beta = 0.5
    hat_w, hat_l = beta * (-3.0 + 4.0), beta * (-5.0 + 4.5)
    assert theory.dpo_gradient_weight(pw, pl, rw, rl, beta).item() == pytest.approx(
        1 / (1 + math.exp(hat_w - hat_l))
    )


# --- bad inputs -------------------------------------------------------------------------------------------------

REF, REWARDS = random_problem((4,), seed=9)


def test_rewards_must_be_a_tensor():
    with pytest.raises(TypeError, match="rewards must be a torch.Tensor"):
        theory.optimal_policy(REF, [0.0, 1.0, 2.0, 3.0], 0.1)


def test_rewards_must_be_finite():
    with pytest.raises(ValueError, match="rewards contains inf"):
        theory.optimal_policy(REF, torch.tensor([0.0, math.inf, 0.0, 0.0], dtype=torch.float64), 0.1)


def test_ref_logps_must_not_be_nan():
    with pytest.raises(ValueError, match="ref_logps contains NaN or \\+inf"):
        theory.optimal_policy(torch.tensor([math.nan, 0.0, 0.0, 0.0]), REWARDS, 0.1)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        theory.optimal_policy(REF, REWARDS, 0.0)


def test_kl_needs_normalised_inputs():
    with pytest.raises(ValueError, match="p_logps is not normalised"):
        theory.kl_divergence(torch.zeros(4, dtype=torch.float64), REF)


def test_rlhf_objective_needs_normalised_policy():
    with pytest.raises(ValueError, match="policy_logps is not normalised"):
        theory.rlhf_objective(REWARDS, REF, REWARDS, 0.1)


def test_bradley_terry_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        theory.bradley_terry_prob(torch.zeros(3), torch.zeros(2))


def test_ranking_must_be_integer():
    with pytest.raises(TypeError, match="ranking must be an integer torch.Tensor"):
        theory.plackett_luce_logprob(REWARDS, torch.tensor([0.0, 1.0]))


def test_ranking_must_not_repeat():
    with pytest.raises(ValueError, match="ranking repeats a response"):
        theory.plackett_luce_logprob(REWARDS, torch.tensor([1, 1]))


def test_ranking_indices_in_range():
    with pytest.raises(ValueError, match=r"ranking holds indices outside \[0, 4\)"):
        theory.plackett_luce_logprob(REWARDS, torch.tensor([0, 4]))


def test_ranking_shape_must_fit():
    with pytest.raises(ValueError, match="ranking must have shape"):
        theory.plackett_luce_logprob(REWARDS, torch.tensor([0, 1, 2, 3, 0]))
