"""Population (tabular) preference optimisation on the bandit: the comparison table, the loss, convergence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dpo_teach import theory
from dpo_teach.losses import LOSSES, dpo_loss
from dpo_teach.tabular import comparison_probs, population_loss, tabular_dpo
from dpo_teach.worlds import BanditWorld


def _brute_force_probs(ref_logps, rewards, deterministic):
    """D(a, b | x) by following the sampler's story one case at a time, with Python floats."""
    X, K = rewards.shape
    out = torch.zeros(X, K, K, dtype=torch.float64)
    for x in range(X):
        pi = [math.exp(v) for v in ref_logps[x].tolist()]
        r = rewards[x].tolist()
        for y1, y2 in itertools.permutations(range(K), 2):
            p_pair = pi[y1] * pi[y2] / (1 - pi[y1])  # y1 ~ π_ref, then y2 ~ π_ref restricted to y2 ≠ y1
            if deterministic:
                p_first = 1.0 if r[y1] >= r[y2] else 0.0
            else:
                p_first = 1 / (1 + math.exp(-(r[y1] - r[y2])))
            out[x, y1, y2] += p_pair * p_first
            out[x, y2, y1] += p_pair * (1 - p_first)
    return out


@pytest.mark.parametrize("deterministic", [False, True])
def test_comparison_probs_match_brute_force(deterministic):
    rewards = torch.tensor([[0.3, -1.0, 0.3, 2.0], [1.0, 0.0, -0.5, 0.2]], dtype=torch.float64)  # a tie
    world = BanditWorld(n_responses=4, n_prompts=2, seed=3, rewards=rewards)
    probs = comparison_probs(world.ref_logps, world.rewards, deterministic)
    torch.testing.assert_close(probs, _brute_force_probs(world.ref_logps, world.rewards, deterministic))
    torch.testing.assert_close(probs.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("deterministic", [False, True])
def test_comparison_probs_match_the_worlds_sampler(deterministic):
    world = BanditWorld(n_responses=5, n_prompts=3, seed=4)
    n = 120_000
    sample = world.sample_comparisons(n, seed=2, deterministic=deterministic)
    counts = torch.zeros(3, 5, 5, dtype=torch.float64)
    counts.index_put_(
        (sample.prompt, sample.winner, sample.loser), torch.ones(n, dtype=torch.float64), accumulate=True
    )
    expected = comparison_probs(world.ref_logps, world.rewards, deterministic) / 3
    assert (counts / n - expected).abs().max() < 5 * math.sqrt(0.25 / n)


def test_population_loss_is_the_weighted_sum_of_pair_losses():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=5)
    beta = 0.7
    policy = torch.log_softmax(
        torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1
    )
    probs = _brute_force_probs(world.ref_logps, world.rewards, False)
    expected = 0.0
    for x, a, b in itertools.product(range(2), range(4), range(4)):
        if a != b:
            h = (policy[x, a] - world.ref_logps[x, a] - policy[x, b] + world.ref_logps[x, b]).item()
            expected += probs[x, a, b].item() * math.log1p(math.exp(-beta * h)) / 2
    got = population_loss(policy, world.ref_logps, probs, beta)
    assert math.isclose(got.item(), expected, rel_tol=1e-12)


def test_population_loss_accepts_a_spec_a_callable_and_loss_kwargs():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=6)
    probs = comparison_probs(world.ref_logps, world.rewards)
    policy = world.optimal_policy(1.0)
    by_name = population_loss(policy, world.ref_logps, probs, 0.5, "sigmoid")
    torch.testing.assert_close(
        population_loss(policy, world.ref_logps, probs, 0.5, LOSSES["sigmoid"]), by_name
    )
    torch.testing.assert_close(population_loss(policy, world.ref_logps, probs, 0.5, dpo_loss), by_name)
    smoothed = population_loss(policy, world.ref_logps, probs, 0.5, "sigmoid", label_smoothing=0.2)
    flipped = population_loss(policy, world.ref_logps, probs.transpose(1, 2), 0.5, "sigmoid")
    # cDPO with ε = 0.2: the loss is a mixture of the two label orders.
    torch.testing.assert_close(smoothed, 0.8 * by_name + 0.2 * flipped)


def test_population_loss_reference_free_losses_ignore_the_reference():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=7)
    probs = comparison_probs(world.ref_logps, world.rewards)
    policy = world.optimal_policy(1.0)
    other_ref = torch.log_softmax(torch.zeros(2, 4, dtype=torch.float64), -1)
    for name in ("simpo", "orpo"):
        a = population_loss(policy, world.ref_logps, probs, 0.5, name)
        b = population_loss(policy, other_ref, probs, 0.5, name)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("beta", [0.25, 1.0, 4.0])
def test_tabular_dpo_converges_to_the_closed_form_optimum(beta):
    world = BanditWorld(n_responses=6, n_prompts=3, seed=1)
    run = tabular_dpo(world, beta, steps=400, lr=0.1, log_every=50)
    kl = theory.kl_divergence(run.policy_logps, theory.optimal_policy(world.ref_logps, world.rewards, beta))
    assert kl.max() < 1e-8
    assert run.history[-1]["kl_to_optimal"] < 1e-8


