"""Sequence log-probs against a naive per-token loop; the concatenated forward against separate forwards."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from trl_reference import tiny_gpt2_model, tiny_tokenizer

from dpo_teach import logprobs
from dpo_teach.logprobs import concatenated_forward, forward_logps, sequence_logps


def make_batch(batch=4, length=9, vocab=13, seed=0, dtype=torch.float64):
    """Random logits and labels with prompts of different lengths masked and right padding masked."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    for b in range(batch):
        prompt = 1 + b % 3
        pad = b % 2 * 2
        labels[b, :prompt] = -100
        if pad:
            labels[b, length - pad :] = -100
    return logits.to(dtype), labels


def naive(logits, labels, average=False, allowed=None):
    """Loop over every (row, position): log p = logit[y] − log Σ_v exp(logit[v]) with math in float64."""
    out = []
    for b in range(labels.shape[0]):
        total, count = 0.0, 0
        for t in range(1, labels.shape[1]):
            y = int(labels[b, t])
            if y == -100:
                continue
            row = logits[b, t - 1].double().tolist()
            columns = range(len(row)) if allowed is None else allowed
            top = max(row[v] for v in columns)
            total += row[y] - top - math.log(sum(math.exp(row[v] - top) for v in columns))
            count += 1
        out.append(total / count if average else total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_naive_loop(average, seed, dtype, atol):
    logits, labels = make_batch(seed=seed, dtype=dtype)
    got = sequence_logps(logits, labels, average=average)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), naive(logits, labels, average), rtol=0, atol=atol)


@pytest.mark.parametrize("as_list", [False, True])
def test_matches_naive_loop_with_allowed_tokens(as_list):
    logits, labels = make_batch(seed=3)
    allowed = [0, 2, 3, 5, 8, 11]
    labels = torch.where(labels == -100, labels, torch.tensor(allowed)[labels % len(allowed)])
    ids = allowed if as_list else torch.tensor(allowed)
    got = sequence_logps(logits, labels, allowed_token_ids=ids)
    torch.testing.assert_close(got.double(), naive(logits, labels, allowed=allowed), rtol=1e-6, atol=1e-5)
    # restricted to fewer columns, every response is more likely than under the full softmax
    assert bool((got > sequence_logps(logits, labels)).all())


def test_bf16_logits_are_upcast_to_float32():
    logits, labels = make_batch(seed=4, dtype=torch.bfloat16)
    got = sequence_logps(logits, labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive(logits, labels), rtol=1e-6, atol=1e-5)


def test_gradient_matches_log_softmax_gather():
    logits, labels = make_batch(seed=5)
    logits.requires_grad_(True)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (grad,) = torch.autograd.grad((sequence_logps(logits, labels) * weights).sum(), logits)
    mask = labels[:, 1:] != -100
    per_token = (
        torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
    )
    (want,) = torch.autograd.grad(((per_token * mask).sum(-1) * weights).sum(), logits)
    torch.testing.assert_close(grad, want)


def test_gradcheck_float64():
    logits, labels = make_batch(batch=2, length=5, vocab=4, seed=6)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sequence_logps(x, labels, average=True), (logits,))


