"""dpo_teach.diagnostics against brute force (Python loops, sampling, autograd), and tabular_dpo's ``probs``."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from dpo_teach import diagnostics as dg
from dpo_teach.tabular import comparison_probs, population_loss, tabular_dpo
from dpo_teach.worlds import BanditWorld, SequenceWorld


@pytest.fixture(scope="module")
def bandit():
    return BanditWorld(n_responses=5, n_prompts=3, seed=7)


@pytest.fixture(scope="module")
def seq_world():
    return SequenceWorld(n_prompts=2, length=2, alphabet_size=3, variable_length=True, seed=1)


def _random_policy(shape, seed):
    return torch.log_softmax(
        torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1
    )


# ---- pair_indices -----------------------------------------------------------------------------------------


def test_pair_indices_point_back_to_the_rows(seq_world):
    rows = seq_world.preference_pairs(None, 50, seed=3)
    idx = dg.pair_indices(seq_world, rows)
    for i, row in enumerate(rows):
        assert seq_world.prompts[idx.prompt[i]] == row["prompt"]
        assert seq_world.responses[idx.chosen[i]] == row["chosen"]
        assert seq_world.responses[idx.rejected[i]] == row["rejected"]


def test_pair_indices_match_bandit_completions(bandit):
    rows = bandit.preference_pairs(40, seed=1)
    comparisons = bandit.sample_comparisons(40, seed=1)
    idx = dg.pair_indices(bandit, rows)
    for got, want in zip(idx, comparisons, strict=True):
        assert torch.equal(got, want)


def test_pair_indices_unknown_response_is_named(seq_world):
    with pytest.raises(ValueError, match="chosen"):
        dg.pair_indices(seq_world, [{"prompt": "p0 :", "chosen": " z z", "rejected": " a ."}])


# ---- expected_length, expected_logratio_change -----------------------------------------------------------


def test_expected_length_is_the_weighted_sum(seq_world):
    logps = _random_policy((2, len(seq_world.responses)), 0)
    lengths = seq_world.response_lengths
    got = dg.expected_length(logps, lengths)
    for x in range(2):
        want = sum(math.exp(lp) * n for lp, n in zip(logps[x].tolist(), lengths.tolist(), strict=True))
        assert math.isclose(got[x].item(), want, rel_tol=1e-12)


def test_expected_length_wrong_lengths_shape_raises(seq_world):
    with pytest.raises(ValueError, match="lengths"):
        dg.expected_length(_random_policy((2, 5), 0), torch.ones(4))


def test_expected_logratio_change_brute_force(bandit):
    policy = _random_policy((3, 5), 1)
    probs = comparison_probs(bandit.ref_logps, bandit.rewards)
    chosen, rejected = dg.expected_logratio_change(policy, bandit.ref_logps, probs)
    delta = (policy - bandit.ref_logps).tolist()
    for x in range(3):
        want_w = sum(probs[x, a, b].item() * delta[x][a] for a in range(5) for b in range(5))
        want_l = sum(probs[x, a, b].item() * delta[x][b] for a in range(5) for b in range(5))
        assert math.isclose(chosen[x].item(), want_w, abs_tol=1e-12)
        assert math.isclose(rejected[x].item(), want_l, abs_tol=1e-12)


def test_expected_logratio_change_is_zero_at_the_reference(bandit):
    probs = comparison_probs(bandit.ref_logps, bandit.rewards)
    chosen, rejected = dg.expected_logratio_change(bandit.ref_logps, bandit.ref_logps, probs)
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0


def test_expected_logratio_change_bad_probs_raises(bandit):
    with pytest.raises(ValueError, match="probs"):
        dg.expected_logratio_change(bandit.ref_logps, bandit.ref_logps, torch.ones(3, 5, 4))


# ---- accuracies ----------------------------------------------------------------------------------------------


def test_pairwise_accuracy_counts_ties_as_half():
    scores = torch.tensor([[0.0, 1.0, 1.0]])
    prompt = torch.zeros(4, dtype=torch.long)
    chosen, rejected = torch.tensor([1, 0, 1, 2]), torch.tensor([0, 1, 2, 0])
    assert dg.pairwise_accuracy(scores, prompt, chosen, rejected) == (1 + 0 + 0.5 + 1) / 4


def test_pairwise_accuracy_rejects_float_indices():
    with pytest.raises(TypeError, match="prompt"):
        dg.pairwise_accuracy(
            torch.zeros(1, 2),
            torch.zeros(1),
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, dtype=torch.long),
        )


def test_expected_pairwise_accuracy_matches_sampled_comparisons(bandit):
    probs = comparison_probs(bandit.ref_logps, bandit.rewards)
    scores = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    n = 200_000
    sample = bandit.sample_comparisons(n, seed=5)
    sampled = dg.pairwise_accuracy(scores, *sample)
    exact = dg.expected_pairwise_accuracy(scores, probs)  # prompts are uniform in the sampler too
    assert abs(sampled - exact) < 5 * math.sqrt(0.25 / n)


def test_expected_pairwise_accuracy_limits(bandit):
    exact = comparison_probs(bandit.ref_logps, bandit.rewards, deterministic=True)
    assert dg.expected_pairwise_accuracy(bandit.rewards, exact) == pytest.approx(1.0, abs=1e-12)
    noisy = comparison_probs(bandit.ref_logps, bandit.rewards)
    assert dg.expected_pairwise_accuracy(torch.zeros(3, 5), noisy) == pytest.approx(0.5, abs=1e-12)
    assert dg.expected_pairwise_accuracy(-bandit.rewards, exact) == pytest.approx(0.0, abs=1e-12)


# ---- empirical_comparison_probs and tabular_dpo(probs=...) --------------------------------------------------


def test_empirical_probs_are_normalised_counts(bandit):
    sample = bandit.sample_comparisons(300, seed=4)
    table = dg.empirical_comparison_probs(*sample, 3, 5)
    counts = collections.Counter(zip(*(t.tolist() for t in sample), strict=True))
    per_prompt = collections.Counter(sample.prompt.tolist())
    for (x, a, b), c in counts.items():
        assert math.isclose(table[x, a, b].item(), c / per_prompt[x], rel_tol=1e-12)
    assert table.sum().item() == pytest.approx(sum(1.0 for x in range(3) if per_prompt[x]))


def test_empirical_probs_index_out_of_range_raises():
    one = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="n_responses"):
        dg.empirical_comparison_probs(one, one + 4, one, 1, 3)


def test_tabular_dpo_with_the_exact_table_is_unchanged(bandit):
    probs = comparison_probs(bandit.ref_logps, bandit.rewards)
    default = tabular_dpo(bandit, 0.5, steps=30)
    explicit = tabular_dpo(bandit, 0.5, steps=30, probs=probs)
    torch.testing.assert_close(explicit.policy_logps, default.policy_logps, rtol=0, atol=0)


def test_tabular_dpo_on_a_sample_leaves_unseen_responses_in_proportion():
    """The DPO loss depends on log π_θ(a) − log π_θ(b) only, so an uncompared response's logit gets no gradient."""
    world = BanditWorld(n_responses=8, n_prompts=1, seed=0)
    winner, loser = torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2])
    probs = dg.empirical_comparison_probs(torch.zeros(3, dtype=torch.long), winner, loser, 1, 8)
    run = tabular_dpo(world, 0.5, steps=100, probs=probs)
    ratio = (run.policy_logps - world.ref_logps)[0, 3:]  # responses 3..7 never compared
    torch.testing.assert_close(ratio, ratio[0].expand(5))
    before = population_loss(world.ref_logps, world.ref_logps, probs, 0.5).item()
    after = population_loss(run.policy_logps, world.ref_logps, probs, 0.5).item()
    assert before == pytest.approx(math.log(2)) and after < before