def test_tabular_history_starts_at_the_reference_and_the_loss_falls():
    world = BanditWorld(n_responses=5, n_prompts=2, seed=2)
    run = tabular_dpo(world, 0.5, steps=60, lr=0.1, log_every=20)
    assert [h["step"] for h in run.history] == [0, 20, 40, 60]
    start = theory.kl_divergence(world.ref_logps, world.optimal_policy(0.5)).mean().item()
    assert math.isclose(run.history[0]["kl_to_optimal"], start, rel_tol=1e-9)
    assert math.isclose(run.history[0]["loss"], math.log(2), rel_tol=1e-9)  # π_θ = π_ref: every margin is 0
    losses = [h["loss"] for h in run.history]
    assert losses == sorted(losses, reverse=True)


def test_deterministic_labels_push_dpo_past_the_optimum():
    # With deterministic preferences the best response wins every comparison: DPO keeps raising it past π*.
    world = BanditWorld(n_responses=4, n_prompts=2, seed=3)
    run = tabular_dpo(world, 1.0, steps=300, lr=0.1, deterministic=True, log_every=100)
    best = world.rewards.argmax(-1)
    pi_best = run.policy_logps.exp()[torch.arange(2), best]
    pi_star_best = world.optimal_policy(1.0).exp()[torch.arange(2), best]
    assert bool((pi_best > pi_star_best).all())


def test_unknown_loss_name_is_a_value_error():
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(ValueError, match="unknown loss"):
        tabular_dpo(world, 0.5, loss="dpoo", steps=1)


def test_unpaired_loss_is_a_value_error():
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(ValueError, match="unpaired"):
        tabular_dpo(world, 0.5, loss="kto", steps=1)


def test_loss_of_wrong_type_is_a_type_error():
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(TypeError, match="loss must be"):
        tabular_dpo(world, 0.5, loss=3, steps=1)


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_bad_steps_is_a_value_error(steps):
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(ValueError, match="steps"):
        tabular_dpo(world, 0.5, steps=steps)


def test_bad_beta_is_a_value_error():
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(ValueError, match="beta"):
        tabular_dpo(world, -0.5, steps=1)


def test_comparison_probs_shape_mismatch_is_a_value_error():
    ref = torch.log_softmax(torch.zeros(2, 3, dtype=torch.float64), -1)
    with pytest.raises(ValueError, match="n_prompts, n_responses"):
        comparison_probs(ref, torch.zeros(2, 4, dtype=torch.float64))


def test_comparison_probs_one_hot_reference_is_a_value_error():
    ref = torch.log(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="all its mass"):
        comparison_probs(ref, torch.zeros(1, 3, dtype=torch.float64))


@pytest.mark.parametrize("deterministic", [False, True])
def test_label_noise_flips_each_label_with_probability_eps(deterministic):
    world = BanditWorld(n_responses=4, n_prompts=2, seed=8)
    eps = 0.15
    X, K = world.rewards.shape
    expected = torch.zeros(X, K, K, dtype=torch.float64)
    for x in range(X):
        pi = [math.exp(v) for v in world.ref_logps[x].tolist()]
        r = world.rewards[x].tolist()
        for y1, y2 in itertools.permutations(range(K), 2):
            p_pair = pi[y1] * pi[y2] / (1 - pi[y1])
            clean = (1.0 if r[y1] >= r[y2] else 0.0) if deterministic else 1 / (1 + math.exp(r[y2] - r[y1]))
            noisy = (1 - eps) * clean + eps * (1 - clean)  # the annotator's label is flipped w.p. ε
            expected[x, y1, y2] += p_pair * noisy
            expected[x, y2, y1] += p_pair * (1 - noisy)
    got = comparison_probs(world.ref_logps, world.rewards, deterministic, label_noise=eps)
    torch.testing.assert_close(got, expected)


def test_robust_dpo_undoes_label_noise_and_dpo_does_not():
    # Chowdhury et al. 2024: the robust loss is unbiased under flips at rate ε, so its population minimiser on
    # noisy labels is the clean optimum π*; plain DPO on the same noisy labels lands elsewhere.
    world = BanditWorld(n_responses=5, n_prompts=2, seed=9)
    eps, beta = 0.2, 0.5
    optimal = theory.optimal_policy(world.ref_logps, world.rewards, beta)
    robust = tabular_dpo(
        world, beta, "robust", steps=400, label_noise=eps, loss_kwargs={"label_smoothing": eps}
    )
    plain = tabular_dpo(world, beta, "sigmoid", steps=400, label_noise=eps)
    assert theory.kl_divergence(robust.policy_logps, optimal).max() < 1e-8
    assert theory.kl_divergence(plain.policy_logps, optimal).mean() > 1e-3


@pytest.mark.parametrize("label_noise", [0.5, -0.1, True, "0.1"])
def test_bad_label_noise_is_a_value_error(label_noise):
    world = BanditWorld(n_responses=3, seed=0)
    with pytest.raises(ValueError, match="label_noise"):
        comparison_probs(world.ref_logps, world.rewards, label_noise=label_noise)
