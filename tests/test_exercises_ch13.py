"""Exercise checkers of chapter 13: right answers pass, typical slips get a named hint, bad types raise."""

from __future__ import annotations

import math

import pytest
import torch

from dpo_teach.exercises import Verdict
from dpo_teach.exercises.ch13 import bf16_spacing, check_bf16_spacing, check_dpo_memory_gb

# ---- 13.1 the memory of DPO in bf16 mixed precision ----------------------------------------------------------
# per parameter: bf16 weights 2 + bf16 grads 2 + float32 master 4 + Adam m, v 4 + 4, and the bf16 reference 2


def test_memory_right_answer_passes():
    verdict = check_dpo_memory_gb(7 * (2 + 2 + 4 + 8 + 2))
    assert isinstance(verdict, Verdict) and verdict.ok and str(verdict).startswith("✓")
    assert check_dpo_memory_gb(torch.tensor(1.5 * 18), n_params=1.5e9).ok


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (7 * 16, "reference model is missing"),
        (7 * 32, "needs its weights only"),
        (7 * 20, "needs no float32 copy"),
        (7 * 14, "4 bytes per parameter are missing"),
        (7 * 10, "two float32 states"),
        (7 * 4, "weights of the policy and the reference only"),
        (126e9, "in bytes"),
        (126e9 / 2**30, "GiB"),
        (50, "Count bytes per parameter"),
    ],
)
def test_memory_slips_get_hints(answer, hint):
    verdict = check_dpo_memory_gb(answer)
    assert not verdict and hint in verdict.message


@pytest.mark.parametrize(("answer", "kwargs"), [("126", {}), (None, {}), (126, {"n_params": "7B"})])
def test_memory_bad_types(answer, kwargs):
    with pytest.raises(TypeError, match="must be a finite number"):
        check_dpo_memory_gb(answer, **kwargs)


def test_memory_non_finite_answer():
    with pytest.raises(ValueError, match="answer must be a finite number"):
        check_dpo_memory_gb(float("nan"))


def test_memory_bad_n_params():
    with pytest.raises(ValueError, match="n_params=-1.0 must be > 0"):
        check_dpo_memory_gb(1, n_params=-1)


# ---- 13.2 bf16 spacing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-300.0, -92.4, 1.0, 3.0, 0.3, -6.2, 1000.0, 1e-3])
def test_bf16_spacing_is_two_to_the_exponent_minus_seven(value):
    rounded = float(torch.tensor(value, dtype=torch.bfloat16).float())
    assert bf16_spacing(value) == 2.0 ** (math.floor(math.log2(abs(rounded))) - 7)


def test_bf16_spacing_zero():
    with pytest.raises(ValueError, match="non-zero"):
        bf16_spacing(0.0)


def test_spacing_right_answer_passes():
    assert check_bf16_spacing(2.0, value=-300.0).ok
    assert check_bf16_spacing(0.5, value=-92.4).ok


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        (1.0, "half the spacing"),
        (2**-7, "relative spacing"),
        (0.25, "float16"),
        (2**-15, "float32"),
        (4.0, "factor 2"),
        (3.0, "2^(k−7)"),
    ],
)
def test_spacing_slips_get_hints(answer, hint):
    verdict = check_bf16_spacing(answer, value=-300.0)
    assert not verdict and hint in verdict.message


def test_spacing_bad_type():
    with pytest.raises(TypeError, match="answer must be a finite number"):
        check_bf16_spacing("2")
