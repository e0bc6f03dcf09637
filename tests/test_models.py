"""dpo_teach.models: the word tokenizer, the tiny GPT-2, loading, sampling."""

import math

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoTokenizer

from dpo_teach.data import pad_sequences
from dpo_teach.logprobs import sequence_logps
from dpo_teach.models import (
    OfflineModelError,
    build_word_tokenizer,
    load_causal_lm,
    sample_token_ids,
    tiny_gpt2,
)

WORDS = ["p0", ":", "a", "b", "c", "."]


def test_tokenizer_ids_bos_and_unknown_words():
    tok = build_word_tokenizer(WORDS)
    # specials first (pad, bos, eos, unk = 0..3), then the words in order
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == 4 + len(WORDS)
    assert tok("p0 : a b c.")["input_ids"] == [1, 4, 5, 6, 7, 8, 9]  # BOS, then one id per word; "c." splits
    assert tok("a zebra", add_special_tokens=False)["input_ids"] == [6, 3]
    assert tok.decode([6, 7, 9]) == "a b ."


def test_tokenizer_round_trip(tmp_path):
    tok = build_word_tokenizer(WORDS)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = ["p0 : a b", "p0 : c c c ."]
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert (again.pad_token, again.bos_token, again.eos_token, again.unk_token) == (
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
    )


@pytest.mark.parametrize(
    "words, match",
    [
        ([], "non-empty"),
        (["a", "a"], "repeated"),
        (["a b"], "split"),
        (["<eos>"], "reserved"),
        (["a", ""], "non-empty"),
    ],
)
def test_tokenizer_bad_words(words, match):
    with pytest.raises(ValueError, match=match):
        build_word_tokenizer(words)


def test_tiny_gpt2_config_and_seed():
    tok = build_word_tokenizer(WORDS)
    model = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2, seed=3)
    cfg = model.config
    assert (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) == (0.0, 0.0, 0.0)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.vocab_size) == (0, 1, 2, len(tok))
    same = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2, seed=3)
    other = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    assert not torch.equal(model.transformer.wte.weight, other.transformer.wte.weight)
    assert not model.training


def test_tiny_gpt2_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    tiny_gpt2(20, n_layer=1, n_embd=16, n_head=2, seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_embd": 30, "n_head": 4}, ValueError, "divisible"),
        ({"n_layer": 0}, ValueError, "n_layer"),
        ({"dropout": 1.0}, ValueError, "dropout"),
    ],
)
def test_tiny_gpt2_bad_sizes(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_gpt2(20, **kwargs)


def test_tiny_gpt2_bad_vocab_type():
    with pytest.raises(TypeError, match="tokenizer_or_vocab_size"):
        tiny_gpt2("gpt2")


def _logps(model, tok):
    prompts = [tok("p0 :")["input_ids"]] * 3
    responses = [
        tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in (" a", " b c .", " c c")
    ]
    batch = pad_sequences(prompts, responses, 0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, batch["labels"])


def test_model_and_tokenizer_round_trip_give_identical_logps(tmp_path):
    tok = build_word_tokenizer(WORDS)
    model = tiny_gpt2(tok, seed=1)
    with torch.no_grad():  # move away from the initialisation so that a load that re-initialises would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path, device="cpu")
    assert loaded_tok("p0 : a b c")["input_ids"] == tok("p0 : a b c")["input_ids"]
    assert torch.equal(_logps(loaded, loaded_tok), _logps(model, tok))


def test_load_causal_lm_offline_hub_name(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineModelError) as info:
        load_causal_lm("dpo-teach-nobody/not-a-real-model")
    message = str(info.value)
    assert "offline" in message and "HF_HUB_OFFLINE" in message and "save_pretrained" in message
    assert isinstance(info.value, OSError)


def test_load_causal_lm_missing_local_path(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_causal_lm(str(tmp_path / "nothing-here") + "/")


def test_load_causal_lm_bad_type():
    with pytest.raises(TypeError, match="name_or_path"):
        load_causal_lm(None)


def test_sampling_respects_allowed_tokens_and_is_seeded():
    tok = build_word_tokenizer(WORDS)
    model = tiny_gpt2(tok, seed=0)
    allowed = tok.convert_tokens_to_ids(["a", "b", "c"])
    prompts = [tok("p0 :")["input_ids"]] * 50 + [tok("p0 : a")["input_ids"]] * 50
    out = sample_token_ids(
        model, prompts, max_new_tokens=4, eos_token_id=tok.eos_token_id, allowed_token_ids=allowed
    )
    assert all(len(ids) == 4 and set(ids) <= set(allowed) for ids in out)  # EOS is not allowed: never stops
    again = sample_token_ids(
        model, prompts, max_new_tokens=4, eos_token_id=tok.eos_token_id, allowed_token_ids=allowed
    )
    assert again == out


def test_sampling_frequencies_match_the_model():
    tok = build_word_tokenizer(WORDS)
    model = tiny_gpt2(tok, seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # make the next-token distribution far from uniform
    allowed = tok.convert_tokens_to_ids(["a", "b", "c", "<eos>"])
    prompt = tok("p0 :")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1, allowed]
    expected = torch.softmax(logits.double(), -1)
    n = 4000
    out = sample_token_ids(
        model,
        [prompt] * n,
        max_new_tokens=1,
        eos_token_id=tok.eos_token_id,
        allowed_token_ids=allowed,
        seed=5,
    )
    counts = torch.tensor([sum(ids[0] == t for ids in out) for t in allowed], dtype=torch.float64)
    # every frequency within 4.5 binomial standard deviations (a false alarm has probability < 1e-4)
    bound = 4.5 * (expected * (1 - expected) / n).sqrt() + 1e-3
    assert ((counts / n - expected).abs() <= bound).all(), (counts / n, expected)
    assert float(expected.max()) > 0.4  # the test distinguishes the model from a uniform sampler


def test_sampling_stops_at_eos_and_keeps_it():
    tok = build_word_tokenizer(WORDS)
    model = tiny_gpt2(tok, seed=0)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    # all logits equal: with only EOS and "a" allowed, sequences stop after a geometric number of "a"s
    allowed = tok.convert_tokens_to_ids(["a", "<eos>"])
    out = sample_token_ids(
        model, [[1]] * 200, max_new_tokens=30, eos_token_id=2, allowed_token_ids=allowed, seed=0
    )
    finished = [ids for ids in out if ids and ids[-1] == 2]
    assert len(finished) == 200 and all(2 not in ids[:-1] for ids in finished)
    mean_length = sum(len(ids) for ids in out) / 200
    assert math.isclose(mean_length, 2.0, abs_tol=0.4)  # geometric with p = 1/2: mean 2 tokens incl. EOS


@pytest.mark.parametrize(
    "kwargs, match", [({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1.0}, "temperature")]
)
def test_sampling_bad_arguments(kwargs, match):
    model = tiny_gpt2(12, n_layer=1, n_embd=16, n_head=2)
    args = {"max_new_tokens": 2, "eos_token_id": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_token_ids(model, [[1]], **args)