def test_tabular_dpo_bad_probs_shape_raises(bandit):
    with pytest.raises(ValueError, match="probs"):
        tabular_dpo(bandit, 0.5, steps=1, probs=torch.ones(3, 5, 4))


def test_tabular_dpo_probs_and_label_noise_conflict(bandit):
    probs = comparison_probs(bandit.ref_logps, bandit.rewards)
    with pytest.raises(ValueError, match="not both"):
        tabular_dpo(bandit, 0.5, steps=1, probs=probs, label_noise=0.1)


# ---- flip_labels ------------------------------------------------------------------------------------------------


def test_flip_labels_rates(seq_world):
    rows = seq_world.preference_pairs(None, 4000, seed=0)
    assert dg.flip_labels(rows, 0.0) == rows
    reversed_rows = dg.flip_labels(rows, 1.0)
    assert all(
        r["chosen"] == s["rejected"] and r["rejected"] == s["chosen"]
        for r, s in zip(reversed_rows, rows, strict=True)
    )
    half = dg.flip_labels(rows, 0.5, seed=3)
    flipped = sum(r["chosen"] != s["chosen"] for r, s in zip(half, rows, strict=True))
    same = sum(s["chosen"] == s["rejected"] for s in rows)  # a pair of identical responses looks unflipped
    assert abs(flipped / (len(rows) - same) - 0.5) < 5 * math.sqrt(0.25 / len(rows))
    assert dg.flip_labels(rows, 0.5, seed=3) == half and rows[0] is not half[0]


