"""Prompt + chosen + rejected packed in one row equals the unshared path: log-probs, loss and gradients."""

from __future__ import annotations

import pytest
import torch
from fast_path_fixtures import ALLOWED, grads, preference_batch, tiny_model

from dpo_teach.logprobs import concatenated_forward
from dpo_teach.losses import dpo_loss
from dpo_teach.prefix_sharing import pack_shared_prompt, preference_forward, shared_prompt_forward


def dpo(out, ref) -> torch.Tensor:
    losses, _, _ = dpo_loss(
        out.chosen_logps, out.rejected_logps, ref.chosen_logps, ref.rejected_logps, beta=0.5
    )
    return losses.mean()


@pytest.mark.parametrize(("kind", "attn"), [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"),
                                            ("llama", "eager"), ("qwen2", "sdpa")])  # fmt: skip
@pytest.mark.parametrize("allowed", [None, ALLOWED])
def test_equal_loss_and_gradients_to_unshared_path(kind, attn, allowed):
    model, ref_model = tiny_model(kind, attn, seed=0), tiny_model(kind, attn, seed=1)
    batch = preference_batch(seed=3, n=6, allowed=allowed)
    with torch.no_grad():
        ref = concatenated_forward(ref_model, batch, allowed_token_ids=allowed)
    plain = concatenated_forward(model, batch, allowed_token_ids=allowed)
    plain_loss = dpo(plain, ref)
    plain_loss.backward()
    expected = grads(model)
    shared = shared_prompt_forward(model, batch, allowed_token_ids=allowed)
    shared_loss = dpo(shared, ref)
    shared_loss.backward()
    torch.testing.assert_close(shared_loss, plain_loss, rtol=0, atol=1e-5)
    for field in ("chosen_logps", "rejected_logps", "mean_chosen_logits", "mean_rejected_logits"):
        torch.testing.assert_close(getattr(shared, field), getattr(plain, field), rtol=0, atol=1e-5)
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-5, msg=name)
    assert max(g.abs().max() for g in expected.values()) > 1e-3  # the comparison is not between zeros


def test_packing_layout():
    """Row 0 by hand: prompt [2, a, b], chosen [c, EOS], rejected [d, e, EOS] → [2 a b c EOS d e EOS]."""
    examples = {"chosen_input_ids": torch.tensor([[2, 5, 6, 7, 1]]), "chosen_attention_mask": torch.ones(1, 5),
                "rejected_input_ids": torch.tensor([[2, 5, 6, 8, 9, 1]]), "rejected_attention_mask": torch.ones(1, 6)}  # fmt: skip
    packed = pack_shared_prompt(examples)
    assert packed["shared"].tolist() == [3]
    assert packed["input_ids"].tolist() == [[2, 5, 6, 7, 1, 8, 9, 1]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]
    assert packed["rejected_index"].tolist() == [[0, 1, 2, 5, 6, 7]]
    visible = packed["attention_mask"][0, 0]
    assert visible[5].tolist() == [
        True,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
    ]  # rejected skips chosen
    assert visible[4].tolist() == [True] * 5 + [False] * 3  # chosen is causal over prompt + itself


def test_auto_falls_back_for_an_unsupported_model():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    config = GPTNeoConfig(
        vocab_size=48, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global"], 2]]
    )
    model, batch = GPTNeoForCausalLM(config).eval(), preference_batch(seed=4)
    with torch.no_grad():
        auto = preference_forward(model, batch, mode="auto")
        plain = concatenated_forward(model, batch)
    assert torch.equal(auto.chosen_logps, plain.chosen_logps)
    with pytest.raises(ValueError, match="use mode='plain'"):
        preference_forward(model, batch, mode="shared_prompt")


@pytest.mark.parametrize("mode", ["fast", None])
def test_bad_mode(mode):
    with pytest.raises(ValueError, match="must be one of"):
        preference_forward(tiny_model("gpt2"), preference_batch(), mode=mode)


def test_config_rejects_an_unknown_forward_mode():
    from dpo_teach.trainers.dpo import DPOConfig

    with pytest.raises(ValueError, match="forward_mode='fast' must be one of"):
        DPOConfig(forward_mode="fast")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_trainer_history_equals_the_plain_path(kind):
    """Four DPO steps with forward_mode 'auto' log the losses and rewards of 'plain' (to 1e-5)."""
    from trainer_fixtures import word_tokenizer

    from dpo_teach.trainers.dpo import DPOTrainer

    tokenizer = word_tokenizer()
    rows = [{"prompt": f"the film {'was ' * (i % 3)}:", "chosen": " good great" * (1 + i % 2),
             "rejected": " bad" * (1 + i % 3)} for i in range(16)]  # fmt: skip
    histories = {}
    for mode in ("plain", "auto"):
        model = tiny_model(kind, seed=0)
        trainer = DPOTrainer(model, tokenizer, rows, beta=0.5, lr=1e-2, batch_size=4, forward_mode=mode,
                             device="cpu", progress=False)  # fmt: skip
        histories[mode] = trainer.train()
    for key in ("loss", "rewards/chosen", "rewards/margins", "logps/rejected", "logits/chosen"):
        got = torch.tensor([h[key] for h in histories["auto"]])
        torch.testing.assert_close(got, torch.tensor([h[key] for h in histories["plain"]]), rtol=0, atol=1e-5)
    assert histories["plain"][-1]["loss"] < histories["plain"][0]["loss"] - 0.05  # it trained
