"""Checkers of the on-policy chapter's exercises, against answers computed here from the definitions."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises.on_policy import check_acceptance_rate, check_rloo_advantages


@pytest.fixture(scope="module")
def tables():
    g = torch.Generator().manual_seed(0)
    ref = torch.log_softmax(torch.randn(3, 10, generator=g, dtype=torch.float64), -1)
    return ref, torch.randn(3, 10, generator=g, dtype=torch.float64)


def _rate(ref, rewards, beta):  # Σ_y π_ref(y) exp((r − M)/β) per prompt, by a loop, averaged
    rates = []
    for x in range(ref.shape[0]):
        m = max(rewards[x].tolist())
        rates.append(
            sum(
                math.exp(lp + (r - m) / beta)
                for lp, r in zip(ref[x].tolist(), rewards[x].tolist(), strict=True)
            )
        )
    return sum(rates) / len(rates)


def test_the_right_rate_passes_and_slips_get_hints(tables):
    ref, rewards = tables
    truth = _rate(ref, rewards, 0.5)
    assert check_acceptance_rate(truth, ref, rewards, 0.5).ok
    assert "inverse" in check_acceptance_rate(1 / truth, ref, rewards, 0.5).message
    no_z = float(torch.exp(-rewards.max(-1).values / 0.5).mean())
    assert "Z_β" in check_acceptance_rate(no_z, ref, rewards, 0.5).message
    assert not check_acceptance_rate(truth * 1.1, ref, rewards, 0.5).ok


def test_rloo_advantages(tables):
    rewards = [1.0, 4.0, -2.0]
    truth = [1.0 - 1.0, 4.0 - (-0.5), -2.0 - 2.5]
    assert check_rloo_advantages(truth, rewards).ok
    assert "includes R_i" in check_rloo_advantages([0.0, 3.0, -3.0], rewards).message
    assert not check_rloo_advantages([0.0, 0.0, 0.0], rewards).ok


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: check_acceptance_rate("0.1", *t, 0.5), TypeError, "answer"),
        (lambda t: check_acceptance_rate(0.1, *t, 0.0), ValueError, "beta"),
        (lambda t: check_rloo_advantages([1.0], [1.0]), ValueError, "rewards"),
        (lambda t: check_rloo_advantages([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError, "answer"),
        (lambda t: check_rloo_advantages("ab", [1.0, 2.0]), TypeError, "answer"),
    ],
)
def test_bad_input(tables, call, error, match):
    with pytest.raises(error, match=match):
        call(tables)