def test_flip_labels_rate_above_one_raises():
    with pytest.raises(ValueError, match="rate"):
        dg.flip_labels([], 1.5)


# ---- fit_linear_bradley_terry ---------------------------------------------------------------------------------


def _linear_world(n, seed=0, d=3):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 10, d, generator=g, dtype=torch.float64)
    w_true = torch.tensor([1.0, -0.5, 2.0][:d], dtype=torch.float64)
    world = BanditWorld(n_responses=10, n_prompts=2, seed=seed, rewards=features @ w_true)
    return features, w_true, world.sample_comparisons(n, seed=seed)


def test_linear_bradley_terry_is_stationary():
    features, _, sample = _linear_world(200)
    w = dg.fit_linear_bradley_terry(features, *sample, l2=0.05).requires_grad_(True)
    diff = features[sample.prompt, sample.winner] - features[sample.prompt, sample.loser]
    loss = -torch.nn.functional.logsigmoid(diff @ w).mean() + 0.05 * (w * w).sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert grad.abs().max() < 1e-8


def test_linear_bradley_terry_recovers_the_true_weights():
    features, w_true, sample = _linear_world(20_000, seed=1)
    w = dg.fit_linear_bradley_terry(features, *sample, l2=0.0)
    assert (w - w_true).abs().max() < 0.1


def test_linear_bradley_terry_bad_features_raises():
    one = torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="features"):
        dg.fit_linear_bradley_terry(torch.zeros(2, 3), one, one, one)


def test_covered_mass_counts_the_compared_responses_once():
    """compared_responses marks each (prompt, response) a row names; covered_mass sums π over them, per prompt,
    averaged — checked against a loop written here, with a response compared twice counted once."""
    world = BanditWorld(n_responses=5, n_prompts=3, seed=0)
    rows = [
        {"prompt": world.prompts[0], "chosen": world.responses[1], "rejected": world.responses[2]},
        {"prompt": world.prompts[0], "chosen": world.responses[2], "rejected": world.responses[1]},
        {"prompt": world.prompts[2], "chosen": world.responses[4], "rejected": world.responses[0]},
    ]
    seen = dg.compared_responses(world, rows)
    assert seen.sum() == 4 and bool(seen[0, 1] & seen[0, 2] & seen[2, 4] & seen[2, 0]) and not seen[1].any()
    probs = world.ref_logps.double().exp()
    by_hand = (float(probs[0, 1] + probs[0, 2]) + 0.0 + float(probs[2, 4] + probs[2, 0])) / 3
    assert dg.covered_mass(world.ref_logps, seen) == pytest.approx(by_hand, abs=1e-12)
    assert dg.covered_mass(world.ref_logps, torch.ones_like(seen)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="bool tensor"):
        dg.covered_mass(world.ref_logps, seen.float())
