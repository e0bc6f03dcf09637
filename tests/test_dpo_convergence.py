"""The key acceptance test: DPO from the cached π_ref converges to the exact optimum π*_β of a sequences world.

Pairs are sampled from π_ref and labelled by Bradley–Terry with the true reward (the DPO paper's assumptions),
β = 0.5. Evaluation is exact: every response of every prompt is enumerated (no sampling noise).

Why this world is small (4 prompts, 2-word responses from 4 letters: 16 responses per prompt): with
Bradley–Terry labels the *data* limit how close any learner can get to π*. A maximum-likelihood fit of a reward
with exactly the true reward's structure needs about 16,000 pairs to reach KL(π̂‖π*) ≈ 0.03 on the 64-response
world and about 200,000 on the default 8 × 512-response world (measured; see the trainers' report), far beyond a
test's budget. Here 16,000 pairs, 4 epochs (252 steps) reach KL ≈ 0.02 nats and correlation ≈ 0.97.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dpo_teach.cache import reference_model
from dpo_teach.trainers import train_dpo
from dpo_teach.worlds.sequences import SequenceWorld

BETA = 0.5


@pytest.mark.slow
def test_dpo_reaches_the_exact_optimum_of_the_sequences_world():
    world = SequenceWorld(n_prompts=4, length=2, alphabet_size=4, seed=0)
    reference, tokenizer = reference_model(world, device="cpu", progress=False)
    ref_logps = world.logprobs(reference)
    start = world.evaluate(reference, ref_logps, BETA)
    pairs = world.preference_pairs(reference, n=16000, seed=0)
    policy = copy.deepcopy(reference)
    history = train_dpo(
        policy, tokenizer, pairs, beta=BETA, lr=3e-3, batch_size=256, epochs=4, warmup_steps=10,
        lr_scheduler_type="linear", precompute_ref_logps=True, allowed_token_ids=world.allowed_token_ids,
        seed=0, device="cpu", progress=False,
    )  # fmt: skip
    assert len(history) == 252  # the bounded number of steps
    end = world.evaluate(policy, ref_logps, BETA)
    assert start["kl_to_optimal"] > 1.0  # π_ref is far from π*: there is something to learn
    assert end["kl_to_optimal"] <= 0.05, end
    assert end["implicit_reward_corr"] >= 0.95, end
    # and the policy moved to π*'s reward at π*'s distance from π_ref
    optimum = world.evaluate(world.optimal_policy(BETA, ref_logps), ref_logps, BETA)
    assert end["expected_reward"] == pytest.approx(optimum["expected_reward"], abs=0.05)
    assert end["kl_to_ref"] == pytest.approx(optimum["kl_to_ref"], abs=0.1)
    assert torch.isfinite(torch.tensor([h["loss"] for h in history])).all()
