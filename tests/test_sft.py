"""train_sft: the loss is the mean completion-token NLL (checked against cross-entropy), it learns,
it is deterministic, and bad arguments are rejected."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trainer_fixtures import tiny_model, word_tokenizer

from dpo_teach.data import SFTCollator, load_sft_rows, tokenize_sft
from dpo_teach.trainers import sft_loss, train_sft

ROWS = [{"prompt": "q :", "completion": " good film"}, {"prompt": "q a :", "completion": " bad film was"}] * 8


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_first_step_loss_is_mean_completion_token_cross_entropy(tok):
    model = tiny_model(tok).eval()  # the reference computation without dropout, as the trainer runs
    # independent formula: full prompt+completion forward, cross-entropy on completion tokens (+EOS) only
    seqs, labels = [], []
    for r in ROWS:
        p = _ids(tok, r["prompt"])
        c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(p + c)
        labels.append([-100] * len(p) + c)
    with torch.no_grad():
        total, count = 0.0, 0
        for s, lab in zip(seqs, labels, strict=True):
            logits = model(torch.tensor([s])).logits[0, :-1]
            total += F.cross_entropy(logits, torch.tensor(lab[1:]), ignore_index=-100, reduction="sum").item()
            count += sum(x != -100 for x in lab[1:])
    history = train_sft(model, tok, ROWS, batch_size=len(ROWS), epochs=1, progress=False)
    assert history[0]["loss"] == pytest.approx(total / count, rel=1e-5)
    assert history[0]["num_tokens"] == count


def test_sft_loss_divides_the_summed_nll_by_n_total(tok):
    # what each data-parallel rank computes: its slice's NLL sum over the global batch's token count
    model = tiny_model(tok).eval()
    data = tokenize_sft(load_sft_rows(ROWS[:3]), tok)
    batch = SFTCollator(tok)([data[i] for i in range(3)])
    with torch.no_grad():
        mean, n = sft_loss(model, batch)
        share, n_again = sft_loss(model, batch, n_total=100)
        # independent: one padded forward, cross-entropy of the next token at the labelled positions, summed
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    assert n == n_again == int((targets != -100).sum())
    assert float(mean) == pytest.approx(float(nll) / n, rel=1e-5)
    assert float(share) == pytest.approx(float(nll) / 100, rel=1e-5)


def test_restricted_policy_loss_renormalises_over_allowed_tokens(tok):
    model = tiny_model(tok).eval()  # the reference computation without dropout, as the trainer runs
    allowed = tok.convert_tokens_to_ids(["good", "bad", "film", "was"])
    with torch.no_grad():
        total, count = 0.0, 0
        for r in ROWS:
            p = _ids(tok, r["prompt"])
            c = tok(r["completion"], add_special_tokens=False)["input_ids"]  # EOS is not a choice here
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1][:, allowed]
            target = torch.tensor([allowed.index(t) for t in c])
            total += F.cross_entropy(logits, target, reduction="sum").item()
            count += len(c)
    history = train_sft(model, tok, ROWS, batch_size=len(ROWS), allowed_token_ids=allowed, progress=False)
    assert history[0]["loss"] == pytest.approx(total / count, rel=1e-5)


def test_sft_learns_the_demonstrations(tok):
    model = tiny_model(tok).eval()  # the reference computation without dropout, as the trainer runs
    history = train_sft(model, tok, ROWS, epochs=30, batch_size=8, lr=3e-3, progress=False)
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    assert [h["step"] for h in history] == list(range(1, len(history) + 1))
    assert history[-1]["epoch"] == pytest.approx(30.0)
    with torch.no_grad():
        p = _ids(tok, "q a :")
        nxt = model(torch.tensor([p])).logits[0, -1].argmax().item()
    assert nxt == tok.convert_tokens_to_ids("bad")
    assert not model.training


def test_same_seed_same_history_different_seed_differs(tok):
    runs = [
        train_sft(tiny_model(tok), tok, ROWS, epochs=2, batch_size=4, seed=s, progress=False)
        for s in (3, 3, 4)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_callback_sees_every_step_and_warmup_ramps_lr(tok):
    seen = []
    history = train_sft(
        tiny_model(tok),
        tok,
        ROWS,
        batch_size=4,
        lr=1e-3,
        warmup_steps=3,
        callback=seen.append,
        progress=False,
    )
    assert seen == history
    assert [round(h["lr"], 8) for h in history[:4]] == [2.5e-4, 5e-4, 7.5e-4, 1e-3]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": "8"}, TypeError, "batch_size"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"callback": 3}, TypeError, "callback"),
    ],
)
def test_bad_arguments_are_rejected(tok, kwargs, error, match):
    with pytest.raises(error, match=match):
        train_sft(tiny_model(tok), tok, ROWS, progress=False, **kwargs)


def test_over_long_sequences_are_rejected_with_the_fix(tok):
    long_rows = [{"prompt": "q " * 40 + ":", "completion": " a" * 30}]
    with pytest.raises(ValueError, match="max_length"):
        train_sft(tiny_model(tok), tok, long_rows, progress=False)
    train_sft(tiny_model(tok), tok, long_rows, max_length=64, progress=False)  # truncation is the fix
