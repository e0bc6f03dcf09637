"""dpo_teach.hub: Hub dataset shapes → standard rows, the local BPE tokenizer and tiny models, the network guard."""

from __future__ import annotations

import socket

import pytest
import torch
from datasets import Dataset, load_dataset
from transformers import AutoTokenizer

from dpo_teach import hub
from dpo_teach.models import load_causal_lm
from dpo_teach.worlds import ReviewsWorld

H, A = "\n\nHuman:", "\n\nAssistant:"
PROMPT = f"{H} Hi there.{A} Hello! How can I help?{H} Name a fruit.{A}"
# the two answers begin with the same words: the longest common prefix reaches into them
CHOSEN, REJECTED = " An apple is a fruit.", " An onion, I think."
STANDARD = {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}


def test_split_keeps_shared_answer_words_in_the_answers():
    row = hub.split_dialogue_pair(PROMPT + CHOSEN, PROMPT + REJECTED)
    assert row == STANDARD
    assert row["prompt"].endswith(A) and row["prompt"].count(A) == 2


def test_split_answers_differing_at_the_first_character():
    row = hub.split_dialogue_pair(PROMPT + " Yes.", PROMPT + " No.")
    assert row == {"prompt": PROMPT, "chosen": " Yes.", "rejected": " No."}


def test_split_dialogues_that_differ_before_any_assistant_marker():
    with pytest.raises(ValueError, match="share no"):
        hub.split_dialogue_pair(f"{H} Hi.{A} Yes.", f"{H} Hello.{A} No.")


def test_split_empty_answer():
    with pytest.raises(ValueError, match="rejected dialogue has an empty last answer"):
        hub.split_dialogue_pair(PROMPT + CHOSEN, PROMPT + " ")


def test_split_non_string():
    with pytest.raises(TypeError, match="chosen and rejected must be str"):
        hub.split_dialogue_pair(PROMPT + CHOSEN, None)


def test_render_messages():
    messages = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": " Hello! "}]
    assert hub.render_messages(messages) == f"{H} Hi there.{A} Hello!"


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ("Hi", TypeError, "list of"),
        ([{"role": "user"}], ValueError, "message 0 must be a dict with 'role' and 'content'"),
        ([{"role": "robot", "content": "x"}], ValueError, "role 'robot'"),
    ],
)
def test_render_messages_bad_input(messages, error, match):
    with pytest.raises(error, match=match):
        hub.render_messages(messages)


def _conversation(answer):
    return [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": answer.strip()},
    ]


def test_the_three_hub_shapes_give_the_same_rows():
    raw = {"chosen": PROMPT + CHOSEN, "rejected": PROMPT + REJECTED}
    implicit = {"chosen": _conversation(CHOSEN), "rejected": _conversation(REJECTED)}
    explicit = {
        "prompt": _conversation(CHOSEN)[:3],
        "chosen": _conversation(CHOSEN)[3:],
        "rejected": _conversation(REJECTED)[3:],
    }
    for shape in (STANDARD, raw, implicit, explicit):
        assert hub.preference_rows([shape]) == [STANDARD], shape
        assert hub.preference_rows(Dataset.from_list([shape])) == [STANDARD], shape


def test_preference_rows_skip_invalid_warns_with_the_count():
    bad = {"chosen": PROMPT + CHOSEN, "rejected": PROMPT}
    with pytest.warns(UserWarning, match="skipped 2 of 3 rows"):
        rows = hub.preference_rows([bad, STANDARD, bad], skip_invalid=True)
    assert rows == [STANDARD]


def test_preference_rows_invalid_row_names_its_index():
    bad = {"chosen": PROMPT + CHOSEN, "rejected": PROMPT}
    with pytest.raises(ValueError, match="row 1: .*skip_invalid=True"):
        hub.preference_rows([STANDARD, bad])


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        ({"prompt": "x", "chosen": "y"}, ValueError, "needs 'chosen' and 'rejected'"),
        ({"chosen": "y", "rejected": ["z"]}, TypeError, "both be strings or both be lists"),
    ],
)
def test_preference_rows_bad_rows(row, error, match):
    with pytest.raises(error, match=match):
        hub.preference_rows([row])


def test_preference_rows_nothing_usable():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable preference rows"):
        hub.preference_rows([{"chosen": PROMPT + CHOSEN, "rejected": PROMPT}], skip_invalid=True)


def test_review_dialogues_round_trip_through_json_and_parquet(tmp_path):
    pairs = ReviewsWorld().preference_pairs(None, n=12, seed=0)
    raw = hub.review_dialogues(pairs)
    assert set(raw[0]) == {"chosen", "rejected"} and raw[0]["chosen"].startswith(H)
    Dataset.from_list(raw).to_json(tmp_path / "train.jsonl.gz")
    loaded = load_dataset(
        "json", data_files=str(tmp_path / "train.jsonl.gz"), split="train", cache_dir=str(tmp_path)
    )
    rows = hub.preference_rows(loaded)
    for row, pair in zip(rows, pairs, strict=True):
        subject = pair["prompt"].removeprefix("review : the ")
        assert row["prompt"].endswith(f"{H} The {subject}.{A}")
        assert row["chosen"] == f" the {subject}{pair['chosen']}"
        assert row["rejected"] == f" the {subject}{pair['rejected']}"
    Dataset.from_list(rows).to_parquet(tmp_path / "train.parquet")
    again = load_dataset(
        "parquet", data_files=str(tmp_path / "train.parquet"), split="train", cache_dir=str(tmp_path)
    )
    assert hub.preference_rows(again) == rows


