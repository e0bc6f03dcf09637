"""The bandit world: its tables, its exact optimum, and comparisons that follow Bradley–Terry."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach import theory
from dpo_teach.worlds import BanditWorld


def test_tables_have_shape_x_by_k_and_are_normalised():
    world = BanditWorld(n_responses=5, n_prompts=3, seed=1)
    assert world.ref_logps.shape == world.rewards.shape == (3, 5)
    torch.testing.assert_close(world.ref_logps.exp().sum(-1), torch.ones(3, dtype=torch.float64))
    assert len(set(world.responses)) == 5 and len(world.prompts) == 3
    assert BanditWorld(n_responses=20).responses[-1] == "response 19"


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = BanditWorld(seed=3), BanditWorld(seed=3), BanditWorld(seed=4)
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.ref_logps, b.ref_logps)
    assert not torch.equal(a.rewards, c.rewards)


def test_explicit_tables_are_used():
    world = BanditWorld(
        n_responses=3, rewards=torch.tensor([1.0, 0.0, -1.0]), ref_logps=torch.tensor([0.0, 0.0, 0.0])
    )
    torch.testing.assert_close(world.ref_logps.exp(), torch.full((1, 3), 1 / 3, dtype=torch.float64))
    assert world.true_reward("prompt 0:", " apple") == 1.0
    assert world.true_reward("prompt 0:", "cherry") == -1.0


def test_optimal_policy_is_theory_optimal_policy():
    world = BanditWorld(n_responses=6, n_prompts=2, seed=2)
    torch.testing.assert_close(
        world.optimal_policy(0.3), theory.optimal_policy(world.ref_logps, world.rewards, 0.3)
    )
    metrics = world.evaluate(world.optimal_policy(0.3), 0.3)
    assert metrics["kl_to_optimal"] == pytest.approx(0.0, abs=1e-12)
    log_z = theory.log_partition_function(world.ref_logps, world.rewards, 0.3)
    assert metrics["objective"] == pytest.approx(float((0.3 * log_z).mean()), abs=1e-12)
    assert world.evaluate(world.ref_logps, 0.3)["kl_to_ref"] == 0.0


def test_comparisons_are_reproducible_and_distinct():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=0)
    a, b = world.sample_comparisons(200, seed=7), world.sample_comparisons(200, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.winner, world.sample_comparisons(200, seed=8).winner)
    assert bool((a.winner != a.loser).all())


def test_win_rates_follow_bradley_terry():
    """Over many comparisons of a pair, the fraction won by y_i approaches σ(r_i − r_j)."""
    world = BanditWorld(n_responses=3, rewards=torch.tensor([1.0, 0.0, -0.5]), ref_logps=torch.zeros(3))
    c = world.sample_comparisons(30_000, seed=1)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        i_wins = int(((c.winner == i) & (c.loser == j)).sum())
        j_wins = int(((c.winner == j) & (c.loser == i)).sum())
        n = i_wins + j_wins
        p = 1 / (1 + math.exp(-(float(world.rewards[0, i]) - float(world.rewards[0, j]))))
        assert abs(i_wins / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_pairs_are_drawn_from_the_policy():
    """P({i, j}) = π_i π_j / (1 − π_i) + π_j π_i / (1 − π_j): y1 ~ π, then y2 ~ π given y2 ≠ y1."""
    probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    world = BanditWorld(n_responses=3, ref_logps=probs.log())
    n = 30_000
    c = world.sample_comparisons(n, seed=2)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        count = int((((c.winner == i) & (c.loser == j)) | ((c.winner == j) & (c.loser == i))).sum())
        p = float(probs[i] * probs[j] / (1 - probs[i]) + probs[j] * probs[i] / (1 - probs[j]))
        assert abs(count / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_comparisons_from_another_policy():
    world = BanditWorld(n_responses=4, seed=0)
    policy = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))
    c = world.sample_comparisons(100, seed=0, policy_logps=policy)
    assert set(c.winner.tolist()) | set(c.loser.tolist()) == {0, 1}


def test_deterministic_labels_pick_the_higher_reward():
    world = BanditWorld(n_responses=6, n_prompts=3, seed=5)
    c = world.sample_comparisons(500, seed=0, deterministic=True)
    assert bool((world.rewards[c.prompt, c.winner] > world.rewards[c.prompt, c.loser]).all())


def test_preference_and_kto_datasets():
    world = BanditWorld(n_responses=4, n_prompts=2, seed=0)
    ds = world.preference_dataset(10, seed=3)
    c = world.sample_comparisons(10, seed=3)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 10
    assert ds[0] == {
        "prompt": world.prompts[int(c.prompt[0])],
        "chosen": " " + world.responses[int(c.winner[0])],
        "rejected": " " + world.responses[int(c.loser[0])],
    }
    kto = world.kto_dataset(10, seed=3)
    assert len(kto) == 20 and kto["label"] == [True, False] * 10
    assert kto[0]["completion"] == ds[0]["chosen"] and kto[1]["completion"] == ds[0]["rejected"]


def test_sft_rows_follow_the_reference():
    probs = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    world = BanditWorld(n_responses=3, ref_logps=probs.log())
    rows = world.sft_rows(20_000, seed=0)
    share = sum(r["completion"] == " apple" for r in rows) / len(rows)
    assert abs(share - 0.7) < 4 * math.sqrt(0.7 * 0.3 / 20_000)


# --- bad inputs -------------------------------------------------------------------------------------------------


def test_too_few_responses():
    with pytest.raises(ValueError, match="n_responses must be >= 2"):
        BanditWorld(n_responses=1)


def test_zero_prompts():
    with pytest.raises(ValueError, match="n_prompts must be >= 1"):
        BanditWorld(n_prompts=0)


def test_float_responses():
    with pytest.raises(TypeError, match="n_responses must be an int"):
        BanditWorld(n_responses=3.0)


def test_rewards_wrong_shape():
    with pytest.raises(ValueError, match=r"rewards must have shape \[n_prompts, n_responses\]"):
        BanditWorld(n_responses=3, rewards=torch.zeros(4))


def test_rewards_as_list():
    with pytest.raises(TypeError, match="rewards must be a torch.Tensor"):
        BanditWorld(n_responses=3, rewards=[0.0, 1.0, 2.0])


def test_nonpositive_n_comparisons():
    with pytest.raises(ValueError, match="n must be a positive int"):
        BanditWorld().sample_comparisons(0)


def test_unnormalised_policy():
    with pytest.raises(ValueError, match="policy_logps is not normalised"):
        BanditWorld(n_responses=3).sample_comparisons(5, policy_logps=torch.zeros(3))


def test_policy_wrong_shape():
    with pytest.raises(ValueError, match=r"policy_logps must have shape \[1, 3\]"):
        BanditWorld(n_responses=3).evaluate(torch.zeros(4), 0.1)


def test_policy_on_one_response_has_no_pairs():
    policy = torch.log(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="all its mass on one response"):
        BanditWorld(n_responses=3).sample_comparisons(5, policy_logps=policy)


def test_unknown_response():
    with pytest.raises(ValueError, match="unknown response"):
        BanditWorld().true_reward("prompt 0:", "durian")


def test_unknown_prompt():
    with pytest.raises(ValueError, match="unknown prompt"):
        BanditWorld().true_reward("prompt 9:", "apple")


def test_the_world_contract_and_the_older_call_forms_agree():
    """BanditWorld follows World's order preference_pairs(policy, n, seed, deterministic) and
    evaluate(policy, ref, beta); the bandit's older forms (n first; evaluate(policy, beta)) give the same."""
    world = BanditWorld(n_responses=5, n_prompts=3, seed=2)
    tilted = torch.log_softmax(world.ref_logps + world.rewards, -1)
    new = world.preference_pairs(tilted, 30, 4, True)
    assert (
        new
        == world.preference_pairs(30, 4, tilted, True)
        == world.preference_pairs(30, seed=4, policy_logps=tilted, deterministic=True)
    )
    assert new != world.preference_pairs(None, 30, 4, True)  # the policy is used
    assert world.preference_pairs(None, 12, seed=1) == world.preference_pairs(12, seed=1)
    assert world.kto_dataset(None, 6, 2).to_list() == world.kto_dataset(6, seed=2).to_list()
    assert (
        world.preference_dataset(tilted, 6, 2).to_list() == world.preference_dataset(6, 2, tilted).to_list()
    )
    policy = world.optimal_policy(0.7)
    assert (
        world.evaluate(policy, None, 0.7)
        == world.evaluate(policy, 0.7)
        == world.evaluate(policy, world.ref_logps, 0.7)
    )
    other_ref = torch.log_softmax(torch.zeros_like(world.ref_logps), -1)
    moved = world.evaluate(policy, other_ref, 0.7)
    assert moved["kl_to_ref"] != world.evaluate(policy, 0.7)["kl_to_ref"]  # the reference given is used
    assert (
        world.evaluate(world.optimal_policy(0.7), other_ref, 0.7)["kl_to_optimal"] > 1e-6
    )  # π* is relative to it
