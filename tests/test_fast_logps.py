"""The LM head at response positions only equals the plain full-logits path: log-probs and gradients."""

from __future__ import annotations

import pytest
import torch
from fast_path_fixtures import ALLOWED, grads, preference_batch, tiny_model

from dpo_teach.fast_logps import response_logits_forward, supports_fast_head
from dpo_teach.logprobs import concatenated_forward


def weighted_sum(out) -> torch.Tensor:
    """A loss that weighs every log-prob differently, so that a swapped or dropped row changes the gradient."""
    w = torch.arange(1, out.chosen_logps.numel() + 1, dtype=torch.float32)
    return (w * out.chosen_logps).sum() - (w.flip(0) * out.rejected_logps).sum() / 3


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("allowed", [None, ALLOWED])
@pytest.mark.parametrize("average", [False, True])
def test_equal_logps_and_gradients_to_plain_path(kind, allowed, average):
    model = tiny_model(kind)
    assert supports_fast_head(model)
    batch = preference_batch(seed=1, allowed=allowed)
    plain = concatenated_forward(model, batch, average=average, allowed_token_ids=allowed)
    weighted_sum(plain).backward()
    expected = grads(model)
    fast = response_logits_forward(model, batch, average=average, allowed_token_ids=allowed)
    weighted_sum(fast).backward()
    for field in ("chosen_logps", "rejected_logps", "mean_chosen_logits", "mean_rejected_logits"):
        torch.testing.assert_close(getattr(fast, field), getattr(plain, field), rtol=0, atol=1e-5)
    assert torch.equal(fast.chosen_lengths, plain.chosen_lengths)
    assert torch.equal(fast.rejected_lengths, plain.rejected_lengths)
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-5, msg=name)
    assert max(g.abs().max() for g in expected.values()) > 1e-3  # the comparison is not between zeros


def test_allowed_token_ids_restrict_the_softmax():
    """With the alphabet, each token's softmax runs over fewer columns: every log-prob is larger."""
    model, batch = tiny_model("gpt2"), preference_batch(seed=2, allowed=ALLOWED)
    with torch.no_grad():
        full = response_logits_forward(model, batch)
        restricted = response_logits_forward(model, batch, allowed_token_ids=ALLOWED)
    assert bool((restricted.chosen_logps > full.chosen_logps).all())


def test_unsupported_architecture_is_reported():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(
        vocab_size=48, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global"], 2]]
    )
    assert not supports_fast_head(GPTNeoForCausalLM(config))


@pytest.mark.parametrize(
    ("allowed", "message"),
    [([2, 3], "not in allowed_token_ids"), ([2, 2, 3], "repeated ids"), ("abc", "allowed_token_ids must be")],
)
def test_bad_allowed_token_ids(allowed, message):
    model, batch = tiny_model("gpt2"), preference_batch(seed=0)
    with pytest.raises((ValueError, TypeError), match=message):
        response_logits_forward(model, batch, allowed_token_ids=allowed)
