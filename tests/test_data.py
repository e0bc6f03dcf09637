"""dpo_teach.data: loading, validation (one test per rule), tokenisation, truncation, collation."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from trainer_fixtures import word_tokenizer

from dpo_teach.data import (
    KTOCollator,
    PreferenceCollator,
    SFTCollator,
    load_kto_rows,
    load_preference_rows,
    load_sft_rows,
    tokenize_kto,
    tokenize_preference,
    tokenize_sft,
)

ROWS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a b :", "chosen": " great", "rejected": " awful film a"},
]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


# ---------------------------------------------------------------- loading from the three kinds of source


def test_list_json_jsonl_and_dataset_load_the_same_rows(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    extra = [{**r, "score": 1.0} for r in ROWS]  # extra columns are dropped
    sources = [ROWS, tmp_path / "rows.json", str(tmp_path / "rows.jsonl"), datasets.Dataset.from_list(extra)]
    for source in sources:
        assert load_preference_rows(source) == ROWS


def test_kto_and_sft_rows_load():
    kto = [
        {"prompt": "q :", "completion": " good", "label": True},
        {"prompt": "q :", "completion": " bad", "label": False},
    ]
    assert load_kto_rows(datasets.Dataset.from_list(kto)) == kto
    assert load_sft_rows([{"prompt": "q :", "completion": " good"}]) == [
        {"prompt": "q :", "completion": " good"}
    ]


# ---------------------------------------------------------------- validation: one test per rule


def test_empty_dataset_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        load_preference_rows([])


def test_unknown_source_type_is_rejected():
    with pytest.raises(TypeError, match="list of dicts"):
        load_preference_rows(42)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no file"):
        load_preference_rows(tmp_path / "nope.jsonl")


def test_json_file_not_holding_a_list_is_rejected(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps({"prompt": "q"}))
    with pytest.raises(TypeError, match="JSON list"):
        load_preference_rows(tmp_path / "rows.json")


def test_row_that_is_not_a_dict_is_rejected():
    with pytest.raises(TypeError, match="row 1 must be a dict"):
        load_preference_rows([ROWS[0], ("q", "a", "b")])


def test_missing_field_names_row_and_field():
    with pytest.raises(ValueError, match="row 1 is missing field 'rejected'"):
        load_preference_rows([ROWS[0], {"prompt": "q", "chosen": " a"}])


def test_non_string_field_names_row_and_field():
    with pytest.raises(TypeError, match="row 0, field 'chosen' must be a str"):
        load_preference_rows([{"prompt": "q", "chosen": 3, "rejected": " a"}])


def test_empty_response_names_row_and_field():
    with pytest.raises(ValueError, match="row 1, field 'rejected' is empty"):
        load_preference_rows([ROWS[0], {"prompt": "q", "chosen": " a", "rejected": "  "}])


def test_kto_label_must_be_bool():
    with pytest.raises(TypeError, match="row 0, field 'label' must be a bool"):
        load_kto_rows([{"prompt": "q", "completion": " a", "label": 1}])


def test_chosen_identical_to_rejected_warns_with_count():
    rows = [
        ROWS[0],
        {"prompt": "q", "chosen": " a", "rejected": " a"},
        {"prompt": "q", "chosen": " b", "rejected": " b"},
    ]
    with pytest.warns(UserWarning, match="2 of 3 preference rows have chosen identical to rejected"):
        load_preference_rows(rows)


def test_unknown_kind_is_rejected():
    from dpo_teach.data import load_rows

    with pytest.raises(ValueError, match="kind="):
        load_rows(ROWS, "ppo")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_length": 1}, "max_length"),
        ({"max_length": 8, "max_prompt_length": 8}, "max_prompt_length"),
        ({"max_prompt_length": 0}, "max_prompt_length"),
        ({"truncation_mode": "middle"}, "truncation_mode"),
    ],
)
def test_bad_truncation_settings_are_rejected(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tokenize_preference(ROWS, tok, **kwargs)


def test_tokenizer_without_eos_is_rejected(tok):
    import copy

    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="eos_token"):
        tokenize_sft([{"prompt": "q :", "completion": " a"}], no_eos)


# ---------------------------------------------------------------- tokenisation


def test_prompt_ids_shared_bos_once_and_eos_once(tok):
    ex = tokenize_preference(ROWS, tok)[1]
    assert ex["prompt_ids"] == tok("q a b :")["input_ids"]  # tokenised once, with the tokenizer's BOS
    assert ex["prompt_ids"][0] == tok.bos_token_id and ex["prompt_ids"].count(tok.bos_token_id) == 1
    assert ex["chosen_ids"] == tok.convert_tokens_to_ids(["great"]) + [tok.eos_token_id]
    assert ex["rejected_ids"] == tok.convert_tokens_to_ids(["awful", "film", "a"]) + [tok.eos_token_id]
    # a completion that already ends in EOS does not get a second one
    again = tokenize_sft([{"prompt": "q :", "completion": " good <eos>"}], tok)[0]
    assert again["completion_ids"] == tok.convert_tokens_to_ids(["good"]) + [tok.eos_token_id]


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False)
    bpe.train_from_iterator(["Answer: Yes", "Answer: No", "Yes No Answer"] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


def test_separate_tokenisation_keeps_the_boundary_where_joint_bpe_shifts_it():
    bpe = _bpe_tokenizer()
    prompt, chosen, rejected = "Answer: ", "Yes", "No"
    joint_c, joint_r, alone = (bpe(t)["input_ids"] for t in (prompt + chosen, prompt + rejected, prompt))
    assert joint_c[: len(alone)] != alone  # BPE merged " Yes" across the boundary: the joint split is wrong
    ex = tokenize_preference([{"prompt": prompt, "chosen": chosen, "rejected": rejected}], bpe)[0]
    assert ex["prompt_ids"] == alone
    batch = PreferenceCollator(bpe)([ex])
    kept = batch["chosen_labels"][0][batch["chosen_labels"][0] != -100].tolist()
    assert bpe.decode(kept) == "Yes<eos>"  # the labels cover exactly the completion and EOS
    assert bpe.decode(ex["prompt_ids"] + ex["rejected_ids"]) == prompt + rejected + "<eos>"


# ---------------------------------------------------------------- truncation


def test_truncation_keep_end_keeps_bos_and_prompt_end_and_counts(tok):
    rows = [{"prompt": "q a b c d :", "chosen": " good film was great", "rejected": " bad"}, ROWS[0]]
    out = tokenize_preference(rows, tok, max_length=6, max_prompt_length=3, truncation_mode="keep_end")
    ex = out[0]
    assert ex["prompt_ids"] == [tok.bos_token_id, *tok.convert_tokens_to_ids(["d", ":"])]
    assert ex["chosen_ids"] == tok.convert_tokens_to_ids(["good", "film", "was"])  # cut to 6 - 3, EOS lost
    assert ex["rejected_ids"] == tok.convert_tokens_to_ids(["bad"]) + [tok.eos_token_id]
    assert (out.prompts_truncated, out.completions_truncated) == (1, 1)
    assert out[1] == tokenize_preference([ROWS[0]], tok)[0]  # short rows untouched


def test_truncation_keep_start_keeps_prompt_start(tok):
    rows = [{"prompt": "q a b c d :", "chosen": " good", "rejected": " bad"}]
    out = tokenize_preference(rows, tok, max_length=6, max_prompt_length=4, truncation_mode="keep_start")
    assert out[0]["prompt_ids"] == tok("q a b c d :")["input_ids"][:4]
    assert (out.prompts_truncated, out.completions_truncated) == (1, 0)


# ---------------------------------------------------------------- collators


def _expected(prompt, completion, width, pad):
    seq = prompt + completion
    assert width >= len(seq)
    ids = seq + [pad] * (width - len(seq))
    labels = [-100] * len(prompt) + completion + [-100] * (width - len(seq))
    return ids, [1] * len(seq) + [0] * (width - len(seq)), labels


def test_preference_collator_right_pads_and_masks_prompt_and_padding(tok):
    data = tokenize_preference(ROWS, tok)
    batch = PreferenceCollator(tok)(data.examples)
    for side in ("chosen", "rejected"):
        width = max(len(e["prompt_ids"]) + len(e[f"{side}_ids"]) for e in data.examples)
        for b, e in enumerate(data.examples):
            ids, mask, labels = _expected(e["prompt_ids"], e[f"{side}_ids"], width, tok.pad_token_id)
            assert batch[f"{side}_input_ids"][b].tolist() == ids
            assert batch[f"{side}_attention_mask"][b].tolist() == mask
            assert batch[f"{side}_labels"][b].tolist() == labels


def test_sft_collator_and_allowed_tokens_mask_eos(tok):
    data = tokenize_sft(
        [{"prompt": "q :", "completion": " a b"}, {"prompt": "q a :", "completion": " c"}], tok
    )
    batch = SFTCollator(tok)(data.examples)
    width = len(data[0]["prompt_ids"]) + len(data[0]["completion_ids"])
    ids, mask, labels = _expected(data[1]["prompt_ids"], data[1]["completion_ids"], width, tok.pad_token_id)
    assert batch["input_ids"][1].tolist() == ids and batch["labels"][1].tolist() == labels
    alphabet = tok.convert_tokens_to_ids(["a", "b", "c"])
    restricted = SFTCollator(tok, allowed_token_ids=alphabet)(data.examples)
    assert restricted["labels"][0].tolist() == [-100, -100, -100, *alphabet[:2], -100]  # EOS not a choice


def test_kto_pairs_each_prompt_with_the_next_completion(tok):
    rows = [
        {"prompt": "q :", "completion": " good", "label": True},
        {"prompt": "q a :", "completion": " bad film", "label": False},
    ]
    data = tokenize_kto(rows, tok)
    batch = KTOCollator(tok)(data.examples)
    assert batch["label"].tolist() == [True, False]
    p, c = [e["prompt_ids"] for e in data.examples], [e["completion_ids"] for e in data.examples]
    assert [e["kl_completion_ids"] for e in data.examples] == [c[1], c[0]]
    ids, _, labels = _expected(p[0], c[1], len(p[1]) + len(c[0]), tok.pad_token_id)  # the longer kl row
    assert batch["kl_input_ids"][0].tolist() == ids and batch["kl_labels"][0].tolist() == labels
    ids, _, labels = _expected(p[0], c[0], len(p[1]) + len(c[1]), tok.pad_token_id)
    assert (
        batch["completion_input_ids"][0].tolist() == ids and batch["completion_labels"][0].tolist() == labels
    )
    assert batch["completion_input_ids"].dtype == torch.long
