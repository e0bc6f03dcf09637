"""Iterative (online) DPO: on-policy pairs are distinct, the judge labels them by Bradley–Terry, the label
count, bad input, and the acceptance test — for the same number of labels, iterative DPO (which samples its own
pairs, from π_ref on) beats one-shot DPO on a fixed dataset of pairs from a shifted policy μ, measured exactly on
the sequences world. Iterating never sees μ here, so the test measures where the pairs come from, not whether
iterating repairs a shifted start."""

from __future__ import annotations

import copy

import pytest
import torch

from dpo_teach.models import build_word_tokenizer, tiny_gpt2
from dpo_teach.trainers.online_dpo import label_pairs, sample_on_policy_pairs, train_iterative_dpo

WORDS = ["q", "r", ":", "a", "b"]


@pytest.fixture(scope="module")
def toy():
    tok = build_word_tokenizer(WORDS)
    return tok, torch.tensor(tok.convert_tokens_to_ids(["a", "b"]))


def _count_a(prompts, responses):
    return torch.tensor([float(r.split().count("a")) for r in responses])


def test_on_policy_pairs_are_distinct_and_identical_draws_are_redrawn(toy):
    tok, allowed = toy
    model = tiny_gpt2(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    g = torch.Generator().manual_seed(0)
    # one-word responses over two letters: about half of all draws are identical pairs
    prompts, first, second, redrawn = sample_on_policy_pairs(model, tok, ["q :", "r :"], 200, g, max_new_tokens=1,
                                                             allowed_token_ids=allowed)  # fmt: skip
    assert len(prompts) == len(first) == len(second) == 200
    assert all(a != b for a, b in zip(first, second, strict=True))
    assert 50 < redrawn < 200  # P(identical) ≈ 1/2 per draw: ~100 redrawn at the first pass


def test_bradley_terry_labels_follow_the_judge():
    g = torch.Generator().manual_seed(0)
    n = 4000
    judge = lambda prompts, responses: torch.tensor([1.0 if y == "good" else 0.0 for y in responses])
    rows = label_pairs(judge, ["x"] * n, ["good"] * n, ["bad"] * n, g)
    share = sum(r["chosen"] == "good" for r in rows) / n
    # σ(1) = 0.731; 4000 coin flips have a standard error of 0.007: 0.03 is four of them
    assert share == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.03)
    rows = label_pairs(judge, ["x"] * 50, ["bad"] * 50, ["good"] * 50, g, deterministic=True)
    assert all(r["chosen"] == "good" for r in rows)


def test_rounds_count_labels_and_judge_calls_and_raise_the_judges_score(toy):
    tok, allowed = toy
    ref = tiny_gpt2(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    policy, calls, rounds_seen = copy.deepcopy(ref), [], []

    def judge(prompts, responses):
        calls.append(len(responses))
        return 3.0 * _count_a(prompts, responses)

    history = train_iterative_dpo(policy, tok, ["q :", "r :"], judge, ref_model=ref, rounds=3, pairs_per_round=64,
                                  beta=0.5, max_new_tokens=3, allowed_token_ids=allowed, progress=False, lr=3e-3,
                                  epochs=2, batch_size=32, callback=lambda info, p: rounds_seen.append(info["round"]))  # fmt: skip
    assert rounds_seen == [1, 2, 3] and calls == [128, 128, 128]
    assert [h["labels"] for h in history] == [64, 128, 192]
    assert [h["judge_calls"] for h in history] == [128, 256, 384]
    assert all(len(h["pairs"]) == 64 for h in history)
    share_a = lambda rows: sum(r.split().count("a") for row in rows for r in (row["chosen"], row["rejected"]))
    assert share_a(history[-1]["pairs"]) > share_a(history[0]["pairs"])  # sampling follows the policy


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("rounds", 0, ValueError), ("pairs_per_round", 1.5, TypeError), ("ref_model", None, ValueError)],
)
def test_bad_input(toy, field, value, error):
    tok, allowed = toy
    ref = tiny_gpt2(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    options = {"ref_model": ref, "rounds": 1, "pairs_per_round": 4, "max_new_tokens": 2, "progress": False}
    with pytest.raises(error, match=field):
        train_iterative_dpo(copy.deepcopy(ref), tok, ["q :"], _count_a, **{**options, field: value})


def test_bad_prompts_and_judge(toy):
    tok, _ = toy
    ref = tiny_gpt2(tok, n_layer=1, n_embd=16, n_head=2, seed=0)
    with pytest.raises(TypeError, match="prompts"):
        train_iterative_dpo(copy.deepcopy(ref), tok, "q :", _count_a, ref_model=ref)
    with pytest.raises(TypeError, match="reward must be"):
        train_iterative_dpo(copy.deepcopy(ref), tok, ["q :"], 3.0, ref_model=ref)


@pytest.mark.slow
def test_iterating_beats_one_shot_dpo_on_shifted_pairs_for_the_same_labels():
    from dpo_teach.cache import reference_model
    from dpo_teach.widgets.beta_train import DPO_RECIPE, train_at_beta
    from dpo_teach.worlds.sequences import SequenceWorld

    world, beta, labels = SequenceWorld(), 0.5, 8000
    ref, tok = reference_model(world, device="cpu", progress=False)
    ref_logps, rewards = world.logprobs(ref), world.reward_table
    shifted = torch.log_softmax(
        ref_logps.double() - rewards.double(), -1
    ).float()  # π_ref tilted towards low r
    offline = train_at_beta(world, ref, beta, pairs=world.preference_pairs(shifted, n=labels, seed=0),
                            ref_logps=ref_logps, progress=False)  # fmt: skip
    policy = copy.deepcopy(ref)
    true_reward = lambda ps, ys: torch.tensor([world.true_reward(p, y) for p, y in zip(ps, ys, strict=True)])
    history = train_iterative_dpo(policy, tok, world.prompts, true_reward, ref_model=ref, rounds=4,
                                  pairs_per_round=labels // 4, beta=beta, max_new_tokens=world.length,
                                  allowed_token_ids=world.allowed_token_ids, progress=False,
                                  precompute_ref_logps=True, **DPO_RECIPE)  # fmt: skip
    online = world.evaluate(policy, ref_logps, beta)
    assert history[-1]["labels"] == labels
    # measured (seed 0): one-shot on shifted pairs 0.85 nats from π*_β, iterating 0.54, from 1.71 at π_ref.
    # The margin asked for, 0.15 nats, is half the measured 0.31: a clear win, not a coin flip. The iterative
    # run's first round samples π_ref, not μ: this compares a fixed shifted dataset with self-collected pairs
    # (one-shot DPO on π_ref's own pairs, 0.41 in chapter 10, does better than either)
    assert online["kl_to_optimal"] < offline.kl_to_optimal - 0.15