@pytest.fixture(scope="module")
def corpus():
    rows = hub.preference_rows(hub.review_dialogues(ReviewsWorld().preference_pairs(None, n=64, seed=1)))
    return rows, [r["prompt"] + r[k] for r in rows for k in ("chosen", "rejected")]


def test_bpe_tokenizer_is_lossless_deterministic_and_gpt2_like(corpus):
    rows, texts = corpus
    tok = hub.train_bpe_tokenizer(texts, vocab_size=400)
    assert len(tok) == 400 and tok.eos_token == tok.bos_token == "<|endoftext|>"
    for text in [*texts[:5], "Unseen wörds — and emoji 🎬!"]:  # byte-level: any text round-trips
        ids = tok(text)["input_ids"]
        assert tok.bos_token_id not in ids  # like GPT-2, no BOS is added
        assert tok.decode(ids) == text
    assert hub.train_bpe_tokenizer(texts, vocab_size=400).get_vocab() == tok.get_vocab()
    # prompts end on a pre-token boundary: joint tokenisation = prompt tokens + completion tokens (what TRL does)
    for row in rows:
        joint = tok(row["prompt"] + row["chosen"])["input_ids"]
        assert joint == tok(row["prompt"])["input_ids"] + tok(row["chosen"])["input_ids"]


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, TypeError, "non-empty list of strings"),
        (["a", 3], {}, TypeError, "non-empty list of strings"),
        (["a"], {"vocab_size": 100}, ValueError, "vocab_size=100 must be an int > 256"),
    ],
)
def test_bpe_tokenizer_bad_input(texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        hub.train_bpe_tokenizer(texts, **kwargs)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_saved_tiny_model_loads_like_a_hub_model(corpus, tmp_path, architecture):
    _, texts = corpus
    tok = hub.train_bpe_tokenizer(texts, vocab_size=320)
    path = hub.save_tiny_causal_lm(tok, tmp_path / architecture, architecture=architecture, n_embd=32)
    model, loaded_tok = load_causal_lm(path, device="cpu")
    assert model.config.model_type == architecture and model.config.vocab_size == len(tok)
    assert loaded_tok.pad_token_id == tok.eos_token_id  # GPT-2's case: load_causal_lm pads with EOS
    again, _ = load_causal_lm(path, device="cpu")
    ids = torch.tensor([loaded_tok(texts[0])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, again(ids).logits, rtol=0, atol=0)
    other = hub.save_tiny_causal_lm(tok, tmp_path / "seed1", architecture=architecture, n_embd=32, seed=1)
    with torch.no_grad():
        assert not torch.allclose(load_causal_lm(other, device="cpu")[0](ids).logits, model(ids).logits)


def test_save_tiny_causal_lm_bad_architecture(corpus, tmp_path):
    tok = hub.train_bpe_tokenizer(corpus[1], vocab_size=300)
    with pytest.raises(ValueError, match="architecture='bert' must be 'gpt2' or 'llama'"):
        hub.save_tiny_causal_lm(tok, tmp_path, architecture="bert")


def test_no_network_blocks_and_records_internet_access():
    original = socket.getaddrinfo
    with hub.no_network() as attempts:
        with pytest.raises(OSError, match="blocked"):
            socket.getaddrinfo("huggingface.co", 443)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            with pytest.raises(OSError, match="blocked"):
                sock.connect(("203.0.113.1", 443))
        finally:
            sock.close()
    assert attempts == ["getaddrinfo('huggingface.co')", "connect(('203.0.113.1', 443))"]
    assert socket.getaddrinfo is original


def test_no_network_lets_local_connections_through():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with hub.no_network() as attempts:
            client = socket.create_connection(server.getsockname(), timeout=5)
            client.close()
        assert attempts == []
    finally:
        server.close()


CHAT = [
    {"role": "system", "content": "You review films."},
    {"role": "user", "content": "Was the plot good?"},
    {"role": "assistant", "content": "Yes, it was gripping."},
]


def test_chat_tokenizer_renders_chatml_and_keeps_specials_whole(tmp_path):
    tok = hub.train_chat_tokenizer([m["content"] for m in CHAT] * 3)
    tok.save_pretrained(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(tmp_path / "chat")  # the template travels with the saved files
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CHAT)  # ChatML by hand
    assert tok.apply_chat_template(CHAT, tokenize=False) == text
    assert tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = list(tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"])
    assert tok.decode(ids) == text and ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(tok.eos_token_id) == 3 and tok.eos_token == "<|im_end|>" and tok.bos_token is None


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, TypeError, "texts must be a non-empty list of strings"),
        (["a b"], {"vocab_size": 258}, ValueError, r"vocab_size=258 must be an int > 259"),
    ],
    ids=["no texts", "vocab too small"],
)
def test_chat_tokenizer_bad_input(texts, kwargs, error, match):
    with pytest.raises(error, match=match):
        hub.train_chat_tokenizer(texts, **kwargs)
