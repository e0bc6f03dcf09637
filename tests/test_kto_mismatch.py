"""KTO's mismatched pairs: each prompt is paired with a completion written for a *different* prompt."""

from __future__ import annotations

import pytest
from trl_reference import tiny_tokenizer

from dpo_teach.data import mismatched_index, tokenize_kto, unpair_preference_rows


def test_unpaired_rows_never_pair_a_prompt_with_its_own_pair():
    pairs = [
        {"prompt": "review :", "chosen": " good", "rejected": " bad"},
        {"prompt": "the film was", "chosen": " great", "rejected": " awful"},
        {"prompt": "the film was", "chosen": " fine", "rejected": " dull"},
        {"prompt": "the film is", "chosen": " very good", "rejected": " not good"},
    ]
    rows = unpair_preference_rows(pairs)  # chosen, rejected, chosen, ... : neighbours share a prompt
    data = tokenize_kto(rows, tiny_tokenizer())
    completions = [tuple(e["completion_ids"]) for e in data.examples]
    for i, example in enumerate(data.examples):
        j = completions.index(tuple(example["kl_completion_ids"]))
        assert rows[j]["prompt"] != rows[i]["prompt"], (i, j)
    # by hand: the nearest earlier row (cyclically) with another prompt at an even distance (same role)
    assert mismatched_index([r["prompt"] for r in rows]) == [6, 7, 0, 1, 0, 1, 4, 5]


def test_mismatched_completions_are_half_chosen_half_rejected():
    """Unpaired pairs lay out chosen, rejected, ...: a partner keeps the row's role, so over the data the
    mismatched completions are chosen and rejected responses in equal numbers — the law the pairs were drawn
    from — and never the row's own pair. (The nearest row with another prompt alone would always be a rejected
    one: z_ref measured on losers only.)"""
    import random

    rng = random.Random(0)
    pairs = [{"prompt": f"p{rng.randrange(20)}", "chosen": "a", "rejected": "b"} for _ in range(400)]
    prompts = [r["prompt"] for r in unpair_preference_rows(pairs)]
    partner = mismatched_index(prompts)
    assert all(prompts[j] != prompts[i] for i, j in enumerate(partner))
    assert all((i - j) % 2 == 0 for i, j in enumerate(partner))  # chosen ↔ chosen, rejected ↔ rejected
    rejected_partners = sum(j % 2 for j in partner)
    assert rejected_partners == len(partner) // 2


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [(["a", "b", "c"], [1, 2, 0]), (["a", "a", "a"], [2, 0, 1]), (["a", "a", "b"], [2, 2, 0]), (["a"], [0])],
)
def test_mismatched_index_cases(prompts, expected):
    assert mismatched_index(prompts) == expected