def test_small_blocks_give_the_same_values_and_gradients(monkeypatch):
    """Force many blocks (over batch and over time) and compare with one block."""
    logits, labels = make_batch(batch=5, length=11, vocab=7, seed=7)
    logits.requires_grad_(True)
    value, grad = sequence_logps(logits, labels), None
    (grad,) = torch.autograd.grad(value.sum(), logits)
    for elements in (7, 20, 100):
        monkeypatch.setattr(logprobs, "_BLOCK_ELEMENTS", elements)
        blocked = sequence_logps(logits, labels)
        (blocked_grad,) = torch.autograd.grad(blocked.sum(), logits)
        torch.testing.assert_close(blocked, value)
        torch.testing.assert_close(blocked_grad, grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("allowed", [None, [0, 2, 3, 5, 7, 8, 11, 12]])
def test_memory_saving_path_equals_the_plain_log_softmax_gather(dtype, allowed):
    """The blockwise custom autograd (the trainers' path) against plain_token_logps: values and gradients."""
    logits, labels = make_batch(batch=5, length=11, vocab=13, seed=4, dtype=dtype)
    if allowed is not None:  # every response label must be in the alphabet
        labels = torch.where(labels == -100, labels, torch.tensor(allowed)[labels % len(allowed)])
    weights = torch.randn(5, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads, values, paths = [], [], []
    for memory_saving in (True, False):
        x = logits.detach().clone().requires_grad_(True)
        out = logprobs.per_token_logps(x, labels, allowed, memory_saving=memory_saving)
        paths.append(type(out.grad_fn).__name__)
        (out.double() * weights).sum().backward()
        values.append(out.detach())
        grads.append(x.grad)
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    assert values[0].dtype == values[1].dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(values[0], values[1], **tol)
    torch.testing.assert_close(
        grads[0].double(),
        grads[1].double(),
        **(tol if dtype != torch.bfloat16 else {"atol": 1e-2, "rtol": 1e-2}),
    )
    assert bool((values[0] != 0).any()) and bool((grads[0] != 0).any())  # the check compares real numbers
    assert (
        paths[0] != paths[1]
    )  # and two different computations (the custom autograd function, then autograd's)


def test_prompt_and_padding_positions_get_no_gradient():
    logits, labels = make_batch(seed=8)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(sequence_logps(logits, labels).sum(), logits)
    predicts_nothing = torch.ones(labels.shape, dtype=torch.bool)
    predicts_nothing[:, :-1] = labels[:, 1:] == -100  # logits[t] predicts labels[t+1]
    assert float(grad[predicts_nothing].abs().max()) == 0.0
    assert float(grad[~predicts_nothing].abs().max()) > 0.0


def test_response_lengths():
    _, labels = make_batch()
    want = [sum(int(v) != -100 for v in row[1:]) for row in labels]
    assert logprobs.response_lengths(labels).tolist() == want


# --- the concatenated forward on a tiny GPT-2 ------------------------------------------------------------------


def preference_batch(vocab, seed=0):
    """Chosen (length 7) and rejected (length 5) of 3 rows, right-padded, prompts of 2-3 tokens."""
    gen = torch.Generator().manual_seed(seed)
    batch = {}
    for side, length, pads in (("chosen", 7, [0, 2, 1]), ("rejected", 5, [1, 0, 0])):
        ids = torch.randint(4, vocab, (3, length), generator=gen)
        mask = torch.ones(3, length, dtype=torch.long)
        labels = ids.clone()
        for b, pad in enumerate(pads):
            labels[b, : 2 + b % 2] = -100
            if pad:
                ids[b, length - pad :], mask[b, length - pad :], labels[b, length - pad :] = 0, 0, -100
        batch |= {f"{side}_input_ids": ids, f"{side}_attention_mask": mask, f"{side}_labels": labels}
    return batch


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2_model(tiny_tokenizer(), seed=0)


def test_concatenated_equals_separate_forwards(model):
    batch = preference_batch(model.config.vocab_size)
    out = concatenated_forward(model, batch)
    for side in ("chosen", "rejected"):
        ids, mask, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        separate = forward_logps(model, ids, mask, labels)
        torch.testing.assert_close(getattr(out, f"{side}_logps"), separate, rtol=1e-5, atol=1e-5)
        lengths = (labels[:, 1:] != -100).sum(-1)
        assert torch.equal(getattr(out, f"{side}_lengths"), lengths)
        logits = model(input_ids=ids, attention_mask=mask).logits.detach()
        vocab_mean = logits[:, :-1].mean(-1)
        want = torch.stack([vocab_mean[b][labels[b, 1:] != -100].mean() for b in range(3)])
        torch.testing.assert_close(getattr(out, f"mean_{side}_logits"), want, rtol=1e-5, atol=1e-6)


def test_concatenated_average_and_allowed_tokens(model):
    batch = preference_batch(model.config.vocab_size, seed=1)
    allowed = list(range(4, model.config.vocab_size))
    summed = concatenated_forward(model, batch, allowed_token_ids=allowed)
    averaged = concatenated_forward(model, batch, average=True, allowed_token_ids=allowed)
    torch.testing.assert_close(averaged.chosen_logps, summed.chosen_logps / summed.chosen_lengths)
    torch.testing.assert_close(averaged.rejected_logps, summed.rejected_logps / summed.rejected_lengths)
    logits = model(input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]).logits
    torch.testing.assert_close(
        summed.chosen_logps.double(),
        naive(logits.detach(), batch["chosen_labels"], allowed=allowed),
        rtol=1e-5,
        atol=1e-5,
    )


def test_concatenated_gradients_equal_naive_path(model):
    batch = preference_batch(model.config.vocab_size, seed=2)
    out = concatenated_forward(model, batch)
    ours = torch.autograd.grad((out.chosen_logps - 2 * out.rejected_logps).sum(), list(model.parameters()))
    total = 0.0
    for side, weight in (("chosen", 1.0), ("rejected", -2.0)):
        ids, mask, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        logits = model(input_ids=ids, attention_mask=mask).logits
        per_token = (
            F.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
        )
        total = total + weight * (per_token * (labels[:, 1:] != -100)).sum()
    naive_grads = torch.autograd.grad(total, list(model.parameters()))
    for a, b in zip(ours, naive_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- bad inputs -------------------------------------------------------------------------------------------------

LOGITS, LABELS = make_batch(batch=2, length=5, vocab=6, seed=9, dtype=torch.float32)


@pytest.mark.parametrize(
    ("logits", "labels", "error", "pattern"),
    [
        (LOGITS.tolist(), LABELS, TypeError, "logits must be a floating torch.Tensor"),
        (
            LOGITS[0],
            LABELS,
            TypeError,
            r"logits must be a floating torch.Tensor of shape \[batch, length, vocab\]",
        ),
        (LOGITS, LABELS.float(), TypeError, "labels must be an integer torch.Tensor"),
        (LOGITS, LABELS[:, :4], ValueError, r"labels shape \[2, 4\] must equal logits.shape\[:2\]"),
        (LOGITS[:, :1], LABELS[:, :1], ValueError, "sequences must have length >= 2"),
        (LOGITS, torch.full_like(LABELS, 6), ValueError, r"labels must be -100 or token ids in \[0, 6\)"),
        (
            LOGITS,
            torch.full_like(LABELS, -100),
            ValueError,
            r"rows \[0, 1\] of labels have no response token",
        ),
        (torch.full_like(LOGITS, math.nan), LABELS, ValueError, "non-finite log-prob"),
    ],
)
def test_bad_logits_or_labels(logits, labels, error, pattern):
    with pytest.raises(error, match=pattern):
        sequence_logps(logits, labels)


@pytest.mark.parametrize(
    ("allowed", "error", "pattern"),
    [
        ("0 1 2", TypeError, "allowed_token_ids must be a 1-D LongTensor or a list of ints"),
        ([], ValueError, "allowed_token_ids must be a non-empty 1-D"),
        (
            torch.tensor([0.0, 1.0]),
            ValueError,
            "allowed_token_ids must be a non-empty 1-D list/tensor of integer",
        ),
        ([0, 9], ValueError, r"allowed_token_ids must lie in \[0, 6\)"),
        ([0, 0, 1], ValueError, "allowed_token_ids contains repeated ids"),
        ([0], ValueError, "a response label is not in allowed_token_ids"),
    ],
)
def test_bad_allowed_token_ids(allowed, error, pattern):
    with pytest.raises(error, match=pattern):
        sequence_logps(LOGITS, LABELS, allowed_token_ids=allowed)


def test_batch_must_be_a_dict(model):
    with pytest.raises(TypeError, match="batch must be a dict"):
        concatenated_forward(model, [1, 2])


def test_batch_missing_key(model):
    batch = preference_batch(model.config.vocab_size)
    del batch["rejected_labels"]
    with pytest.raises(ValueError, match=r"batch is missing \['rejected_labels'\]"):
        concatenated_forward(model, batch)


def test_batch_mismatched_shapes(model):
    batch = preference_batch(model.config.vocab_size)
    batch["chosen_labels"] = batch["chosen_labels"][:, :-1]
    with pytest.raises(ValueError, match="chosen_input_ids/attention_mask/labels must share one 2-D shape"):
        concatenated_forward(model, batch)


def test_batch_sizes_differ(model):
    batch = preference_batch(model.config.vocab_size)
    for key in ("rejected_input_ids", "rejected_attention_mask", "rejected_labels"):
        batch[key] = batch[key][:2]
    with pytest.raises(ValueError, match="same batch size"):
        concatenated_forward(model, batch)
