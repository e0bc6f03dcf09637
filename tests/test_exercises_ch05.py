"""Exercise checkers of chapter 05: right answers pass, the usual mistakes are named, bad types raise.

The right answers here are written independently of the package: log π(y|x) by an explicit loop over rows and
positions, the parameter count by a formula from the GPT-2 architecture."""

from __future__ import annotations

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch05 import check_parameter_count, check_sequence_logps, gpt2_parameter_count


def loop_logps(logits, labels):
    out = torch.zeros(labels.shape[0])
    for b in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[b, t] != -100:
                out[b] += torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
    return out


def test_sequence_logps_right_answer_passes():
    verdict = check_sequence_logps(loop_logps)
    assert isinstance(verdict, Verdict) and verdict.ok


def test_sequence_logps_without_shift_is_named():
    def unshifted(logits, labels):
        lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return (lp * (labels != -100)).sum(-1)

    verdict = check_sequence_logps(unshifted)
    assert not verdict and "shift" in verdict.message


def test_sequence_logps_mean_is_named():
    def mean(logits, labels):
        return loop_logps(logits, labels) / (labels[:, 1:] != -100).sum(-1)

    verdict = check_sequence_logps(mean)
    assert not verdict and "mean" in verdict.message


def test_sequence_logps_raw_logits_are_named():
    def raw(logits, labels):
        return loop_logps(logits, labels) * 0 + sum(
            torch.where(
                labels[:, t] != -100, logits[:, t - 1].gather(-1, labels[:, t].clamp(min=0)[:, None])[:, 0], 0
            )
            for t in range(1, labels.shape[1])
        )

    verdict = check_sequence_logps(raw)
    assert not verdict and "log_softmax" in verdict.message


def test_sequence_logps_probability_is_named():
    verdict = check_sequence_logps(lambda logits, labels: loop_logps(logits, labels).exp())
    assert not verdict and "probability" in verdict.message


def test_sequence_logps_wrong_shape_and_exceptions_are_wrong_answers():
    assert "shape" in check_sequence_logps(lambda logits, labels: logits).message
    verdict = check_sequence_logps(lambda logits, labels: 1 / 0)
    assert not verdict and "ZeroDivisionError" in verdict.message


def test_sequence_logps_needs_a_function():
    with pytest.raises(TypeError, match="fn"):
        check_sequence_logps(torch.zeros(3))


def by_formula(V, T, d, L):
    return (V + T) * d + L * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize(("V", "T", "d", "L"), [(50257, 1024, 768, 12), (14, 8, 64, 2), (100, 16, 32, 3)])
def test_parameter_count_matches_the_formula(V, T, d, L):
    assert gpt2_parameter_count(vocab_size=V, n_positions=T, n_embd=d, n_layer=L) == by_formula(V, T, d, L)
    assert check_parameter_count(by_formula(V, T, d, L), vocab_size=V, n_positions=T, n_embd=d, n_layer=L)


@pytest.mark.parametrize(
    ("offset", "word"),
    [
        (lambda V, T, d, L: V * d, "tied"),
        (lambda V, T, d, L: -T * d, "position"),
        (lambda V, T, d, L: -9 * L * d, "biases"),
        (lambda V, T, d, L: -4 * L * d - 2 * d, "layer norms"),
    ],
)
def test_parameter_count_slips_are_named(offset, word):
    V, T, d, L = 50257, 1024, 768, 12
    verdict = check_parameter_count(by_formula(V, T, d, L) + offset(V, T, d, L), vocab_size=V, n_positions=T,
                                    n_embd=d, n_layer=L)  # fmt: skip
    assert not verdict and word in verdict.message


def test_parameter_count_other_wrong_answer_says_by_how_much():
    verdict = check_parameter_count(
        by_formula(14, 8, 64, 2) + 5, vocab_size=14, n_positions=8, n_embd=64, n_layer=2
    )
    assert not verdict and "+5" in verdict.message


def test_parameter_count_bad_inputs():
    with pytest.raises(TypeError, match="answer"):
        check_parameter_count("124M", vocab_size=14, n_positions=8, n_embd=64, n_layer=2)
    with pytest.raises(ValueError, match="n_layer"):
        check_parameter_count(1, vocab_size=14, n_positions=8, n_embd=64, n_layer=0)
