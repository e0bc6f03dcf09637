"""Best-of-N's exact policy against brute-force enumeration and Monte Carlo, and its KL bound."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dpo_teach.baselines import best_of_n_kl_bound, best_of_n_policy, best_of_n_sample


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    p = logp.double().exp()
    return (p * (logp.double() - logq.double())).nan_to_num(0.0).sum(-1)


def _brute_force(p: list[float], r: list[float], n: int) -> list[float]:
    """Enumerate all K^n ordered draws; the winner is uniform among the draws that attain the max reward."""
    out = [0.0] * len(p)
    for draws in itertools.product(range(len(p)), repeat=n):
        prob = math.prod(p[i] for i in draws)
        best = max(r[i] for i in draws)
        winners = [i for i in draws if r[i] == best]
        for i in winners:
            out[i] += prob / len(winners)
    return out


def test_matches_brute_force_enumeration_with_ties():
    p = [0.05, 0.3, 0.1, 0.25, 0.2, 0.1]
    r = [1.0, 0.0, 2.0, 1.0, 2.0, -1.0]  # two tie groups
    ref_logps = torch.tensor(p).log()
    for n in (1, 2, 3, 4):
        exact = best_of_n_policy(ref_logps, torch.tensor(r), n).exp()
        torch.testing.assert_close(exact.double(), torch.tensor(_brute_force(p, r, n), dtype=torch.float64))


def test_matches_monte_carlo_sampling():
    g = torch.Generator().manual_seed(0)
    K, n, trials = 7, 5, 200_000
    ref_logps = torch.randn(K, generator=g).log_softmax(-1)
    rewards = torch.tensor([0.0, 1.0, 1.0, 3.0, 2.0, 0.5, 3.0])
    draws = torch.multinomial(ref_logps.exp().expand(trials, K), n, replacement=True, generator=g)
    # uniform tie-break: a random key decides among draws with the same reward
    key = rewards[draws] * 10 + torch.rand(trials, n, generator=g)
    winner = draws.gather(1, key.argmax(1, keepdim=True)).squeeze(1)
    freq = torch.bincount(winner, minlength=K).double() / trials
    exact = best_of_n_policy(ref_logps, rewards, n).exp().double()
    stderr = (exact * (1 - exact) / trials).sqrt()
    assert ((freq - exact).abs() <= 5 * stderr + 1e-4).all(), (freq, exact)


def test_batched_prompts_and_n1_is_reference():
    g = torch.Generator().manual_seed(1)
    ref_logps = torch.randn(3, 50, generator=g).log_softmax(-1)
    rewards = torch.randn(3, 50, generator=g)
    torch.testing.assert_close(best_of_n_policy(ref_logps, rewards, 1), ref_logps)
    batched = best_of_n_policy(ref_logps, rewards, 8)
    for i in range(3):
        torch.testing.assert_close(batched[i], best_of_n_policy(ref_logps[i], rewards[i], 8))
    assert (batched.exp().mul(rewards).sum(-1) > ref_logps.exp().mul(rewards).sum(-1)).all()


def test_kl_bound_holds_and_is_tight_for_many_distinct_rewards():
    g = torch.Generator().manual_seed(2)
    ref_logps = (2 * torch.randn(4, 300, generator=g)).log_softmax(-1)
    rewards = torch.randn(4, 300, generator=g)
    for n in (2, 4, 16, 64):
        kl = _kl(best_of_n_policy(ref_logps, rewards, n), ref_logps)
        assert (kl <= best_of_n_kl_bound(n) + 1e-6).all()
    # uniform π_ref over many responses with distinct rewards: the bound is attained in the limit
    K = 20_000
    uniform = torch.full((K,), -math.log(K))
    for n in (2, 4, 16):
        kl = _kl(best_of_n_policy(uniform, torch.randperm(K, generator=g).float(), n), uniform)
        assert abs(kl.item() - best_of_n_kl_bound(n)) < 2e-3


def test_bad_n():
    with pytest.raises(ValueError, match="n must be a positive int"):
        best_of_n_policy(torch.zeros(1), torch.zeros(1), 0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        best_of_n_kl_bound(2.0)


def test_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        best_of_n_policy(torch.full((4,), -math.log(4)), torch.zeros(5), 2)


def test_not_tensors():
    with pytest.raises(TypeError, match="torch tensors"):
        best_of_n_policy([0.0], [0.0], 2)


def test_unnormalised_reference():
    with pytest.raises(ValueError, match="normalised"):
        best_of_n_policy(torch.zeros(4), torch.arange(4.0), 2)


@pytest.mark.slow
def test_sampling_best_of_n_from_a_model_follows_the_exact_policy():
    from dpo_teach.models import tiny_gpt2
    from dpo_teach.worlds.sequences import SequenceWorld

    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=5, seed=0)
    model = tiny_gpt2(
        world.tokenizer, **world.model_config, seed=1
    )  # random: a non-uniform π over 25 responses
    n, draws = 3, 1500

    def true_reward(prompts, responses):
        return torch.tensor([world.true_reward(p, y) for p, y in zip(prompts, responses, strict=True)])

    texts, scores = best_of_n_sample(
        model,
        world.tokenizer,
        world.prompts * draws,
        true_reward,
        n,
        max_new_tokens=world.length,
        allowed_token_ids=world.allowed_token_ids,
    )
    exact = best_of_n_policy(world.logprobs(model), world.reward_table, n).exp().double()
    for p in range(len(world.prompts)):
        picked = [world.responses.index(" " + y) for y in texts[p :: len(world.prompts)]]
        freq = torch.bincount(torch.tensor(picked), minlength=len(world.responses)).double() / draws
        stderr = (exact[p] * (1 - exact[p]) / draws).sqrt()
        assert ((freq - exact[p]).abs() <= 5 * stderr + 2e-3).all(), (freq, exact[p])
    torch.testing.assert_close(scores, true_reward(world.prompts * draws, texts))
    # the mean score is the exact E_BoN[r], and it tells n from n − 1 and n + 1
    mean_reward = lambda k: (
        (best_of_n_policy(world.logprobs(model), world.reward_table, k).exp() * world.reward_table)
        .sum(-1)
        .mean()
    )
    assert abs(scores.mean() - mean_reward(n)) < min(
        abs(scores.mean() - mean_reward(k)) for k in (n - 1, n + 1)
    )


def test_best_of_n_sample_bad_n():
    with pytest.raises(ValueError, match="n must be a positive int"):
        best_of_n_sample(None, None, ["p0 :"], lambda p, y: torch.zeros(len(y)), 0, max_new_tokens=2)


def test_best_of_n_sample_bad_prompts():
    with pytest.raises(TypeError, match="prompts"):
        best_of_n_sample(None, None, "p0 :", lambda p, y: torch.zeros(len(y)), 2, max_new_tokens=2)
