"""Conversational rows (lists of {"role", "content"} messages) through the chat template, checked token for token
against TRL 1.16's own tokenisation on the same rows, for a Qwen2-style and a Llama-3-style tokenizer built and
saved locally (no download)."""

import types

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl.data_utils import _tokenize, apply_chat_template, common_prefix_length, extract_prompt
from trl.trainer.dpo_trainer import DPOTrainer as TRLDPOTrainer

from dpo_teach import data as D
from dpo_teach import hub
from dpo_teach.trainers.dpo import DPOTrainer
from dpo_teach.trainers.reward import RewardModel, train_reward_model
from dpo_teach.trainers.sft import train_sft

QWEN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
SYSTEM = {"role": "system", "content": "You review films."}
ROWS = [
    {
        "prompt": [SYSTEM, {"role": "user", "content": "Was the plot good?"}],
        "chosen": [{"role": "assistant", "content": "Yes, the plot was gripping."}],
        "rejected": [{"role": "assistant", "content": "No, the plot was dull."}],
    },
    {
        "prompt": [
            {"role": "user", "content": "Name a film."},
            {"role": "assistant", "content": "Alien."},
            {"role": "user", "content": "And its score?"},
        ],
        "chosen": [{"role": "assistant", "content": "The score is eerie and sparse."}],
        "rejected": [{"role": "assistant", "content": "Yes"}],
    },
]
CORPUS = [m["content"] for r in ROWS for k in ("prompt", "chosen", "rejected") for m in r[k]] * 3


def _tokenizer(tmp_path, style: str):
    """A byte-level BPE trained on CORPUS with the style's special tokens and chat template, saved and reloaded."""
    if style == "qwen2":
        special, eos, bos, template = (
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            "<|im_end|>",
            None,
            QWEN_TEMPLATE,
        )
    else:
        special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        eos, bos, template = "<|eot_id|>", "<|begin_of_text|>", LLAMA_TEMPLATE
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    backend.train_from_iterator(CORPUS, trainer)
    if bos is not None:  # Llama 3 adds BOS to plain text; its template writes BOS itself
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, bos_token=bos, pad_token=special[0]
    )
    tok.chat_template = template
    tok.save_pretrained(tmp_path / style)
    return AutoTokenizer.from_pretrained(tmp_path / style)


@pytest.fixture(params=["qwen2", "llama3"])
def tok(request, tmp_path):
    return _tokenizer(tmp_path, request.param)


def _trl_dpo(rows, tok):
    """TRL's DPOTrainer._prepare_dataset itself, on a stand-in ``self`` (it reads only ``_tokenizer`` there)."""
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_end")
    stand_in = types.SimpleNamespace(_tokenizer=tok)
    out = TRLDPOTrainer._prepare_dataset(stand_in, Dataset.from_list(rows), tok, args, "train")
    return [{k: out[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(out))]


def _trl_prompt_completion(row, tok):
    """TRL's SFTTrainer tokenisation of a conversational prompt-completion row (its own helpers, same calls)."""
    prompt_ids = _tokenize(tok, row["prompt"], add_generation_prompt=True)["input_ids"]
    full_ids = _tokenize(tok, row["prompt"] + row["completion"])["input_ids"]
    n = common_prefix_length(prompt_ids, full_ids)
    return {"prompt_ids": prompt_ids[:n], "completion_ids": full_ids[n:]}


@pytest.mark.parametrize("as_dataset", [False, True], ids=["list", "Dataset"])
def test_preference_tokens_equal_trl_dpo(tok, as_dataset):
    source = Dataset.from_list(ROWS) if as_dataset else ROWS
    ours = D.tokenize_preference(D.load_preference_rows(source), tok).examples
    assert ours == _trl_dpo(ROWS, tok)


def test_implicit_prompt_tokens_equal_trl_dpo(tok):
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in ROWS]
    ours = D.tokenize_preference(D.load_preference_rows(Dataset.from_list(implicit)), tok).examples
    assert ours == _trl_dpo(implicit, tok) == _trl_dpo(ROWS, tok)


def test_boundary_is_the_assistant_header_and_sequence_is_the_whole_template(tok):
    (example, _) = D.tokenize_preference(D.load_preference_rows(ROWS), tok).examples
    for side in ("chosen", "rejected"):
        whole = tok.apply_chat_template(ROWS[0]["prompt"] + ROWS[0][side], tokenize=True, return_dict=True)
        assert example["prompt_ids"] + example[f"{side}_ids"] == list(whole["input_ids"])
        ids = example[f"{side}_ids"]
        assert ids.count(tok.eos_token_id) == 1  # the template's end of turn, no EOS appended on top
        assert not tok.decode(ids[ids.index(tok.eos_token_id) + 1 :]).strip()  # at most Qwen's trailing "\n"
    prompt_text = tok.decode(example["prompt_ids"])
    assert prompt_text.endswith("assistant\n") or prompt_text.endswith("assistant<|end_header_id|>\n\n")
    assert prompt_text.count(tok.bos_token or "<no bos>") <= 1  # the template's BOS, not doubled


