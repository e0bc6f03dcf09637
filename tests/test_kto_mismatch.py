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
    # by hand: the nearest earlier row (cyclically) with another prompt
    assert mismatched_index([r["prompt"] for r in rows]) == [7, 7, 1, 1, 1, 1, 5, 5]


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [(["a", "b", "c"], [2, 0, 1]), (["a", "a", "a"], [2, 0, 1]), (["a", "a", "b"], [2, 2, 1]), (["a"], [0])],
)
def test_mismatched_index_cases(prompts, expected):
    assert mismatched_index(prompts) == expected
