"""RSO's statistical rejection sampling: the law of an accepted sample equals π*_β exactly (by enumeration),
the sampler's frequencies and candidate counts agree with it, the pairs it builds, and bad input."""

from __future__ import annotations

import pytest
import torch

from dpo_teach import theory
from dpo_teach.rso import (
    acceptance_distribution,
    acceptance_probability,
    rejection_sample,
    rso_preference_pairs,
)
from dpo_teach.worlds.sequences import SequenceWorld


def _tables(seed=0, prompts=3, responses=40):
    g = torch.Generator().manual_seed(seed)
    ref = torch.log_softmax(2 * torch.randn(prompts, responses, generator=g, dtype=torch.float64), -1)
    return ref, torch.randn(prompts, responses, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_the_accepted_sample_follows_the_optimal_policy_exactly(beta):
    ref, rewards = _tables()
    log_accepted, rate = acceptance_distribution(ref, rewards, beta)
    # π*_β by the closed form of chapter 02, computed independently of the acceptance rule
    torch.testing.assert_close(log_accepted, theory.optimal_policy(ref, rewards, beta), rtol=0, atol=1e-12)
    # the acceptance rate is Z_β(x) e^{−M/β}
    want = theory.partition_function(ref, rewards, beta) * torch.exp(-rewards.max(-1).values / beta)
    torch.testing.assert_close(rate, want, rtol=1e-12, atol=0)


def test_any_bound_above_the_maximum_gives_the_same_law_at_a_lower_rate():
    ref, rewards = _tables()
    tight, tight_rate = acceptance_distribution(ref, rewards, 0.5)
    loose, loose_rate = acceptance_distribution(ref, rewards, 0.5, max_reward=rewards.max() + 1.0)
    torch.testing.assert_close(loose, tight, rtol=0, atol=1e-12)
    assert (loose_rate < tight_rate).all()


def test_on_the_sequences_world_the_acceptance_law_is_pi_star():
    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=4)
    demo = world.demonstrator_logps.double()  # a π_ref-like table with full support
    log_accepted, _ = acceptance_distribution(demo, world.reward_table, 0.5)
    torch.testing.assert_close(
        log_accepted, world.optimal_policy(0.5, demo.float()).double(), rtol=0, atol=1e-5
    )


def test_sampled_frequencies_and_candidate_counts_match_the_exact_law():
    ref, rewards = _tables(prompts=2, responses=6)
    beta, n = 0.5, 20_000
    accepted, candidates = rejection_sample(ref, rewards, beta, n, seed=0)
    log_accepted, rate = acceptance_distribution(ref, rewards, beta)
    for p in range(2):
        freq = torch.bincount(accepted[p], minlength=6).double() / n
        # 6 outcomes, 20 000 draws: the total-variation distance is ~0.005 by chance; 0.02 is 4x that
        assert 0.5 * (freq - log_accepted[p].exp()).abs().sum() < 0.02
        # candidates per acceptance is geometric with mean 1/rate; 20 000 of them: relative error ~1%
        assert float(candidates[p]) / n == pytest.approx(1 / float(rate[p]), rel=0.05)


def test_rso_pairs_are_distinct_accepted_samples_in_trl_format():
    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=4)
    demo = world.demonstrator_logps
    rows, stats = rso_preference_pairs(world, demo, world.reward_table, 0.5, 300, seed=1)
    assert len(rows) == 300 and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    assert all(r["chosen"] != r["rejected"] and r["prompt"] in world.prompts for r in rows)
    assert stats["accepted"] >= 2 * 300 and stats["candidates"] > stats["accepted"]
    # deterministic labels: a judge that prefers the higher reward always puts it first
    rows, _ = rso_preference_pairs(
        world, demo, world.reward_table, 0.5, 100, label_rewards=1e6 * world.reward_table
    )
    assert all(
        world.true_reward(r["prompt"], r["chosen"]) > world.true_reward(r["prompt"], r["rejected"])
        for r in rows
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r, q: acceptance_probability(r, 0.0), ValueError, "beta"),
        (lambda r, q: acceptance_probability(r, -1.0), ValueError, "beta"),
        (lambda r, q: acceptance_probability(r, 0.5, max_reward=r.max() - 1), ValueError, "max_reward"),
        (lambda r, q: acceptance_probability([1.0, 2.0], 0.5), TypeError, "rewards"),
        (lambda r, q: acceptance_distribution(q[:, :3], r, 0.5), ValueError, "must match"),
        (lambda r, q: rejection_sample(q, r, 0.5, 0), ValueError, "n_per_prompt"),
        (lambda r, q: rejection_sample(q, r, 0.5, 5, seed=1.5), TypeError, "seed"),
    ],
)
def test_bad_input(call, error, match):
    ref, rewards = _tables()
    with pytest.raises(error, match=match):
        call(rewards, ref)
