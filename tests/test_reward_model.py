"""The Bradley–Terry reward model: the loss against its formula, the scalar read at the last real token
(checked against unpadded single-sequence forwards), learning a known reward, determinism, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dpo_teach import hub
from dpo_teach.models import build_word_tokenizer, tiny_gpt2
from dpo_teach.trainers.reward import (
    RewardConfig,
    RewardModel,
    bradley_terry_loss,
    evaluate_reward_model,
    train_reward_model,
)

WORDS = ["q", "r", ":", "a", "b", "c"]
ROWS = [
    {"prompt": "q :", "chosen": " a a", "rejected": " b"},
    {"prompt": "r q :", "chosen": " a", "rejected": " c b c"},
] * 8


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(WORDS)


def _rm(tok, seed=0):
    return RewardModel(tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2, seed=seed), seed=seed)


def test_bradley_terry_loss_matches_the_formula():
    chosen, rejected = torch.tensor([1.0, -0.5, 2.0, 0.0]), torch.tensor([0.0, 0.5, -1.0, 0.0])
    out = bradley_terry_loss(chosen, rejected)
    diffs = [1.0, -1.0, 3.0, 0.0]
    assert out["loss"].item() == pytest.approx(sum(math.log1p(math.exp(-d)) for d in diffs) / 4)
    assert out["accuracy"].item() == pytest.approx(2 / 4)  # a tie is not a correct ranking
    assert out["margin"].item() == pytest.approx(sum(diffs) / 4)


def test_reward_is_read_at_the_last_real_token_of_a_right_padded_batch(tok):
    rm = _rm(tok).eval()
    seqs = [[1, 4, 6, 7, 7, 2], [1, 5, 4, 6, 8, 2, 9, 9], [1, 4, 6, 9, 2]]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    batched = rm(ids, mask)
    with torch.no_grad():  # independent path: the full LM on each sequence alone, its last hidden state
        alone = [
            rm.head(rm.lm(torch.tensor([s]), output_hidden_states=True).hidden_states[-1][0, -1]).item()
            for s in seqs
        ]
    torch.testing.assert_close(batched.detach(), torch.tensor(alone))


def test_score_tokenises_prompt_response_and_eos_like_training(tok):
    rm = _rm(tok).eval()
    by_hand = (
        tok("r q :")["input_ids"] + tok(" a c", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    )
    assert by_hand[0] == tok.bos_token_id
    want = rm(torch.tensor([by_hand]), torch.ones(1, len(by_hand), dtype=torch.long))
    got = rm.score(tok, ["q :", "r q :"], [" b", " a c"])
    torch.testing.assert_close(got[1], want[0].detach())


def test_training_separates_chosen_from_rejected_and_is_deterministic(tok):
    histories, evals = [], []
    for _ in range(2):
        rm = _rm(tok)
        histories.append(train_reward_model(rm, tok, ROWS, epochs=10, batch_size=8, lr=3e-3, progress=False))
        evals.append(evaluate_reward_model(rm, tok, ROWS))
    assert histories[0] == histories[1]
    assert evals[0]["accuracy"] == 1.0 and evals[0]["loss"] < 0.1
    assert {"step", "epoch", "loss", "accuracy", "margin", "lr", "grad_norm"} <= set(histories[0][-1])
    assert histories[0][-1]["epoch"] == pytest.approx(10.0)


def test_a_copy_of_a_frozen_reference_still_trains(tok):
    ref = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2).requires_grad_(False)  # as a trainer leaves π_ref
    rm = RewardModel(copy.deepcopy(ref))
    train_reward_model(rm, tok, ROWS, batch_size=16, progress=False)
    assert not torch.equal(rm.lm.transformer.h[0].mlp.c_fc.weight, ref.transformer.h[0].mlp.c_fc.weight)


@pytest.mark.slow
def test_learns_a_known_reward_from_bradley_terry_pairs():
    from dpo_teach.worlds.sequences import SequenceWorld

    world = SequenceWorld(n_prompts=4, length=2, alphabet_size=6, seed=0)
    rm = RewardModel(tiny_gpt2(world.tokenizer, **world.model_config))
    train_reward_model(
        rm,
        world.tokenizer,
        world.preference_pairs(None, n=2000, seed=1),
        epochs=3,
        lr=3e-4,
        device="cpu",
        progress=False,
    )
    # held-out pairs labelled by the larger true reward: the reward model must rank them mostly right
    held_out = evaluate_reward_model(
        rm, world.tokenizer, world.preference_pairs(None, n=1000, seed=2, deterministic=True)
    )
    assert held_out["accuracy"] > 0.75
    # and its scores over every response track the true reward (each centred per prompt: r is defined up to f(x))
    P, N = world.reward_table.shape
    scores = rm.score(
        world.tokenizer, [p for p in world.prompts for _ in range(N)], world.responses * P
    ).view(P, N)
    a = scores.double() - scores.double().mean(-1, keepdim=True)
    b = world.reward_table.double() - world.reward_table.double().mean(-1, keepdim=True)
    assert float((a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt()) > 0.6


def test_rejects_a_plain_language_model(tok):
    with pytest.raises(TypeError, match="RewardModel"):
        train_reward_model(tiny_gpt2(tok), tok, ROWS, progress=False)


def test_rejects_a_non_model_trunk():
    with pytest.raises(TypeError, match="causal LM"):
        RewardModel(torch.nn.Linear(3, 1))


def test_rejects_rows_without_rejected(tok):
    with pytest.raises(ValueError, match="rejected"):
        train_reward_model(_rm(tok), tok, [{"prompt": "q :", "chosen": " a"}], progress=False)


def test_rejects_config_and_keywords_together(tok):
    with pytest.raises(TypeError, match="not both"):
        train_reward_model(_rm(tok), tok, ROWS, RewardConfig(), lr=1e-3, progress=False)


def test_rejects_a_negative_lr():
    with pytest.raises(ValueError, match="lr"):
        RewardConfig(lr=-1e-3)


def test_rejects_an_unknown_option(tok):
    with pytest.raises(TypeError, match="learning_rate"):
        train_reward_model(_rm(tok), tok, ROWS, learning_rate=1e-3)


def test_score_rejects_unpaired_lists(tok):
    with pytest.raises(ValueError, match="one per prompt"):
        _rm(tok).score(tok, ["q :", "r q :"], [" a"])


def test_forward_rejects_an_empty_row(tok):
    with pytest.raises(ValueError, match="attention_mask"):
        _rm(tok)(torch.tensor([[1, 4], [0, 0]]), torch.tensor([[1, 1], [0, 0]]))


def test_evaluate_conversational_rows_scores_the_chat_template_ids():
    user = [{"role": "user", "content": "Was the plot good?"}]
    rows = [
        {"prompt": user, "chosen": [{"role": "assistant", "content": t}], "rejected": [{"role": "assistant", "content": u}]}
        for t, u in [("Yes, gripping.", "No."), ("It was fine.", "Dull and slow.")]
    ]  # fmt: skip
    chat_tok = hub.train_chat_tokenizer([m["content"] for r in rows for k in r for m in r[k]] * 3)
    rm = RewardModel(tiny_gpt2(chat_tok, n_layer=1, n_embd=32, n_head=2, seed=0), seed=0).eval()

    def alone(messages):  # independent path: the whole rendered conversation, one unpadded sequence
        ids = chat_tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return rm(torch.tensor([list(ids)]), torch.ones(1, len(ids), dtype=torch.long))[0]

    with torch.no_grad():
        chosen = torch.stack([alone(r["prompt"] + r["chosen"]) for r in rows])
        rejected = torch.stack([alone(r["prompt"] + r["rejected"]) for r in rows])
    d = chosen - rejected  # Bradley–Terry by hand: −log σ(d), 1[d > 0], d, each averaged over the pairs
    expected = {
        "loss": float(F.softplus(-d).mean()),
        "accuracy": float((d > 0).float().mean()),
        "margin": float(d.mean()),
    }
    got = evaluate_reward_model(rm, chat_tok, rows, batch_size=1)
    assert got == pytest.approx(expected, abs=1e-5)
    assert evaluate_reward_model(rm, chat_tok, rows) == pytest.approx(got, abs=1e-5)  # batched = alone