def test_labels_mask_exactly_the_prompt(tok):
    data = D.tokenize_preference(D.load_preference_rows(ROWS), tok)
    batch = D.PreferenceCollator(tok)(data.examples)
    for i, example in enumerate(data.examples):
        n, m = len(example["prompt_ids"]), len(example["chosen_ids"])
        labels = batch["chosen_labels"][i]
        assert (labels[:n] == -100).all()
        assert labels[n : n + m].tolist() == example["chosen_ids"]


@pytest.mark.parametrize("as_dataset", [False, True], ids=["list", "Dataset"])
def test_sft_and_kto_tokens_equal_trl(tok, as_dataset):
    sft = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in ROWS]
    kto = [{**row, "label": i == 0} for i, row in enumerate(sft)]
    src = (lambda rows: Dataset.from_list(rows)) if as_dataset else (lambda rows: rows)
    expected = [_trl_prompt_completion(r, tok) for r in sft]
    assert D.tokenize_sft(D.load_sft_rows(src(sft)), tok).examples == expected
    got = D.tokenize_kto(D.load_kto_rows(src(kto)), tok).examples
    assert [{k: e[k] for k in ("prompt_ids", "completion_ids")} for e in got] == expected
    assert [e["label"] for e in got] == [True, False]


def test_standard_rows_unchanged_by_a_chat_template(tok):
    rows = [{"prompt": "Was the plot good?", "chosen": " Yes", "rejected": " No"}]
    (example,) = D.tokenize_preference(D.load_preference_rows(rows), tok).examples
    assert example["prompt_ids"] == list(tok("Was the plot good?")["input_ids"])
    assert example["chosen_ids"] == [*tok(" Yes", add_special_tokens=False)["input_ids"], tok.eos_token_id]


def test_hub_preference_rows_render_like_trl(tok):
    assert hub.preference_rows(ROWS, tokenizer=tok) == [apply_chat_template(r, tok) for r in ROWS]
    implicit = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in ROWS]
    expected = [apply_chat_template(extract_prompt(r), tok) for r in implicit]
    assert hub.preference_rows(Dataset.from_list(implicit), tokenizer=tok) == expected
    assert expected[0]["prompt"].startswith("<|im_start|>system") or expected[0]["prompt"].startswith(
        "<|begin_of_text|>"
    )


def test_hub_without_tokenizer_keeps_raw_dialogue():
    (row,) = hub.preference_rows(ROWS[:1])
    assert row["prompt"].endswith(hub.ASSISTANT) and row["chosen"] == " Yes, the plot was gripping."


def _tiny_qwen2(tok):
    config = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def test_trainers_take_conversational_rows(tmp_path):
    tok = _tokenizer(tmp_path, "qwen2")
    rows = Dataset.from_list(ROWS)
    trainer = DPOTrainer(_tiny_qwen2(tok), tok, rows, batch_size=2, progress=False)
    assert trainer.train_data.examples == _trl_dpo(ROWS, tok)
    assert torch.isfinite(torch.tensor(trainer.train()[-1]["loss"]))
    sft = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in ROWS]
    assert torch.isfinite(torch.tensor(train_sft(_tiny_qwen2(tok), tok, sft, progress=False)[-1]["loss"]))
    reward = RewardModel(_tiny_qwen2(tok))
    assert torch.isfinite(
        torch.tensor(train_reward_model(reward, tok, rows, batch_size=2, progress=False)[-1]["loss"])
    )


BAD = [
    ("message without content", {**ROWS[0], "chosen": [{"role": "assistant"}]}, TypeError,
     r"field 'chosen', message 0 must have a str 'content'"),
    ("mixed formats", {**ROWS[0], "rejected": " No"}, TypeError,
     r"field 'rejected' must be a non-empty list .* same format"),
    ("empty message list", {**ROWS[0], "chosen": []}, TypeError, r"field 'chosen' must be a non-empty list"),
    ("implicit prompt, nothing shared", {"chosen": ROWS[0]["chosen"], "rejected": ROWS[0]["rejected"]},
     ValueError, r"row 0: chosen and rejected share no leading messages .* add a 'prompt' field"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "error", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_conversational_rows(row, error, match):
    with pytest.raises(error, match=match):
        D.load_preference_rows([row])


def test_no_chat_template_names_the_fix(tmp_path):
    tok = _tokenizer(tmp_path, "qwen2")
    tok.chat_template = None
    with pytest.raises(ValueError, match=r"no chat_template; set tokenizer\.chat_template"):
        D.tokenize_sft(D.load_sft_rows([{"prompt": ROWS[0]["prompt"], "completion": ROWS[0]["chosen"]}]), tok)
    with pytest.raises(ValueError, match=r"no chat_template"):
        hub.preference_rows(ROWS, tokenizer=tok)
