"""Exercise checkers of chapter 06: right answers pass, the usual slips are named, bad inputs raise.

Right answers are computed here with plain Python (math.log, math.exp) from the world's reward table."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch06 import check_implicit_reward_offset, check_loss_at_optimum
from dpo_teach.worlds import SequenceWorld

WORLD = SequenceWorld(n_prompts=2, length=2, alphabet_size=3, seed=1)
ROWS = WORLD.preference_pairs(None, n=200, seed=0)  # pairs from the demonstrator
REF = WORLD.demonstrator_logps


def loss_by_hand(rows):
    total = 0.0
    for row in rows:
        margin = WORLD.true_reward(row["prompt"], row["chosen"]) - WORLD.true_reward(
            row["prompt"], row["rejected"]
        )
        total += math.log(1 + math.exp(-margin))
    return total / len(rows)


def beta_log_z_by_hand(beta, prompt=0):
    ref, rewards = REF[prompt].tolist(), WORLD.reward_table[prompt].tolist()
    return beta * math.log(sum(math.exp(lp + r / beta) for lp, r in zip(ref, rewards, strict=True)))


def test_loss_at_optimum_right_answer_passes():
    verdict = check_loss_at_optimum(loss_by_hand(ROWS), WORLD, ROWS)
    assert isinstance(verdict, Verdict) and verdict.ok


def test_loss_at_optimum_accepts_a_dataset():
    dataset = WORLD.preference_dataset(None, n=50, seed=2)
    assert check_loss_at_optimum(loss_by_hand(list(dataset)), WORLD, dataset)


@pytest.mark.parametrize(
    ("answer", "word"),
    [
        (lambda: math.log(2), "start"),
        (lambda: -loss_by_hand(ROWS), "sign"),
        (lambda: sum(1 / (1 + math.exp(-(WORLD.true_reward(r["prompt"], r["chosen"]) -
                     WORLD.true_reward(r["prompt"], r["rejected"])))) for r in ROWS) / len(ROWS), "log"),
        (lambda: sum(WORLD.true_reward(r["prompt"], r["chosen"]) > WORLD.true_reward(r["prompt"], r["rejected"])
                     for r in ROWS) / len(ROWS), "accuracy"),
        (lambda: 5.0, "not it"),
    ],
)  # fmt: skip
def test_loss_at_optimum_slips_are_named(answer, word):
    verdict = check_loss_at_optimum(answer(), WORLD, ROWS)
    assert not verdict and word in verdict.message


def test_loss_at_optimum_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_loss_at_optimum("0.5", WORLD, ROWS)
    with pytest.raises(ValueError, match="rows"):
        check_loss_at_optimum(0.5, WORLD, [{"prompt": "p0 :", "completion": " a b"}])
    with pytest.raises(TypeError, match="world"):
        check_loss_at_optimum(0.5, object(), ROWS)


@pytest.mark.parametrize("beta", [0.25, 0.5, 2.0])
def test_offset_right_answer_passes(beta):
    assert check_implicit_reward_offset(beta_log_z_by_hand(beta), REF, WORLD.reward_table, beta)
    assert check_implicit_reward_offset(beta_log_z_by_hand(beta, 1), REF, WORLD.reward_table, beta, prompt=1)


@pytest.mark.parametrize(
    ("transform", "word"),
    [
        (lambda v, beta: v / beta, "factor β"),
        (lambda v, beta: -v, "sign"),
        (lambda v, beta: math.exp(v / beta), "Z(x) itself"),
        (lambda v, beta: v + 1.0, "not it"),
    ],
)
def test_offset_slips_are_named(transform, word):
    beta = 0.5
    verdict = check_implicit_reward_offset(
        transform(beta_log_z_by_hand(beta), beta), REF, WORLD.reward_table, beta
    )
    assert not verdict and word in verdict.message


def test_offset_without_the_reference_weights_is_named():
    beta = 0.5
    unweighted = beta * math.log(sum(math.exp(r / beta) for r in WORLD.reward_table[0].tolist()))
    verdict = check_implicit_reward_offset(unweighted, REF, WORLD.reward_table, beta)
    assert not verdict and "π_ref" in verdict.message


def test_offset_bad_inputs():
    with pytest.raises(ValueError, match="prompt"):
        check_implicit_reward_offset(0.1, REF, WORLD.reward_table, 0.5, prompt=5)
    with pytest.raises(ValueError, match="rewards"):
        check_implicit_reward_offset(0.1, REF, torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="beta"):
        check_implicit_reward_offset(0.1, REF, WORLD.reward_table, -1.0)
